"""Staged plans (probe-then-commit) run as child jobs of one parent job.

The parent job holds the whole schedule and is never sent to a worker. Each run of a stage is
a child job with a one-shot plan of that run (its full schedule), the epoch to stop after, and,
from the second stage on, the earlier child whose training checkpoint it continues. All of a
stage's children are queued at once, so idle workers run them in parallel.

The next stage is decided as the curves come in: each time a child settles or streams an
epoch, every run of the stage is predicted again at its full length from what it has measured
so far (the known-runs correction), and :func:`decide_continuing` keeps the best settled runs
as soon as no open run could beat them (all runs settled, or the open ones behind by more
than the predictions' spread). Runs still queued then are cancelled, unrun; running ones
finish their few epochs and are learned, their deadlines held back from the budget. The last
stage's child is the winner: the parent ends with its result and its artifact.

The budget is the task's worker-seconds over all children: a continuing stage gets what the
earlier stages left. Wall time can be shorter when the probes run in parallel.

Every step is idempotent (child ids derive from the parent's id and position), so a crash in
the middle is repaired by doing the step again: the reconciler calls :meth:`Schedules.resume`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptor_service._continuing import decide_continuing
from adaptor_service._locks import FairRLock
from nasoa_contracts import (
    Candidate,
    CurvePoint,
    Job,
    JobState,
    NotFound,
    Observation,
    Plan,
    Prediction,
    Stage,
    TaskSpec,
)

if TYPE_CHECKING:  # pragma: no cover
    from adaptor_service._jobs import JobLifecycle

__all__ = ["Schedules", "child_job_id"]

log = logging.getLogger("nasoa.adaptor.stages")

# Re-predicts runs at their full length from their measured curves: (task, runs, curves).
Repredict = Callable[[TaskSpec, Sequence[Candidate], Sequence[Sequence[CurvePoint]]], list[Prediction]]

# The first stage's deadlines together take at most this share of the budget.
MAX_FIRST_STAGE_SHARE = 0.8

# A continuation with less than this share of its predicted seconds left is not started: the
# best probe (its best-validation weights are stored) wins as it is.
MIN_CONTINUATION_SHARE = 0.25

# Open children whose streamed epochs are kept for the decisions (the oldest are dropped).
MAX_STREAMED_CHILDREN = 4096


def child_job_id(parent_id: str, stage: int, run: int) -> str:
    """A child's id: derived from its parent's, so creating it twice creates it once."""
    base = parent_id if len(parent_id) <= 100 else hashlib.sha256(parent_id.encode()).hexdigest()[:32]
    return f"{base}-s{stage}r{run}"


def _usable(job: Job) -> bool:
    """A settled child whose run measured something (a model to keep, a curve to learn)."""
    result = job.result
    return job.state == JobState.DONE and result is not None and bool(result.curve)


def _continuable(job: Job) -> bool:
    """A settled child that stopped as planned, with the training checkpoint a later stage resumes."""
    return _usable(job) and job.result is not None and job.result.status == "stopped"


class Schedules:
    """Runs staged plans through a :class:`~adaptor_service._jobs.JobLifecycle`.

    ``lock`` serialises the decisions; it must be a lock taken before the jobs' lock (the
    learner's: a result is learned, then finishes its job, then its parent's step runs).
    ``confidence``: how many standard deviations of the difference an open run must trail
    the leaders by for a stage to be decided before it has settled.
    """

    def __init__(
        self, jobs: JobLifecycle, repredict: Repredict, lock: FairRLock | None = None, confidence: float = 1.0
    ) -> None:
        self.jobs = jobs
        self.repredict = repredict
        self.lock = lock or FairRLock()
        self.confidence = confidence
        self._streamed = _StreamedCurves(MAX_STREAMED_CHILDREN)
        self._local = threading.local()  # the parents this thread is deciding

    # ---- starting ------------------------------------------------------------------------
    def start(self, parent: Job) -> Job:
        """Create and queue the first stage's children (again, if some already exist)."""
        return self._queue_stage(parent, 0, self._first_stage_runs(parent))

    def _first_stage_runs(self, parent: Job) -> list[tuple[Candidate, Prediction, str, float]]:
        """(run, prediction, job to resume from, budget) of each stage-0 child.

        A probe's budget is only its deadline: it stops after its stage's epochs, and what it
        does not use is left to the stages after it. So each probe may take twice its
        predicted seconds (the part of its schedule it trains, times the margin), and at
        least half of an even share, while all probes together stay within
        :data:`MAX_FIRST_STAGE_SHARE` of the budget.
        """
        stage = parent.plan.stages[0]
        budget = parent.task.budget_seconds
        margin = max(parent.plan.time_margin, 1.0)
        fair = budget / len(stage.runs)
        allowed = []
        for run, prediction in zip(stage.runs, stage.predictions, strict=True):
            trained = stage.stop_after_epochs if 0 < stage.stop_after_epochs < run.epochs else run.epochs
            need = prediction.seconds * trained / max(run.epochs, 1) * margin
            allowed.append(max(2.0 * need, 0.5 * fair))
        scale = min(1.0, MAX_FIRST_STAGE_SHARE * budget / max(sum(allowed), 1e-9))
        return [(run, pred, "", max(sec * scale, 1.0))
                for run, pred, sec in zip(stage.runs, stage.predictions, allowed, strict=True)]

    def _queue_stage(self, parent: Job, index: int, runs: Sequence[tuple[Candidate, Prediction, str, float]]) -> Job:
        parent, children = self._create_stage(parent, index, runs)
        self._dispatch(children)
        return parent

    def _create_stage(
        self, parent: Job, index: int, runs: Sequence[tuple[Candidate, Prediction, str, float]]
    ) -> tuple[Job, list[Job]]:
        """Store the stage's children and the parent's move to it; the children still to queue."""
        stage = parent.plan.stages[index]
        children = []
        for i, (run, prediction, resume_from, budget) in enumerate(runs):
            child = Job(
                job_id=child_job_id(parent.job_id, index, i),
                task=replace(parent.task, budget_seconds=budget),
                plan=Plan(run, prediction, parent.plan.policy, parent.plan.time_margin),
                created_at=time.time(),
                updated_at=time.time(),
                parent_job_id=parent.job_id,
                stage=index,
                stop_after_epochs=stage.stop_after_epochs if stage.stop_after_epochs < run.epochs else 0,
                resume_from_job_id=resume_from,
            )
            child, created = self.jobs.store.create_job(child)
            if created:
                self.jobs.event(child, "state", f"stage {index + 1} of {len(parent.plan.stages)} of job "
                                                f"{parent.job_id}: {run.describe()}")
            children.append(child)
        with self.jobs.lock:
            parent = self.jobs.store.get_job(parent.job_id)
            ids = tuple(dict.fromkeys((*parent.child_job_ids, *(c.job_id for c in children))))
            what = "runs" if len(children) > 1 else "run"
            message = f"stage {index + 1} of {len(parent.plan.stages)}: {len(children)} {what} queued"
            parent = replace(parent, child_job_ids=ids, stage=index, state=JobState.RUNNING,
                             message=message, updated_at=time.time())
            self.jobs.store.update_job(parent)
        self.jobs.event(parent, "state", message)
        return parent, children

    def _dispatch(self, children: Sequence[Job]) -> None:
        """Queue the children still QUEUED; raise only if none could be (the reconciler retries)."""
        failures = []
        for child in children:
            if child.state == JobState.QUEUED:
                try:
                    self.jobs.dispatch(child)
                except Exception as exc:  # stays QUEUED, marked: the reconciler queues it again
                    failures.append(exc)
        if failures and len(failures) == len(children):
            raise failures[0]

    # ---- progress ------------------------------------------------------------------------
    def child_progress(self, child: Job, point: CurvePoint) -> None:
        """Forward a child's epoch to its parent's event stream."""
        with self.jobs.lock:  # as in JobLifecycle.job_progress: no progress after the parent's result
            try:
                parent = self.jobs.store.get_job(child.parent_job_id)
            except NotFound:
                return
            if parent.state.finished:
                return
            runs = len(parent.plan.stages[child.stage].runs) if child.stage < len(parent.plan.stages) else 1
            run = child.job_id.rsplit("r", 1)[-1]
            position = f", run {int(run) + 1}/{runs}" if run.isdigit() and runs > 1 else ""
            self.jobs.event(parent, "progress", f"stage {child.stage + 1}{position}: epoch {point.epoch}", point)
        self._streamed.add(child.job_id, point)
        if child.stage == parent.stage and child.stage + 1 < len(parent.plan.stages):
            self.resume(parent)  # its curve so far may decide the stage early

    # ---- settling ------------------------------------------------------------------------
    def child_settled(self, child: Job) -> None:
        """A child reached a final state: advance its parent when the whole stage has."""
        self._streamed.pop(child.job_id)  # a settled run's whole curve is in its result
        try:
            parent = self.jobs.store.get_job(child.parent_job_id)
        except NotFound:
            return
        self.resume(parent)

    def resume(self, parent: Job) -> Job:
        """Take the parent's schedule one step on, if its current stage can be decided (idempotent)."""
        if parent.state.finished or not parent.plan.staged:
            return parent
        if not parent.child_job_ids:
            return self.start(parent)
        if parent.job_id in self._deciding():
            return parent  # re-entered while it stops the runs a decision left out
        to_queue: list[Job] = []
        parent = self._step(parent, to_queue)
        self._dispatch(to_queue)  # outside the lock: a slow broker must not hold up the planner
        return parent

    def _step(self, parent: Job, to_queue: list[Job]) -> Job:
        """:meth:`resume`'s decision, under the lock; the next stage's children go to ``to_queue``."""
        with self.lock:
            parent = self.jobs.store.get_job(parent.job_id)  # another thread may have moved it on
            if parent.state.finished:
                return parent
            children = [self.jobs.store.get_job(job_id) for job_id in parent.child_job_ids]
            current = [c for c in children if c.stage == parent.stage]
            if not current:
                return parent
            used = sum(c.result.seconds for c in children if c.result is not None)
            usable = [c for c in current if _usable(c)]
            still_open = [c for c in current if not c.state.finished]
            if not still_open and not usable:
                failed = next((c for c in current if c.state == JobState.FAILED), None)
                why = f" (run {failed.job_id}: {failed.message})" if failed is not None and failed.message else ""
                return self._finish(parent, None, used, f"stage {parent.stage + 1}: no run finished an epoch{why}")
            if parent.stage + 1 >= len(parent.plan.stages):
                # A probe left running by an early decision still counts: the parent waits for it.
                if any(not c.state.finished for c in children):
                    return parent
                return self._finish(parent, usable[0], used, "")
            continuable = [c for c in usable if _continuable(c)]
            if not still_open and not continuable:  # each run reached its deadline before its stop
                best = max(usable, key=lambda c: c.result.accuracy if c.result else 0.0)
                return self._finish(parent, best, used, f"no run of stage {parent.stage + 1} stopped with a "
                                                        "checkpoint to continue: the best one wins as it is")
            decided = self._decide(parent, continuable, still_open)
            if decided is None:
                return parent
            if still_open:
                used += self._stop_open_runs(parent, still_open, decided)
            return self._next_stage(parent, decided, used, to_queue)

    def _decide(self, parent: Job, usable: Sequence[Job], still_open: Sequence[Job]) -> list[tuple[Job, Prediction]] | None:
        """The settled runs that continue, with their predictions; None while open runs could still win."""
        if not usable:
            return None
        runs = [c.plan.candidate for c in (*usable, *still_open)]
        curves = [c.result.curve for c in usable if c.result is not None]
        curves += [self._streamed.get(c.job_id) for c in still_open]
        predictions = self.repredict(parent.task, runs, curves)
        stage = parent.plan.stages[parent.stage]
        planned = Stage(tuple(runs), tuple(c.plan.prediction for c in (*usable, *still_open)),
                        stage.stop_after_epochs, max(stage.keep, 1))
        settled = [True] * len(usable) + [False] * len(still_open)
        kept = decide_continuing(planned, predictions, settled, self.confidence)
        return None if kept is None else [(usable[i], predictions[i]) for i in kept]

    def _stop_open_runs(self, parent: Job, still_open: Sequence[Job], decided: Sequence[tuple[Job, Prediction]]) -> float:
        """Cancel the stage's runs still queued; return the budget held back for those running."""
        leaders = ", ".join(job.job_id for job, _ in decided)
        why = f"not run: stage {parent.stage + 1} of job {parent.job_id} was decided without it ({leaders} continue)"
        with self._deciding_parent(parent.job_id):
            for child in still_open:
                self.jobs.set_state_if(child.job_id, JobState.QUEUED, JobState.CANCELLED, why)
        held = 0.0
        for child in still_open:
            now = self.jobs.store.get_job(child.job_id)
            if not now.state.finished:  # it runs on: what its deadline allows is spent or kept for it
                streamed = self._streamed.get(child.job_id)
                held += max(now.task.budget_seconds - (streamed[-1].seconds if streamed else 0.0), 0.0)
            elif now.result is not None:
                held += now.result.seconds
            self._streamed.pop(child.job_id)
        log.info("staged job %s: stage %d decided before %d run(s) settled", parent.job_id, parent.stage + 1,
                 len(still_open))
        return held

    def _deciding(self) -> set[str]:
        deciding = getattr(self._local, "parents", None)
        if deciding is None:
            deciding = self._local.parents = set()
        return deciding

    @contextlib.contextmanager
    def _deciding_parent(self, job_id: str) -> Iterator[None]:
        self._deciding().add(job_id)
        try:
            yield
        finally:
            self._deciding().discard(job_id)

    def _next_stage(
        self, parent: Job, decided: Sequence[tuple[Job, Prediction]], used: float, to_queue: list[Job]
    ) -> Job:
        left = parent.task.budget_seconds - used
        margin = max(parent.plan.time_margin, 1.0)
        continuing = []
        for job, prediction in decided:
            done = job.result
            assert done is not None
            self._streamed.pop(job.job_id)
            # What the rest of the schedule needs: the predicted whole run less what it has used.
            need = max(prediction.seconds - done.curve[-1].seconds, 0.0) * margin
            budget = left / len(decided)
            if need > 0 and budget < MIN_CONTINUATION_SHARE * need:
                continue
            continuing.append((job.plan.candidate, prediction, job.job_id, budget))
        names = ", ".join(job.job_id for job, _ in decided)
        log.info("staged job %s: stage %d decided, %s continue", parent.job_id, parent.stage + 1, names)
        self.jobs.event(parent, "state", f"stage {parent.stage + 1} decided: {names} continue"
                                         f" ({left:.0f}s of the budget left)")
        if not continuing:  # no budget left to continue: the best run so far wins as it is
            best = decided[0][0]
            return self._finish(parent, best, used, f"the budget left ({left:.0f}s) cannot continue {best.job_id}")
        parent, children = self._create_stage(parent, parent.stage + 1, continuing)
        to_queue.extend(children)
        return parent

    def _finish(self, parent: Job, winner: Job | None, used: float, why: str) -> Job:
        """End the parent with the winner's result (or FAILED without one); idempotent."""
        with self.jobs.lock:
            parent = self.jobs.store.get_job(parent.job_id)
            if parent.state.finished:
                return parent
            if winner is None or winner.result is None:
                parent = replace(parent, state=JobState.FAILED, message=why or "no run of the schedule finished",
                                 updated_at=time.time())
            else:
                result: Observation = winner.result
                message = f"winner {winner.job_id}: {winner.plan.candidate.describe()}; {used:.1f} worker-seconds"
                message = f"{message} ({why})" if why else message
                parent = replace(
                    parent,
                    state=JobState.DONE,
                    message=message,
                    updated_at=time.time(),
                    result=replace(result, job_id=parent.job_id, task=parent.task, seconds=used, message=message),
                )
            self.jobs.store.update_job(parent)
        log.info("staged job %s %s: %s", parent.job_id, parent.state.value, parent.message)
        result = parent.result
        point = CurvePoint(result.curve[-1].epoch if result and result.curve else 0,
                           result.accuracy if result else 0.0, used)
        self.jobs.event(parent, "result", parent.message, point)
        return parent

    def cancel_children(self, parent: Job) -> None:
        """Cancel the children of a cancelled parent that have not settled."""
        for job_id in parent.child_job_ids:
            self.jobs.fail_open_job(job_id, "cancelled with its parent job", JobState.CANCELLED)


class _StreamedCurves:
    """The epochs open children have streamed so far, for at most ``size`` children (oldest dropped)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._curves: collections.OrderedDict[str, list[CurvePoint]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, job_id: str, point: CurvePoint) -> None:
        with self._lock:
            curve = self._curves.setdefault(job_id, [])
            self._curves.move_to_end(job_id)
            if not curve or point.epoch > curve[-1].epoch:
                curve.append(point)
            while len(self._curves) > self.size:
                self._curves.popitem(last=False)

    def get(self, job_id: str) -> list[CurvePoint]:
        with self._lock:
            return list(self._curves.get(job_id, ()))

    def pop(self, job_id: str) -> None:
        with self._lock:
            self._curves.pop(job_id, None)
