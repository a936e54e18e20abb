"""Thin Celery tasks: they only unpack the message and call plain code."""

from __future__ import annotations

import importlib
import logging

from celery.exceptions import Reject
from celery.signals import worker_init

from worker._config import TASK_NAME
from worker.celery import app, settings

log = logging.getLogger("nasoa.worker")


@worker_init.connect
def _preload(**_kwargs: object) -> None:
    """Import the heavy modules once in the parent, so forked children start warm.

    Only imports: CUDA and gRPC channels are created in the children, after the fork.
    """
    for module in ("torch", "torchvision", "nasoa_data", "zoo_store._registry", "worker._finetune", "worker._runner"):
        importlib.import_module(module)


@app.task(bind=True, name=TASK_NAME)
def finetune(self, job: str) -> str:  # type: ignore[no-untyped-def]
    """Fine-tune one planned job (``job`` is the Job message as JSON) and report it.

    A job whose adaptor stayed unreachable goes back to the queue (rejected, not acknowledged).
    """
    from worker._runner import AdaptorUnreachable, JobRunner

    try:
        return JobRunner(settings).run_json(job, worker=self.request.hostname or "")
    except AdaptorUnreachable as exc:
        log.warning("job back to the queue: %s", exc)
        raise Reject(str(exc), requeue=True) from exc
