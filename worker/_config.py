"""Worker and broker settings from the environment, with documented defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kombu import Queue

TASK_NAME = "nasoa.finetune"


def device_classes() -> tuple[str, ...]:
    """``NASOA_DEVICE_CLASSES`` (default ``cpu,cuda``): the device classes with a job queue."""
    raw = os.environ.get("NASOA_DEVICE_CLASSES", "") or "cpu,cuda"
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def nasoa_home() -> Path:
    """``$NASOA_HOME`` (default ``~/.nasoa``): state of the embedded single-machine setup."""
    return Path(os.environ.get("NASOA_HOME", Path.home() / ".nasoa")).expanduser()


def queue_for(device_class: str) -> str:
    """One queue per device class, so CPU and GPU workers pull only what fits them.

    ``NASOA_QUEUE_PREFIX`` (default ``nasoa``) lets several deployments share one broker.
    """
    return f"{os.environ.get('NASOA_QUEUE_PREFIX', 'nasoa')}.{device_class or 'cpu'}"


def dead_letter_queue() -> str:
    """Where RabbitMQ moves a job delivered ``NASOA_MAX_DELIVERIES`` times without an ack.

    The adaptor's reconciler drains it and marks those jobs FAILED with the reason.
    """
    return f"{os.environ.get('NASOA_QUEUE_PREFIX', 'nasoa')}.dead"


def max_deliveries() -> int:
    """``NASOA_MAX_DELIVERIES`` (default 5): deliveries of one job before it is dead-lettered."""
    value = int(os.environ.get("NASOA_MAX_DELIVERIES", "5"))
    if value < 1:
        raise ValueError(f"NASOA_MAX_DELIVERIES must be >= 1, got {value}")
    return value


def adaptor_retry_seconds() -> float:
    """``NASOA_ADAPTOR_RETRY_SECONDS`` (default 600): how long a worker waits for the adaptor.

    Past it, a job that has not run is rejected back to the queue, and a result that could not
    be delivered makes the job run again elsewhere; nothing is acknowledged unreported.
    """
    return float(os.environ.get("NASOA_ADAPTOR_RETRY_SECONDS", "600"))


def consumer_timeout_ms() -> int:
    """The broker's consumer timeout a job needs: the largest budget, the retry window, 15 min.

    Declared per queue (``x-consumer-timeout``, honoured by RabbitMQ 3.12 and newer); older
    brokers need ``consumer_timeout`` in rabbitmq.conf at least this high (docs/RELIABILITY.md).
    """
    max_budget = float(os.environ.get("NASOA_MAX_BUDGET_SECONDS", "86400"))
    return int(1000 * (max_budget + adaptor_retry_seconds() + 900))


def task_queues(broker_url: str) -> list[Queue]:
    """The job queues of every device class, and the dead-letter queue.

    On RabbitMQ they are quorum queues: a bounded redelivery count (``x-delivery-limit``), after
    which the message goes to :func:`dead_letter_queue`, and a consumer timeout above the
    largest budget. Other transports keep plain durable queues.
    """
    if not broker_url.startswith(("amqp://", "pyamqp://", "amqps://")):
        return [Queue(queue_for(d), durable=True) for d in device_classes()]
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": max_deliveries(),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(),
        "x-consumer-timeout": consumer_timeout_ms(),
    }
    queues = [Queue(queue_for(d), durable=True, queue_arguments=arguments) for d in device_classes()]
    return [*queues, Queue(dead_letter_queue(), durable=True)]


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
