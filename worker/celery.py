"""The Celery app of the NASOA workers, configured from the worker settings.

``NASOA_BROKER_URL`` picks the broker: ``amqp://guest:guest@127.0.0.1:5672//`` for
RabbitMQ (the cluster setup); unset means the embedded broker (kombu's filesystem
transport under ``$NASOA_HOME/broker``), so one machine needs nothing else installed.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from nasoa_contracts import broker_transport_options, broker_url_or_embedded, queue_for
from worker._config import worker_settings

settings = worker_settings()
_broker = broker_url_or_embedded(settings.broker_url)

app = Celery("nasoa", broker=_broker, include=["worker.tasks"])
app.conf.update(
    broker_transport_options=broker_transport_options(_broker, settings.home),
    broker_connection_retry_on_startup=True,
    # Results travel back through the adaptor's Observe stream, not a Celery backend.
    task_ignore_result=True,
    # Fine-tuning is long: take one job at a time, acknowledge only when it is done.
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=queue_for("cpu", settings.queue_prefix),
    task_queues=[Queue(queue_for(device, settings.queue_prefix), durable=True) for device in ("cpu", "cuda")],
    worker_hijack_root_logger=False,
    # Task events for Flower and `celery events`; a job that failed is a FAILURE there too.
    worker_send_task_events=True,
    task_send_sent_event=True,
    # A failed job has its result recorded already: acknowledge it, never run it again.
    task_acks_on_failure_or_timeout=True,
)
