"""The Celery app of the NASOA workers, configured from the environment.

``NASOA_BROKER_URL`` picks the broker: ``amqp://guest:guest@127.0.0.1:5672//`` for
RabbitMQ (the cluster setup); unset means the embedded broker (kombu's filesystem
transport under ``$NASOA_HOME/broker``), so one machine needs nothing else installed.
"""

from __future__ import annotations

from celery import Celery

from worker._config import WorkerSettings, broker_transport_options, queue_for, task_queues


def make_app(broker_url: str) -> Celery:
    """The NASOA Celery app for ``broker_url`` (the module's ``app`` uses the environment's)."""
    app = Celery("nasoa", broker=broker_url, include=["worker.tasks"])
    app.conf.update(
        broker_transport_options=broker_transport_options(broker_url),
        broker_connection_retry_on_startup=True,
        # Results travel back through the adaptor's Observe stream, not a Celery backend.
        task_ignore_result=True,
        # Fine-tuning is long: take one job at a time, acknowledge only when it is done.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue_for("cpu"),
        # Quorum queues on RabbitMQ: bounded redeliveries, a dead-letter queue, a consumer
        # timeout above the largest budget (worker._config.task_queues).
        task_queues=task_queues(broker_url),
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


settings = WorkerSettings.from_env()
app = make_app(settings.broker_url)
