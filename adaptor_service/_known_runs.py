"""Runs the service has measured on a task: a run seen is predicted from its own curve.

The predictors generalise across tasks, so after one result on a task they still rank that
task's candidates almost as before: a run that diverged would be picked again for a larger
budget. ``KnownRuns`` keeps each task's measured curves, keyed by the run (model and
regime, without the length), and corrects the predictions of those candidates:

- at an epoch that was measured, the accuracy and seconds are the measured ones;
- elsewhere, the accuracy is the model's prediction shifted by the run's residual at the
  nearest measured epoch below (or the first one), and the seconds are the measured seconds
  per epoch there times the epochs.

The curve of a run planned for E epochs is read as the outcome of the same regime planned for
e <= E epochs. That is exact for runs cut short (the replay's tables); for a schedule that
anneals over the planned length it is a conservative estimate.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nasoa_contracts import Candidate, CurvePoint, Observation, TaskSpec

__all__ = ["KnownRuns", "Measured", "RunKey", "correct_accuracy", "correct_seconds", "measured_curve", "rows_by_run", "run_key"]

RunKey = tuple[str, tuple[tuple[str, object], ...]]


def run_key(candidate: Candidate) -> RunKey:
    """The candidate without its length: the same regime planned for any number of epochs."""
    return candidate.model, tuple(sorted(candidate.hparams.items()))


def _task_key(task: TaskSpec) -> tuple[object, ...]:
    return task.task_id, task.device_class, tuple(task.meta_features.items())


@dataclass
class _Curve:
    epochs: list[int]  # sorted
    accuracy: list[float]
    seconds: list[float]

    def reference(self, epochs: int) -> int:
        """Index of the measured epoch the prediction at ``epochs`` is anchored to."""
        return max(bisect.bisect_right(self.epochs, epochs) - 1, 0)


class KnownRuns:
    """Each task's measured runs (River style: ``learn_one`` per result)."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[object, ...], dict[RunKey, _Curve]] = {}

    def learn_one(self, obs: Observation) -> None:
        points = obs.curve or (CurvePoint(obs.candidate.epochs, obs.accuracy, obs.seconds),)
        measured = {p.epoch: (p.accuracy, p.seconds) for p in points if p.epoch >= 1}  # epoch 0: before training
        if not measured:
            return
        runs = self._tasks.setdefault(_task_key(obs.task), {})
        key = run_key(obs.candidate)
        old = runs.get(key)
        if old is not None:  # a run measured again: the newer curve wins where both measured
            measured = {**dict(zip(old.epochs, zip(old.accuracy, old.seconds, strict=True), strict=True)), **measured}
        epochs = sorted(measured)
        runs[key] = _Curve(epochs, [measured[e][0] for e in epochs], [measured[e][1] for e in epochs])

    def new_points(self, task: TaskSpec, candidate: Candidate, points: Sequence[CurvePoint]) -> list[CurvePoint]:
        """The ``points`` a result adds to its run's measured curve on ``task``.

        A continued run reports its whole curve, whose first epochs its probe reported already
        (the same values): only the epochs after them are new, or they would weigh double. A
        result that measures no new epoch is a new measurement of the run: all of it counts.
        """
        known = self.of_task(task).get(run_key(candidate))
        if known is None:
            return list(points)
        seen = dict(zip(known.epochs, zip(known.accuracy, known.seconds, strict=True), strict=True))
        fresh = [p for p in points if seen.get(p.epoch) != (p.accuracy, p.seconds)]
        extends = fresh and all(p.epoch > max(seen) for p in fresh)
        return fresh if extends else list(points)

    def of_task(self, task: TaskSpec) -> dict[RunKey, _Curve]:
        return self._tasks.get(_task_key(task), {})

    def matches(
        self, task: TaskSpec, candidates: Sequence[Candidate], rows_of: Mapping[RunKey, list[int]] | None = None
    ) -> list[tuple[int, _Curve]]:
        """(position, curve) of each candidate whose run was measured on ``task``.

        ``rows_of`` (from :func:`rows_by_run`) spares keying every candidate again when the
        same candidates serve many requests.
        """
        runs = self.of_task(task)
        if not runs:
            return []
        rows_of = rows_of if rows_of is not None else rows_by_run(candidates)
        return [(i, curve) for key, curve in runs.items() for i in rows_of.get(key, ())]


def measured_curve(points: Sequence[CurvePoint]) -> _Curve | None:
    """A run's curve as :class:`KnownRuns` keeps it (None when no epoch was measured)."""
    measured = {p.epoch: (p.accuracy, p.seconds) for p in points if p.epoch >= 1}
    if not measured:
        return None
    epochs = sorted(measured)
    return _Curve(epochs, [measured[e][0] for e in epochs], [measured[e][1] for e in epochs])


def rows_by_run(candidates: Sequence[Candidate]) -> dict[RunKey, list[int]]:
    """The positions of each run's candidates (one per length)."""
    rows: dict[RunKey, list[int]] = {}
    for i, key in enumerate(map(run_key, candidates)):
        rows.setdefault(key, []).append(i)
    return rows


Measured = Sequence[tuple[int, Candidate, _Curve]]  # (position in the arrays, candidate, its run's curve)


def correct_seconds(measured: Measured, sec: np.ndarray, sec_std: np.ndarray) -> None:
    """Replace, in place, the predicted seconds of measured runs (std 0 where measured)."""
    for i, candidate, curve in measured:
        j = curve.reference(candidate.epochs)
        if curve.seconds[j] <= 0:
            continue  # the time was not measured: the model's guess stands
        sec[i] = curve.seconds[j] * candidate.epochs / curve.epochs[j]
        if curve.epochs[j] == candidate.epochs:
            sec_std[i] = 0.0


def correct_accuracy(
    measured: Measured, acc: np.ndarray, acc_std: np.ndarray, predict_at: Callable[[Candidate, int], float]
) -> None:
    """Replace, in place, the predicted accuracy of measured runs.

    ``predict_at(candidate, epochs)`` is the model's accuracy for the candidate at another
    length: the run's residual there shifts the prediction (computed once per run and epoch,
    since a run's longer candidates share it).
    """
    residuals: dict[tuple[int, int], float] = {}
    for i, candidate, curve in measured:
        j = curve.reference(candidate.epochs)
        if curve.epochs[j] == candidate.epochs:
            acc[i], acc_std[i] = curve.accuracy[j], 0.0
            continue
        residual = residuals.get((id(curve), j))
        if residual is None:
            residual = residuals[id(curve), j] = curve.accuracy[j] - predict_at(candidate, curve.epochs[j])
        acc[i] = min(100.0, max(0.0, acc[i] + residual))
