"""The Celery broker both the adaptor (publisher) and the workers (consumers) connect to."""

from __future__ import annotations

from pathlib import Path

__all__ = ["EMBEDDED_BROKER_URL", "broker_transport_options", "broker_url_or_embedded"]

#: The embedded broker: kombu's filesystem transport under ``$NASOA_HOME/broker``.
EMBEDDED_BROKER_URL = "filesystem://"


def broker_url_or_embedded(broker_url: str) -> str:
    return broker_url or EMBEDDED_BROKER_URL


def broker_transport_options(broker_url: str, home: Path) -> dict[str, object]:
    """Kombu transport options for ``broker_url``; the embedded broker's folders are made here."""
    if broker_url.startswith("filesystem://"):
        folder = home / "broker"
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
        }
    if broker_url.startswith(("amqp://", "pyamqp://", "amqps://")):
        # Publisher confirms: Submit returns only once RabbitMQ has the message.
        return {"confirm_publish": True}
    return {}
