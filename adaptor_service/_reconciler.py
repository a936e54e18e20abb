"""Brings every open job back to a worker or to a final state, whatever crashed.

A job is QUEUED until a worker reports it started. Its message can be lost on the way: the
broker refused it (Submit left the job marked "not queued yet"), the adaptor died between
storing the job and publishing it, or the broker gave up on it (dead-lettered after too
many deliveries). The reconciler, a thread of the adaptor, finds such jobs every
``every_seconds``:

- a job marked "not queued yet" is published again;
- a QUEUED job older than ``lease_seconds`` (since it was last published) while no message
  waits in its queue is published again: its message is gone;
- a dead-lettered job is marked FAILED with the reason.

Publishing again is safe: the job id is the task id, and a worker skips a finished job.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from adaptor_service._adaptor import Adaptor
from adaptor_service._jobs import NOT_QUEUED, DispatchError
from nasoa_contracts import JobState

__all__ = ["Reconciler", "ReconcileReport"]

log = logging.getLogger("nasoa.adaptor.reconciler")


class _Inspectable(Protocol):
    def waiting(self, device_class: str) -> int | None: ...

    def dead_letters(self, handle: object, limit: int = 100) -> int: ...


@dataclass(frozen=True)
class ReconcileReport:
    requeued: list[str]
    failed: list[str]


class Reconciler:
    """Re-queues jobs whose message is gone and fails the jobs the broker dead-lettered.

    Parameters
    ----------
    adaptor
        The adaptor whose jobs are watched; its dispatcher publishes and inspects the queues.
    lease_seconds
        How long a published QUEUED job may wait with its queue empty before it is published
        again (``NASOA_REQUEUE_AFTER_SECONDS``).
    every_seconds
        Seconds between two rounds (``NASOA_RECONCILE_SECONDS``).
    """

    def __init__(self, adaptor: Adaptor, lease_seconds: float = 300.0, every_seconds: float = 30.0) -> None:
        if lease_seconds <= 0 or every_seconds <= 0:
            raise ValueError("the reconciler's lease and period must be positive")
        self.adaptor = adaptor
        self.lease_seconds = lease_seconds
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> ReconcileReport:
        """One round; the jobs it queued again and the jobs it failed."""
        dispatcher = self.adaptor.dispatcher
        if dispatcher is None:
            return ReconcileReport([], [])
        now = time.time() if now is None else now
        failed: list[str] = []
        if hasattr(dispatcher, "dead_letters"):
            def fail(letter: object) -> None:
                job = self.adaptor.fail_open_job(letter.job_id, f"dead-lettered by the broker: {letter.reason}")  # type: ignore[attr-defined]
                if job is not None:
                    failed.append(job.job_id)

            dispatcher.dead_letters(fail)
        requeued: list[str] = []
        waiting: dict[str, int | None] = {}
        for job in self.adaptor.store.list_jobs(limit=10_000, state=JobState.QUEUED):
            lost = job.message.startswith(NOT_QUEUED)
            if not lost and now - job.updated_at > self.lease_seconds:
                device = job.task.device_class
                if device not in waiting:
                    waiting[device] = dispatcher.waiting(device) if hasattr(dispatcher, "waiting") else None
                lost = waiting[device] == 0  # None: the broker cannot tell, so nothing is assumed
            if not lost:
                continue
            try:
                if self.adaptor.requeue_job(job.job_id) is not None:
                    requeued.append(job.job_id)
            except DispatchError as exc:
                log.warning("job %s still not queued: %s", job.job_id, exc)
                break  # the broker is down: the next round tries again
        # A staged job whose stage settled while the adaptor was down goes on to its next stage.
        schedules = self.adaptor.jobs.schedules
        for job in self.adaptor.store.list_jobs(limit=10_000, state=JobState.RUNNING):
            if job.child_job_ids and schedules is not None:
                try:
                    schedules.resume(job)
                except DispatchError as exc:
                    log.warning("staged job %s not advanced: %s", job.job_id, exc)
        if requeued or failed:
            log.info("reconciler: queued %d job(s) again, failed %d dead-lettered", len(requeued), len(failed))
        return ReconcileReport(requeued, failed)

    def start(self) -> Reconciler:
        self._thread = threading.Thread(target=self._loop, name="adaptor-reconciler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                self.run_once()
            except Exception:  # a broker or store hiccup must not end the thread
                log.exception("reconciler round failed: trying again in %.0fs", self.every_seconds)
