"""A fast harness to compare accuracy/time predictors on the replay protocol.

This is a development tool, not a benchmark of record: the figures of record come from
:func:`benchmarks._replay.run_replay`, which drives the service's own ``Adaptor``. The lab
replays the *same* protocol (the same folds, the same shuffled warm-start order, the same
stream orders, the same candidates: every run at the epochs of the curve grid, the same
one-shot rule and learned time margin as ``OneShotGenerator`` and ``Adaptor``) but calls the
predictors directly, with each (task, run, epoch) feature dict built once and cached. It
therefore measures exactly what the predictors contribute, several times faster, and can
run a subset of the folds.

Run it as::

    python -m benchmarks._predictor_lab --folds 5 --use-folds 0,1 --orders 1 --config default

(``--config`` names an entry of :data:`CONFIGS`; ``--risk`` sets the risk aversion).
In Python: ``run_lab(CONFIGS["default"], use_folds=(0, 1))`` returns a :class:`LabResult`
whose ``line()`` is one row of the log in docs/REPLAY.md.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from river import linear_model, stats

from adaptor_service import (
    CURVE_SAMPLE_EPOCHS,
    AccuracyPredictor,
    BatchRefitRegressor,
    ExperienceRun,
    ExperienceTable,
    TimePredictor,
    make_features,
    sample_curve,
)
from benchmarks._replay import DEFAULT_BUDGETS_SECONDS, _split_folds, load_named_table
from nasoa_contracts import Candidate, TaskSpec

__all__ = ["CONFIGS", "LabConfig", "LabResult", "run_lab"]


@dataclass(frozen=True)
class LabConfig:
    """A pair of predictor factories (``seed -> predictor``) and the one-shot rule's knobs."""

    accuracy: Callable[[int], AccuracyPredictor]
    time: Callable[[int], TimePredictor]
    risk_aversion: float = 0.5
    default_margin: float = 1.2
    note: str = ""


def _fmean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if len(values) else math.nan


@dataclass
class LabResult:
    """Regret (points) per budget, first visits and repeats, and the time model's error."""

    budgets: tuple[float, ...]
    first: dict[float, list[float]] = field(default_factory=dict)
    repeat: dict[float, list[float]] = field(default_factory=dict)
    time_log_errors: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def first_mean(self) -> float:
        return _fmean([statistics.fmean(v) for v in self.first.values() if v])

    def repeat_mean(self) -> float:
        return _fmean([statistics.fmean(v) for v in self.repeat.values() if v])

    def all_mean(self) -> float:
        """Mean regret over every request (first visits and repeats), budgets weighed equally."""
        return _fmean([statistics.fmean(self.first[b] + self.repeat[b]) for b in self.budgets])

    def line(self) -> str:
        f = " / ".join(f"{_fmean(self.first[b]):.1f}" for b in self.budgets)
        r = " / ".join(f"{_fmean(self.repeat[b]):.1f}" for b in self.budgets)
        err = statistics.median(self.time_log_errors) if self.time_log_errors else math.nan
        return (
            f"first {f} (mean {self.first_mean():.1f}) | repeat {r} (mean {self.repeat_mean():.1f}) "
            f"| all {self.all_mean():.1f} "
            f"| time log err {err:.3f} | {self.seconds:.0f} s"
        )


class _Features:
    """Feature dicts per (task, run, epochs), built once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, int], dict[str, float]] = {}
        self._tasks: dict[str, TaskSpec] = {}

    def task(self, run: ExperienceRun) -> TaskSpec:
        spec = self._tasks.get(run.task_id)
        if spec is None:
            spec = self._tasks[run.task_id] = TaskSpec(
                f"experience:{run.task_id}", 1.0, dict(run.meta), task_id=run.task_id
            )
        return spec

    def get(self, run: ExperienceRun, epochs: int) -> dict[str, float]:
        key = (run.task_id, run.run_id, epochs)
        x = self._cache.get(key)
        if x is None:
            x = self._cache[key] = make_features(self.task(run), Candidate(run.model, dict(run.hparams), epochs=epochs))
        return x


class _Learner:
    """The predictors plus the adaptor's learned time margin (``Adaptor.time_margin``)."""

    def __init__(self, config: LabConfig, seed: int) -> None:
        self.config = config
        self.accuracy = config.accuracy(seed)
        self.time = config.time(seed)
        self.q90 = stats.Quantile(0.9)
        self.n_learned = 0

    @property
    def margin(self) -> float:
        if self.n_learned < 5:
            return self.config.default_margin
        return min(3.0, max(1.0, math.exp(self.q90.get())))

    def learn(self, feats: _Features, run: ExperienceRun, curve: Sequence) -> None:
        last = curve[-1]
        x_last = feats.get(run, last.epoch)
        predicted = self.time.predict_one(x_last)
        if last.seconds > 0:
            self.q90.update(math.log(max(last.seconds, 1e-3) / max(predicted, 1e-3)))
        for point in curve:
            x = feats.get(run, point.epoch)
            self.accuracy.learn_one(x, point.accuracy)
            if point.seconds > 0:
                self.time.learn_one(x, point.seconds)
        self.n_learned += 1

    def choose(self, feats: _Features, runs: Sequence[ExperienceRun], budget: float) -> int:
        xs = [feats.get(r, e) for r in runs for e in CURVE_SAMPLE_EPOCHS]
        acc = np.array(self.accuracy.predict_many(xs))
        sec = np.array([s for s, _ in self.time.predict_many(xs)])
        fits = sec * self.margin <= budget
        if fits.any():
            score = np.where(fits, acc[:, 0] - self.config.risk_aversion * acc[:, 1], -np.inf)
            best = int(np.argmax(score))
        else:
            best = int(np.argmin(sec))
        return best // len(CURVE_SAMPLE_EPOCHS)


def run_lab(
    config: LabConfig,
    table: ExperienceTable | str = "quicktune-extended",
    budgets: Sequence[float] = DEFAULT_BUDGETS_SECONDS,
    folds: int = 5,
    use_folds: Sequence[int] | None = None,
    orders: int = 1,
    seed: int = 0,
    online: bool = True,
) -> LabResult:
    """Replay the warm-start protocol for ``use_folds`` (all by default) with ``config``.

    ``online=False`` skips the updates within the stream (to see what they do).
    """
    started = time.perf_counter()
    if not isinstance(table, ExperienceTable):
        table = load_named_table(table)
    by_task = table.by_task()
    fold_tasks = _split_folds(sorted(by_task), folds, seed)
    feats = _Features()
    result = LabResult(tuple(float(b) for b in budgets), {b: [] for b in budgets}, {b: [] for b in budgets})
    oracle = {(t, b): max(r.outcome_within(b)[0] for r in by_task[t]) for t in by_task for b in budgets}
    for fold in use_folds if use_folds is not None else range(folds):
        held_out = fold_tasks[fold]
        past = [r for r in table.runs if r.task_id not in set(held_out)]
        random.Random(seed * 7919 + fold).shuffle(past)
        learner = _Learner(config, seed)
        for run in past:
            learner.learn(feats, run, sample_curve(run.curve))
        learner.accuracy.refit()  # as Adaptor.warm_start ends
        learner.time.refit()
        points = [(run, p) for task in held_out for run in by_task[task] for p in sample_curve(run.curve)]
        predicted = learner.time.predict_many([feats.get(run, p.epoch) for run, p in points])
        for (_, point), (seconds, _) in zip(points, predicted, strict=True):
            result.time_log_errors.append(abs(math.log(point.seconds / seconds)))
        for order in range(orders):
            requests = [(t, b) for t in held_out for b in budgets]
            random.Random(f"{seed}-warm-{fold}-{order}").shuffle(requests)
            fresh = copy.deepcopy(learner)
            seen: set[str] = set()
            for task, budget in requests:
                runs = by_task[task]
                run = runs[fresh.choose(feats, runs, budget)]
                accuracy, _ = run.outcome_within(budget)
                regret = oracle[(task, budget)] - accuracy
                (result.repeat if task in seen else result.first)[budget].append(regret)
                seen.add(task)
                curve = run.curve_within(budget)
                if online and curve:
                    fresh.learn(feats, run, sample_curve(curve))
    result.seconds = time.perf_counter() - started
    return result


#: Named configurations (the log in docs/REPLAY.md refers to these names).
def _blr(alpha: float, beta: float) -> linear_model.BayesianLinearRegression:
    return linear_model.BayesianLinearRegression(alpha=alpha, beta=beta)


def _blr_time(s: int) -> TimePredictor:
    return TimePredictor(_blr(0.1, 10.0), seed=s)


def _gb_time(s: int) -> TimePredictor:
    return TimePredictor(BatchRefitRegressor(seed=s), seed=s)


def _blr_accuracy(weight: float) -> Callable[[int], AccuracyPredictor]:
    return lambda s: AccuracyPredictor(_blr(1.0, 1.0), seed=s, task_prior_weight=weight)


def _gb_accuracy(weight: float) -> Callable[[int], AccuracyPredictor]:
    return lambda s: AccuracyPredictor(BatchRefitRegressor(seed=s), seed=s, task_prior_weight=weight)


#: Named configurations (the log in docs/REPLAY.md refers to these names). They spell out
#: every model, so a name keeps meaning the same thing when the defaults change.
CONFIGS: dict[str, LabConfig] = {
    "default": LabConfig(_blr_accuracy(0.0), _blr_time, note="Bayesian linear accuracy and time models"),
    "current": LabConfig(
        lambda s: AccuracyPredictor(seed=s),
        lambda s: TimePredictor(seed=s),
        note="whatever the predictors' defaults are now",
    ),
    "blr-shrink30": LabConfig(_blr_accuracy(30.0), _blr_time),
    "blr-shrink100": LabConfig(_blr_accuracy(100.0), _blr_time),
    "blr+gbtime": LabConfig(_blr_accuracy(0.0), _gb_time),
    "gb": LabConfig(_gb_accuracy(0.0), _gb_time),
    "gb-shrink30": LabConfig(_gb_accuracy(30.0), _gb_time),
    "gb-light": LabConfig(
        lambda s: AccuracyPredictor(
            BatchRefitRegressor(max_iter=100, learning_rate=0.2, growth=2.0, seed=s), seed=s, task_prior_weight=30.0
        ),
        lambda s: TimePredictor(BatchRefitRegressor(max_iter=100, learning_rate=0.2, growth=2.0, seed=s), seed=s),
        note="half the trees, refit every doubling: for the service's latency and throughput",
    ),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help=", ".join(CONFIGS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--use-folds", default="", help="comma-separated fold indices (default all)")
    parser.add_argument("--orders", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--risk", type=float, default=None, help="override the risk aversion")
    parser.add_argument("--offline", action="store_true", help="no updates within the stream")
    args = parser.parse_args(argv)
    for name in args.config.split(","):
        config = CONFIGS[name]
        if args.risk is not None:
            config = LabConfig(config.accuracy, config.time, args.risk, config.default_margin, config.note)
        use = [int(f) for f in args.use_folds.split(",")] if args.use_folds else None
        result = run_lab(
            config, folds=args.folds, use_folds=use, orders=args.orders, seed=args.seed, online=not args.offline
        )
        print(f"{name} (risk {config.risk_aversion}): {result.line()}", flush=True)


if __name__ == "__main__":
    main()
