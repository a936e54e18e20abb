"""Worker and broker settings from the environment, with documented defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TASK_NAME = "nasoa.finetune"


def nasoa_home() -> Path:
    """``$NASOA_HOME`` (default ``~/.nasoa``): state of the embedded single-machine setup."""
    return Path(os.environ.get("NASOA_HOME", Path.home() / ".nasoa")).expanduser()


def queue_for(device_class: str) -> str:
    """One queue per device class, so CPU and GPU workers pull only what fits them.

    ``NASOA_QUEUE_PREFIX`` (default ``nasoa``) lets several deployments share one broker.
    """
    return f"{os.environ.get('NASOA_QUEUE_PREFIX', 'nasoa')}.{device_class or 'cpu'}"


@dataclass(frozen=True)
class WorkerSettings:
    broker_url: str
    adaptor_address: str
    zoo_address: str
    cache_dir: Path
    device: str
    token: str
    rpc_timeout: float

    @classmethod
    def from_env(cls) -> WorkerSettings:
        home = nasoa_home()
        return cls(
            broker_url=os.environ.get("NASOA_BROKER_URL", "") or embedded_broker_url(),
            adaptor_address=os.environ.get("NASOA_ADAPTOR_ADDRESS", "127.0.0.1:50051"),
            zoo_address=os.environ.get("NASOA_ZOO_ADDRESS", "127.0.0.1:50052"),
            cache_dir=Path(os.environ.get("NASOA_CACHE_DIR", home / "cache")),
            device=os.environ.get("NASOA_DEVICE", "auto"),
            token=os.environ.get("NASOA_TOKEN", ""),
            rpc_timeout=float(os.environ.get("NASOA_RPC_TIMEOUT", "30")),
        )


def embedded_broker_url() -> str:
    """The embedded broker: kombu's filesystem transport under ``$NASOA_HOME/broker``."""
    return "filesystem://"


def broker_transport_options(broker_url: str) -> dict[str, object]:
    if broker_url.startswith("filesystem://"):
        folder = nasoa_home() / "broker"
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
