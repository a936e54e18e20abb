"""Hands planned jobs to the workers through Celery (RabbitMQ or the embedded broker)."""

from __future__ import annotations

from adaptor_service import _convert as convert
from adaptor_service._types import Job


class CeleryDispatcher:
    """Publishes one ``nasoa.finetune`` task per job, on the queue of its device class.

    The Celery app is imported on first use, so embedding the adaptor without workers never
    touches a broker.
    """

    def __init__(self, app: object | None = None) -> None:
        self.app = app

    def dispatch(self, job: Job) -> None:
        from worker._config import TASK_NAME, queue_for

        if self.app is None:
            from worker.celery import app

            self.app = app
        self.app.send_task(  # type: ignore[attr-defined]
            TASK_NAME,
            kwargs={"job": convert.to_json(convert.job_to_pb(job))},
            queue=queue_for(job.task.device_class),
            # The job id doubles as the Celery task id: one identity end to end.
            task_id=job.job_id,
        )
