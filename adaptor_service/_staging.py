"""Staged plans (probe-then-commit) run as child jobs of one parent job.

The parent job holds the whole schedule and is never sent to a worker. Each run of a stage is
a child job with a one-shot plan of that run (its full schedule), the epoch to stop after, and,
from the second stage on, the earlier child whose training checkpoint it continues. All of a
stage's children are queued at once, so idle workers run them in parallel.

When the last child of a stage settles, the runs that continue are chosen from their curves:
each run is predicted again at its full length with its own measured curve (the known-runs
correction), and :func:`select_continuing` keeps the best. The last stage's child is the
winner: the parent ends with its result and its artifact.

The budget is the task's worker-seconds over all children: a continuing stage gets what the
earlier stages left. Wall time can be shorter when the probes run in parallel.

Every step is idempotent (child ids derive from the parent's id and position), so a crash in
the middle is repaired by doing the step again: the reconciler calls :meth:`Schedules.resume`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptor_service._probing import select_continuing
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


def child_job_id(parent_id: str, stage: int, run: int) -> str:
    """A child's id: derived from its parent's, so creating it twice creates it once."""
    base = parent_id if len(parent_id) <= 100 else hashlib.sha256(parent_id.encode()).hexdigest()[:32]
    return f"{base}-s{stage}r{run}"


def _usable(job: Job) -> bool:
    """A settled child whose run measured something a later stage can build on."""
    result = job.result
    return job.state == JobState.DONE and result is not None and bool(result.curve)


class Schedules:
    """Runs staged plans through a :class:`~adaptor_service._jobs.JobLifecycle`."""

    def __init__(self, jobs: JobLifecycle, repredict: Repredict) -> None:
        self.jobs = jobs
        self.repredict = repredict

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
        failures = []
        for child in children:
            if child.state == JobState.QUEUED:
                try:
                    self.jobs.dispatch(child)
                except Exception as exc:  # stays QUEUED, marked: the reconciler queues it again
                    failures.append(exc)
        if failures and len(failures) == len(children):
            raise failures[0]
        return parent

    # ---- progress ------------------------------------------------------------------------
    def child_progress(self, child: Job, point: CurvePoint) -> None:
        """Forward a child's epoch to its parent's event stream."""
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

    # ---- settling ------------------------------------------------------------------------
    def child_settled(self, child: Job) -> None:
        """A child reached a final state: advance its parent when the whole stage has."""
        try:
            parent = self.jobs.store.get_job(child.parent_job_id)
        except NotFound:
            return
        self.resume(parent)

    def resume(self, parent: Job) -> Job:
        """Take the parent's schedule one step on, if its current stage has settled (idempotent)."""
        if parent.state.finished or not parent.plan.staged:
            return parent
        if not parent.child_job_ids:
            return self.start(parent)
        children = [self.jobs.store.get_job(job_id) for job_id in parent.child_job_ids]
        current = [c for c in children if c.stage == parent.stage]
        if not current or not all(c.state.finished for c in current):
            return parent
        used = sum(c.result.seconds for c in children if c.result is not None)
        usable = [c for c in current if _usable(c)]
        if not usable:
            failed = next((c for c in current if c.state == JobState.FAILED), None)
            why = f" (run {failed.job_id}: {failed.message})" if failed is not None and failed.message else ""
            return self._finish(parent, None, used, f"stage {parent.stage + 1}: no run finished an epoch{why}")
        last = parent.stage + 1 >= len(parent.plan.stages)
        if last:
            return self._finish(parent, usable[0], used, "")
        return self._next_stage(parent, usable, used)

    def _next_stage(self, parent: Job, usable: Sequence[Job], used: float) -> Job:
        stage = parent.plan.stages[parent.stage]
        runs = [c.plan.candidate for c in usable]
        assert all(c.result is not None for c in usable)
        predictions = self.repredict(parent.task, runs, [c.result.curve for c in usable])  # type: ignore[union-attr]
        kept = select_continuing(Stage(tuple(runs), tuple(predictions), stage.stop_after_epochs, max(stage.keep, 1)),
                                 predictions)
        left = parent.task.budget_seconds - used
        margin = max(parent.plan.time_margin, 1.0)
        continuing = []
        for i in kept:
            done = usable[i].result
            assert done is not None
            # What the rest of the schedule needs: the predicted whole run less what it has used.
            need = max(predictions[i].seconds - done.curve[-1].seconds, 0.0) * margin
            budget = left / len(kept)
            if need > 0 and budget < MIN_CONTINUATION_SHARE * need:
                continue
            continuing.append((runs[i], predictions[i], usable[i].job_id, budget))
        names = ", ".join(usable[i].job_id for i in kept)
        log.info("staged job %s: stage %d decided, %s continue", parent.job_id, parent.stage + 1, names)
        self.jobs.event(parent, "state", f"stage {parent.stage + 1} decided: {names} continue"
                                         f" ({left:.0f}s of the budget left)")
        if not continuing:  # no budget left to continue: the best run so far wins as it is
            best = usable[kept[0]]
            return self._finish(parent, best, used, f"the budget left ({left:.0f}s) cannot continue {best.job_id}")
        return self._queue_stage(parent, parent.stage + 1, continuing)

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
