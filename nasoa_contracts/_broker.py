"""The Celery broker both the adaptor (publisher) and the workers (consumers) connect to.

Both sides must declare the queues alike, or RabbitMQ refuses the second declaration:
:class:`QueueTopology` is that shared declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EMBEDDED_BROKER_URL", "QueueTopology", "broker_transport_options", "broker_url_or_embedded", "is_amqp"]

#: The embedded broker: kombu's filesystem transport under ``$NASOA_HOME/broker``.
EMBEDDED_BROKER_URL = "filesystem://"


def broker_url_or_embedded(broker_url: str) -> str:
    return broker_url or EMBEDDED_BROKER_URL


def is_amqp(broker_url: str) -> bool:
    return broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))


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
    if is_amqp(broker_url):
        # Publisher confirms: Submit returns only once RabbitMQ has the message.
        return {"confirm_publish": True}
    return {}


@dataclass(frozen=True)
class QueueTopology:
    """The job queues: one per device class, and where RabbitMQ moves the jobs it gave up on.

    On RabbitMQ the job queues are quorum queues with a bounded redelivery count
    (``max_deliveries``, then the message goes to :attr:`dead_letter_queue`) and a consumer
    timeout above the largest budget plus the worker's wait for the adaptor (honoured by
    RabbitMQ 3.12 and newer; older brokers need ``consumer_timeout`` in rabbitmq.conf).
    """

    prefix: str = "nasoa"
    device_classes: tuple[str, ...] = ("cpu", "cuda")
    max_deliveries: int = 5
    consumer_timeout_ms: int = 0

    def queue_for(self, device_class: str) -> str:
        return f"{self.prefix}.{device_class or 'cpu'}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead"

    def queues(self, broker_url: str) -> list[Any]:
        """kombu Queues to declare, the same on both sides."""
        from kombu import Queue

        if not is_amqp(broker_url):
            return [Queue(self.queue_for(d), durable=True) for d in self.device_classes]
        arguments = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.max_deliveries,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue,
            "x-consumer-timeout": self.consumer_timeout_ms,
        }
        jobs = [Queue(self.queue_for(d), durable=True, queue_arguments=arguments) for d in self.device_classes]
        return [*jobs, Queue(self.dead_letter_queue, durable=True)]
