"""The Celery app of the NASOA workers, configured from the worker settings.

``NASOA_BROKER_URL`` picks the broker: ``amqp://guest:guest@127.0.0.1:5672//`` for
RabbitMQ (the cluster setup); unset means the embedded broker (kombu's filesystem
transport under ``$NASOA_HOME/broker``), so one machine needs nothing else installed.
"""

from __future__ import annotations

from celery import Celery

from nasoa_contracts import WorkerSettings, broker_transport_options, broker_url_or_embedded, load_settings


def make_app(settings: WorkerSettings) -> Celery:
    """The NASOA Celery app for ``settings`` (the module's ``app`` uses the environment's)."""
    broker = broker_url_or_embedded(settings.broker_url)
    topology = settings.topology()
    app = Celery("nasoa", broker=broker, include=["worker.tasks"])
    app.conf.update(
        broker_transport_options=broker_transport_options(broker, settings.home),
        broker_connection_retry_on_startup=True,
        # Results travel back through the adaptor's Observe stream, not a Celery backend.
        task_ignore_result=True,
        # Fine-tuning is long: take one job at a time, acknowledge only when it is done.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        # A job that ran and failed is recorded: acknowledge it (a FAILURE in Celery, not rerun).
        task_acks_on_failure_or_timeout=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=topology.queue_for("cpu"),
        # Quorum queues on RabbitMQ: bounded redeliveries, a dead-letter queue, a consumer
        # timeout above the largest budget (declared alike by the adaptor).
        task_queues=topology.queues(broker),
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        # Task events on: Flower and `celery events` see every job.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


settings = load_settings(WorkerSettings)
app = make_app(settings)
