"""Hands planned jobs to the workers through Celery (RabbitMQ or the embedded broker).

The adaptor only publishes: it names the task (``nasoa.finetune``) and its queue, and never
imports the worker's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasoa_contracts import FINETUNE_TASK, Job, broker_transport_options, broker_url_or_embedded, convert, queue_for

__all__ = ["CeleryDispatcher"]


class CeleryDispatcher:
    """Publishes one ``nasoa.finetune`` task per job, on the queue of its device class.

    The Celery app (a publisher only) is made on first use, so embedding the adaptor without
    workers never touches a broker.
    """

    def __init__(self, broker_url: str = "", home: Path | None = None, queue_prefix: str = "nasoa",
                 app: Any = None) -> None:
        self.broker_url = broker_url_or_embedded(broker_url)
        self.home = home or Path.home() / ".nasoa"
        self.queue_prefix = queue_prefix
        self.app = app

    def _app(self) -> Any:
        if self.app is None:
            from celery import Celery

            self.app = Celery("nasoa-adaptor", broker=self.broker_url, set_as_current=False)
            self.app.conf.update(
                broker_transport_options=broker_transport_options(self.broker_url, self.home),
                broker_connection_retry_on_startup=True,
                task_serializer="json",
            )
        return self.app

    def dispatch(self, job: Job) -> None:
        self._app().send_task(
            FINETUNE_TASK,
            kwargs={"job": convert.to_json(convert.job_to_pb(job))},
            queue=queue_for(job.task.device_class, self.queue_prefix),
            # The job id doubles as the Celery task id: one identity end to end.
            task_id=job.job_id,
        )
