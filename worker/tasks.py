"""Thin Celery tasks: they only unpack the message and call plain code."""

from __future__ import annotations

import importlib
import logging

from celery.exceptions import Reject
from celery.signals import worker_init

from nasoa_contracts import FINETUNE_TASK
from worker.celery import app, settings

log = logging.getLogger("nasoa.worker")


@worker_init.connect
def _preload(**_kwargs: object) -> None:
    """Import the heavy modules once in the parent, so forked children start warm.

    Only imports: CUDA and gRPC channels are created in the children, after the fork.
    """
    for module in ("torch", "torchvision", "nasoa_data", "worker._finetune", "worker._runner"):
        importlib.import_module(module)
    from zoo_store import create_model_from_entry  # noqa: F401  (loads the zoo store, families, entries)


class JobFailed(Exception):
    """The job ran and failed; its result is already recorded by the adaptor.

    Raised so that Celery (and Flower) show the task as FAILURE. The message is
    acknowledged all the same (``task_acks_on_failure_or_timeout``), so it is not run again.
    """


@app.task(bind=True, name=FINETUNE_TASK, throws=(JobFailed,))
def finetune(self, job: str) -> str:  # type: ignore[no-untyped-def]
    """Fine-tune one planned job (``job`` is the Job message as JSON) and report it.

    A job whose adaptor stayed unreachable goes back to the queue (rejected, not acknowledged);
    a job that ran and failed is a FAILURE in Celery (acknowledged: it is not run again).
    """
    from worker._runner import AdaptorUnreachable, JobRunner

    try:
        outcome = JobRunner(settings).run_json(job, worker=self.request.hostname or "")
    except AdaptorUnreachable as exc:
        log.warning("job back to the queue: %s", exc)
        raise Reject(str(exc), requeue=True) from exc
    if outcome.status == "failed":
        raise JobFailed(outcome.describe())
    return outcome.describe()
