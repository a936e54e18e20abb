"""The job lifecycle: QUEUED -> RUNNING -> DONE, FAILED or CANCELLED, with its events.

A job is stored before it is dispatched, and every change of state appends an event that
``watch_job`` streams. Delivery to workers is at least once, so each step accepts repeats:
a second ``started`` says the job was redelivered, progress of a finished job is ignored.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from adaptor_service._stores import JobStore
from adaptor_service._validation import not_learned_reason
from nasoa_contracts import (
    CurvePoint,
    FailedPrecondition,
    InvalidArgument,
    Job,
    JobEvent,
    JobState,
    NotFound,
    Observation,
    Plan,
    ServiceUnavailable,
    TaskSpec,
)

if TYPE_CHECKING:  # pragma: no cover
    from adaptor_service._staging import Schedules

__all__ = ["NOT_QUEUED", "DispatchError", "Dispatcher", "JobLifecycle", "check_job_id"]

# How long a watch of a finished job waits for its finishing event (written just after the state).
_FINAL_EVENT_WAIT_SECONDS = 2.0

# The message of a QUEUED job whose task is not on the broker yet: Submit with its id, or the
# reconciler, queues it again.
NOT_QUEUED = "not queued yet"


class DispatchError(ServiceUnavailable):
    """The job could not be handed to the workers (broker unreachable...)."""


class Dispatcher(Protocol):
    """Hands a planned job to the workers."""

    def dispatch(self, job: Job) -> None: ...


class JobLifecycle:
    """Jobs and their events in a :class:`JobStore`; dispatch through a :class:`Dispatcher`.

    A job with a staged plan is a parent: ``schedules`` runs it as child jobs, and hears of
    its children's progress and ends here.
    """

    def __init__(self, store: JobStore, dispatcher: Dispatcher | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.schedules: Schedules | None = None
        self._lock = threading.RLock()  # read-modify-write of one job at a time
        self._changed = threading.Condition()  # wakes watchers when an event lands

    @property
    def lock(self) -> threading.RLock:
        """Held for every read-modify-write of a stored job."""
        return self._lock

    def submit(self, task: TaskSpec, job_id: str, plan_for: Callable[[TaskSpec], Plan]) -> Job:
        """Plan ``task``, store it as a job and dispatch it. Idempotent by ``job_id``.

        A job that could not be queued stays QUEUED with a message saying why, and Submit
        raises DispatchError; Submit again with its id (or the reconciler) queues it then.
        """
        if job_id:
            check_job_id(job_id)
            try:
                job = self.store.get_job(job_id)
            except NotFound:
                pass
            else:
                if job.state == JobState.QUEUED and job.message.startswith(NOT_QUEUED):
                    return self.dispatch(job)
                return job
        plan = plan_for(task)
        now = time.time()
        job = Job(job_id=job_id or uuid.uuid4().hex, task=task, plan=plan, created_at=now, updated_at=now)
        job, created = self.store.create_job(job)
        if not created:
            return job
        what = plan.candidate.describe()
        if plan.staged:
            runs = sum(len(s.runs) for s in plan.stages)
            what = f"{len(plan.stages)} stages, {runs} runs, predicted winner {what}"
        self.event(job, "state", "planned: " + what)
        return self.dispatch(job)

    def dispatch(self, job: Job) -> Job:
        """Hand ``job`` to the workers; on failure it stays QUEUED, marked :data:`NOT_QUEUED`.

        A staged parent is not sent: its current stage's children are (created if need be).
        """
        if self.dispatcher is None:
            return job
        if job.plan.staged and not job.parent_job_id and self.schedules is not None:
            return self.schedules.resume(job)
        try:
            self.dispatcher.dispatch(job)
        except Exception as exc:  # the broker's errors vary by transport
            reason = f"{type(exc).__name__}: {exc}"[:500]
            message = f"{NOT_QUEUED} (the broker refused it: {reason}); it is queued again when the broker is back"
            if job.message != message:
                self.set_state(job.job_id, JobState.QUEUED, message)
            raise DispatchError(f"could not queue job {job.job_id}: {reason}; submit again with the same job id") from exc
        if job.message.startswith(NOT_QUEUED):
            return self.set_state_if(job.job_id, JobState.QUEUED, JobState.QUEUED, "queued") or job
        return job

    def requeue_job(self, job_id: str) -> Job | None:
        """Publish a QUEUED job again (its message was lost); None if it is no longer QUEUED."""
        job = self.store.get_job(job_id)
        if job.state != JobState.QUEUED:
            return None
        was_marked = job.message.startswith(NOT_QUEUED)
        job = self.dispatch(job)  # DispatchError: it stays marked, for the next try
        if was_marked:
            return job
        return self.set_state_if(job_id, JobState.QUEUED, JobState.QUEUED, "queued again: its message was lost")

    def fail_open_job(self, job_id: str, reason: str, state: JobState = JobState.FAILED) -> Job | None:
        """Mark a job that is not finished FAILED (or ``state``) with ``reason``; None if unknown or finished."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            return None
        if job.state.finished:
            return None
        return self.set_state_if(job_id, job.state, state, reason)

    def set_state_if(self, job_id: str, expected: JobState, state: JobState, message: str) -> Job | None:
        """:meth:`set_state` if the job is still in state ``expected`` (else None): no lost update."""
        with self._lock:
            if self.store.get_job(job_id).state != expected:
                return None
            job = self._store_state(job_id, state, message)
        if state.finished:  # outside the lock: a parent's next step takes the learner's lock first
            self._settled(job)
        return job

    def get_job(self, job_id: str) -> Job:
        check_job_id(job_id)
        return self.store.get_job(job_id)

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        if not 0 <= limit <= 10_000:
            raise InvalidArgument(f"limit must be between 0 and 10000, got {limit}")
        return self.store.list_jobs(limit or 100, state)

    def cancel_job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job.state.finished:
            raise FailedPrecondition(f"job {job_id} is already {job.state.value}")
        return self.set_state(job_id, JobState.CANCELLED, "cancelled by the user")

    def set_state(self, job_id: str, state: JobState, message: str = "") -> Job:
        job = self._store_state(job_id, state, message)
        if state.finished:
            self._settled(job)
        return job

    def _store_state(self, job_id: str, state: JobState, message: str) -> Job:
        with self._lock:
            job = self.store.get_job(job_id)
            job = replace(job, state=state, message=message or job.message, updated_at=time.time())
            self.store.update_job(job)
            self.event(job, "state", message)
        return job

    def _settled(self, job: Job) -> None:
        """A job reached a final state: its parent may go on, its children stop with it."""
        if self.schedules is None:
            return
        if job.parent_job_id:
            self.schedules.child_settled(job)
        elif job.child_job_ids and job.state == JobState.CANCELLED:
            self.schedules.cancel_children(job)

    def event(self, job: Job, kind: str, message: str = "", point: CurvePoint | None = None) -> None:
        self.store.append_event(
            JobEvent(
                job_id=job.job_id,
                seq=0,
                kind=kind,
                state=job.state,
                message=message,
                epoch=point.epoch if point else 0,
                accuracy=point.accuracy if point else 0.0,
                seconds=point.seconds if point else 0.0,
                timestamp=time.time(),
            )
        )
        with self._changed:
            self._changed.notify_all()

    def watch_job(
        self, job_id: str, after_seq: int = 0, poll_seconds: float = 0.25, alive: Callable[[], bool] | None = None
    ) -> Iterator[JobEvent]:
        """Yield the job's events after ``after_seq`` until it finishes (or ``alive()`` is False)."""
        self.get_job(job_id)
        seq = after_seq
        final_seen = False
        finished_at: float | None = None
        while True:
            events = self.store.events_after(job_id, seq)
            for event in events:
                seq = event.seq
                final_seen = final_seen or event.state.finished
                yield event
            if not events and self.store.get_job(job_id).state.finished:
                # The finishing event is written just after the state: wait for it, briefly (a
                # watch that starts after it, or a crash between the two, ends all the same).
                finished_at = finished_at or time.monotonic()
                if final_seen or time.monotonic() - finished_at > _FINAL_EVENT_WAIT_SECONDS:
                    return
            if alive is not None and not alive():
                return
            with self._changed:
                self._changed.wait(poll_seconds)

    def job_started(self, job_id: str, worker: str = "") -> Job:
        job = self.get_job(job_id)
        if job.state == JobState.RUNNING:
            # At-least-once delivery: the broker handed the job to another worker.
            message = f"running again on {worker or 'a worker'} (redelivered)"
        elif job.state == JobState.QUEUED:
            message = f"running on {worker or 'a worker'}"
        else:
            return job
        # Only from the state just read: a job cancelled in between stays cancelled.
        return self.set_state_if(job_id, job.state, JobState.RUNNING, message) or self.store.get_job(job_id)

    def job_progress(self, job_id: str, point: CurvePoint) -> None:
        check_job_id(job_id)
        with self._lock:  # checked and written under the lock that finishes jobs: no progress after the end
            job = self.store.get_job(job_id)
            if job.state.finished:
                return
            self.event(job, "progress", f"epoch {point.epoch}", point)
        if job.parent_job_id and self.schedules is not None:
            self.schedules.child_progress(job, point)

    def finish(self, obs: Observation, job: Job | None | str = "look up") -> None:
        """End the job ``obs`` is the result of (DONE, or FAILED for a failed run)."""
        with self._lock:
            if isinstance(job, str):  # "look up"
                try:
                    job = self.store.get_job(obs.job_id)
                except NotFound:
                    job = None
            if job is None:
                return  # an external run (another scheduler, a log): nothing to finish
            if job.state == JobState.CANCELLED:
                return
            not_learned = not_learned_reason(obs)
            state = JobState.FAILED if not_learned else JobState.DONE
            message = obs.message or job.message
            if not_learned and obs.status != "failed":
                message = f"{message}; recorded, not learned: {not_learned}".lstrip("; ")
            job = replace(job, state=state, result=obs, updated_at=time.time(), message=message)
            self.store.update_job(job)
        point = CurvePoint(obs.curve[-1].epoch if obs.curve else 0, obs.accuracy, obs.seconds)
        self.event(job, "result", message or f"{state.value.lower()}: {obs.accuracy:.1f}%", point)
        self._settled(job)

    def finish_duplicates(self, results: Sequence[tuple[Observation, object]], positions: Sequence[int | None]) -> None:
        """A result sent again finishes its job if the first one was recorded but the job not finished.

        (A crash between recording a result and finishing its job leaves exactly that.)
        """
        for (obs, job), seq in zip(results, positions, strict=True):
            if seq is not None or job is None:
                continue
            try:
                stored = self.store.get_job(obs.job_id)
            except NotFound:
                continue
            if not stored.state.finished:
                self.finish(obs, stored)


def check_job_id(job_id: str) -> None:
    if not job_id or len(job_id) > 128 or not job_id.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgument(f"job id must be 1-128 letters, digits, '-' or '_', got {job_id[:40]!r}")
