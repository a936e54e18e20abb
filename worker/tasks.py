"""Thin Celery tasks: they only unpack the message and call plain code."""

from __future__ import annotations

import logging

from worker._config import TASK_NAME
from worker.celery import app, settings

log = logging.getLogger("nasoa.worker")


@app.task(bind=True, name=TASK_NAME)
def finetune(self, job: str) -> str:  # type: ignore[no-untyped-def]
    """Fine-tune one planned job (``job`` is the Job message as JSON) and report it."""
    from worker._runner import JobRunner

    return JobRunner(settings).run_json(job, worker=self.request.hostname or "")
