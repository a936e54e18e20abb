"""How far can a batch model get on the replay's first visits? A diagnostic, not a policy.

For each fold of the replay's split, scikit-learn's ``HistGradientBoostingRegressor`` is fit
once on every sampled curve point of the other folds' tasks (the warm-start data, with the
service's own :func:`make_features`): accuracy standardised per task, and log seconds. Each
held-out (task, budget) then gets the run (at the grid epochs) with the best predicted
accuracy whose predicted time fits, and its regret to the oracle. No online updates, no
margin, no risk term: this is the zero-shot ranking quality of the model family alone.

``--true-time`` replaces the time model by each run's measured time: what is left is the
regret of the accuracy ranking alone, a ceiling for any time model.

``--known-fraction F`` asks what knowing part of the task would give: a seeded fraction F of
each held-out task's runs is "known" (their curves), and the pick and the oracle use only its
other runs (the pool). ``--mode`` says what the model is fit on: ``zero-shot`` (the other
folds' tasks, as without F: the paired reference), ``with-task`` (those plus the known runs,
one fit per held-out task) or ``own-only`` (the known runs alone).

``--similarity-width W`` weights the other tasks' rows, in the accuracy model, by how close each
task's meta-features are to the held-out task's: a Gaussian of the Euclidean distance between
their natural logs, with standard deviation W (0, the default: unweighted; zero-shot mode only).
The accuracy model is then fit once per held-out task.

``--probe K --probe-epochs E`` measures a two-step pick (outside the replay's one-shot
protocol): the K best predicted runs that fit run for E epochs each, one after another within
the budget, and the one with the best accuracy so far continues from its checkpoint; the other
probes' seconds come out of the budget, the winner's are part of its own run.

Run it as::

    python -m benchmarks._batch_ceiling [--folds 5] [--seed 0] [--true-time] [--max-iter 200] [--learning-rate 0.1] [--l2 1]
    python -m benchmarks._batch_ceiling --known-fraction 0.5 --mode with-task [--seed 0]
    python -m benchmarks._batch_ceiling --probe 2 --probe-epochs 3 [--seed 0]
    python -m benchmarks._batch_ceiling --similarity-width 1.0 [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from adaptor_service import CURVE_SAMPLE_EPOCHS, ExperienceRun, ExperienceTable, make_features, sample_curve
from benchmarks._replay import DEFAULT_BUDGETS_SECONDS, _split_folds, load_named_table

__all__ = ["MODES", "first_visit_regret", "similarity_weights"]

#: What the model is fit on when part of each held-out task is known (``known_fraction``).
MODES = ("zero-shot", "with-task", "own-only")


def _features(run: ExperienceRun, epochs: int) -> dict[str, float]:
    return make_features(run.to_task(), run.to_candidate(epochs))


def _seconds_at(run: ExperienceRun, epochs: int) -> float:
    """Measured cumulative seconds after ``epochs`` (extrapolated past a run's last epoch)."""
    if epochs <= run.epochs:
        return run.curve[epochs - 1].seconds
    return run.curve[-1].seconds * epochs / run.epochs


#: A run's training rows: (features, accuracy, cumulative seconds) at its sampled curve points.
Samples = list[tuple[dict[str, float], float, float]]


def _samples(run: ExperienceRun) -> Samples:
    return [(_features(run, p.epoch), p.accuracy, p.seconds) for p in sample_curve(run.curve)]


def similarity_weights(meta: Mapping[str, Mapping[str, float]], target: str, width: float) -> dict[str, float]:
    """Each task's weight: a Gaussian (standard deviation ``width``) of the distance between the
    natural logs of its meta-features and ``target``'s."""
    if not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a number above 0, got {width}")

    def position(task_id: str) -> np.ndarray:
        missing = sorted(set(meta[target]) - set(meta[task_id]))
        if missing:
            raise ValueError(f"task {task_id!r} has no meta-feature {', '.join(missing)}: cannot compare it with {target!r}")
        values = np.array([meta[task_id][k] for k in sorted(meta[target])], dtype=float)
        if not (values > 0).all():
            raise ValueError(f"task {task_id!r} has a meta-feature at or below 0: its log is undefined")
        return np.log(values)

    here = position(target)
    return {t: float(np.exp(-((position(t) - here) ** 2).sum() / (2 * width**2))) for t in meta}


class _Models:
    """Accuracy (standardised per task) and log-time boosting fit on every sampled curve point.

    ``samples_of`` gives a run's training rows; pass a cached one when the same runs are fit
    again (each fold, each held-out task), so their features are built once.
    """

    def __init__(
        self, runs: Iterable[ExperienceRun], settings: dict[str, object], true_time: bool,
        samples_of: Callable[[ExperienceRun], Samples] = _samples,
    ) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.feature_extraction import DictVectorizer

        rows, accuracy, seconds, task_of = [], [], [], []
        for run in runs:
            for features, acc, secs in samples_of(run):
                rows.append(features)
                accuracy.append(acc)
                seconds.append(secs)
                task_of.append(run.task_id)
        y = np.asarray(accuracy)
        tasks = np.asarray(task_of)
        for task_id in set(task_of):
            mine = tasks == task_id
            y[mine] = (y[mine] - y[mine].mean()) / max(y[mine].std(), 1e-9)
        self.vectorizer = DictVectorizer(sparse=False)
        X = self.vectorizer.fit_transform(rows)
        self._fit_data = (X, y, tasks, settings)
        self.accuracy = HistGradientBoostingRegressor(**settings).fit(X, y)
        self.time = None if true_time else HistGradientBoostingRegressor(**settings).fit(X, np.log(seconds))

    def reweighted(self, task_weight: Mapping[str, float]) -> _Models:
        """A copy whose accuracy model weights each task's rows (scaled to a mean of 1 over the
        rows); the rows, the features and the time model are this one's."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        X, y, tasks, settings = self._fit_data
        weights = np.array([task_weight[t] for t in tasks])
        if not weights.sum() > 0:
            raise ValueError("every past task has weight 0 (similarity width too small for these tasks)")
        twin = copy.copy(self)
        twin.accuracy = HistGradientBoostingRegressor(**settings).fit(X, y, sample_weight=weights / weights.mean())
        return twin

    def regrets(
        self, runs: Sequence[ExperienceRun], pool: Sequence[int], budgets: Sequence[float],
        probe: int = 1, probe_epochs: int = 1,
    ) -> list[float]:
        """Per budget: the oracle's best run of ``pool`` minus the picked run's accuracy.

        With ``probe`` K > 1 the pick has two steps: the K best predicted runs that fit are run
        one after another for ``probe_epochs`` epochs each, within what is left of the budget
        (a probe that does not finish an epoch in it gives nothing and spends the rest), and the
        one with the best accuracy so far continues from its checkpoint with the budget that the
        other probes left.
        """
        grid = [(i, e) for i in pool for e in CURVE_SAMPLE_EPOCHS]
        T = self.vectorizer.transform([_features(runs[i], e) for i, e in grid])
        predicted = self.accuracy.predict(T)
        if self.time is None:
            needed = np.array([_seconds_at(runs[i], e) for i, e in grid])
        else:
            needed = np.exp(self.time.predict(T))
        out = []
        for budget in budgets:
            fits = needed <= budget
            if fits.any():
                ranked = dict.fromkeys(grid[g][0] for g in np.argsort(-predicted, kind="stable") if fits[g])
                probed = list(ranked)[:probe]
            else:
                probed = [grid[int(np.argmin(needed))][0]]
            oracle = max(runs[i].outcome_within(budget)[0] for i in pool)
            out.append(oracle - _two_step_outcome([runs[i] for i in probed], budget, probe_epochs))
        return out


def _two_step_outcome(probed: Sequence[ExperienceRun], budget: float, probe_epochs: int) -> float:
    """Accuracy of probing ``probed`` in order within ``budget``, then continuing the best probe."""
    left = budget
    spent: dict[int, float] = {}
    early: dict[int, float] = {}
    for n, run in enumerate(probed):
        if left <= 0:
            break
        probe_end = [p for p in run.curve if p.epoch <= probe_epochs] or run.curve[:1]
        points = run.curve_within(min(left, probe_end[-1].seconds))
        spent[n] = points[-1].seconds if points else left
        left -= spent[n]
        if points:
            early[n] = max(p.accuracy for p in points)
    if not early:
        return 0.0
    best = max(early, key=early.__getitem__)  # the first of equals: the better predicted
    return probed[best].outcome_within(left + spent[best])[0]


def _known_split(task_id: str, n_runs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (known, pool) split of a task's run indices; no known runs when fraction is 0."""
    order = list(range(n_runs))
    if fraction <= 0:
        return [], order
    if n_runs < 2:
        raise ValueError(f"task {task_id!r} has {n_runs} run: a known fraction needs at least 2")
    random.Random(f"{seed}/{task_id}").shuffle(order)
    k = min(n_runs - 1, max(1, round(fraction * n_runs)))
    return sorted(order[:k]), sorted(order[k:])


def first_visit_regret(
    table: str | ExperienceTable = "quicktune-extended",
    folds: int = 5,
    seed: int = 0,
    budgets: Sequence[float] = DEFAULT_BUDGETS_SECONDS,
    true_time: bool = False,
    max_iter: int = 200,
    learning_rate: float = 0.1,
    l2_regularization: float = 1.0,
    known_fraction: float = 0.0,
    mode: str = "zero-shot",
    probe: int = 1,
    probe_epochs: int = 1,
    similarity_width: float = 0.0,
) -> dict[float, list[float]]:
    """Regret (points) of every held-out (task, budget), per budget."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0.0 <= known_fraction < 1.0:
        raise ValueError(f"known_fraction must be in [0, 1), got {known_fraction}")
    if mode != "zero-shot" and known_fraction <= 0:
        raise ValueError(f"mode {mode!r} needs a known_fraction above 0")
    if probe < 1 or probe_epochs < 1:
        raise ValueError(f"probe and probe_epochs must be at least 1, got {probe} and {probe_epochs}")
    if not math.isfinite(similarity_width) or similarity_width < 0:
        raise ValueError(f"similarity_width must be at least 0 (0: unweighted), got {similarity_width}")
    if similarity_width > 0 and mode != "zero-shot":
        raise ValueError(f"similarity_width needs mode 'zero-shot', got {mode!r}")
    # no early stopping, as in the service's BatchRefitRegressor (it would hold out a random
    # tenth of the rows, so the fit would depend on row order)
    settings = {"max_iter": max_iter, "learning_rate": learning_rate,
                "l2_regularization": l2_regularization, "early_stopping": False, "random_state": 0}
    by_task = (table if isinstance(table, ExperienceTable) else load_named_table(table)).by_task()
    regrets: dict[float, list[float]] = {b: [] for b in budgets}
    cache: dict[tuple[str, str], Samples] = {}

    def samples_of(run: ExperienceRun) -> Samples:
        key = (run.task_id, run.run_id)
        if key not in cache:
            cache[key] = _samples(run)
        return cache[key]

    meta = {task_id: dict(runs[0].meta) for task_id, runs in by_task.items()}
    for held_out in _split_folds(sorted(by_task), folds, seed):
        others = [run for task_id, runs in by_task.items() if task_id not in held_out for run in runs]
        # fit once per fold; with a similarity width, each held-out task reweights its rows
        zero_shot = _Models(others, settings, true_time, samples_of) if mode == "zero-shot" else None
        for task_id in held_out:
            runs = by_task[task_id]
            known, pool = _known_split(task_id, len(runs), known_fraction, seed)
            if zero_shot is not None and similarity_width:
                models = zero_shot.reweighted(similarity_weights(meta, task_id, similarity_width))
            elif zero_shot is not None:
                models = zero_shot
            else:
                mine = [runs[i] for i in known]
                models = _Models(others + mine if mode == "with-task" else mine, settings, true_time, samples_of)
            picked = models.regrets(runs, pool, budgets, probe, probe_epochs)
            for budget, regret in zip(budgets, picked, strict=True):
                regrets[budget].append(regret)
    return regrets


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="quicktune-extended")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--true-time", action="store_true", help="use measured times (accuracy ranking alone)")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=1.0, help="l2_regularization (BatchRefitRegressor's default)")
    parser.add_argument("--known-fraction", type=float, default=0.0,
                        help="fraction of each held-out task's runs that is known; pick among the rest")
    parser.add_argument("--mode", choices=MODES, default="zero-shot",
                        help="fit on the other tasks, on them plus the known runs, or on the known runs alone")
    parser.add_argument("--probe", type=int, default=1,
                        help="two-step pick: run the K best predicted runs for --probe-epochs each, "
                             "continue the best (the others' seconds come out of the budget)")
    parser.add_argument("--probe-epochs", type=int, default=1)
    parser.add_argument("--similarity-width", type=float, default=0.0,
                        help="weight the other tasks' rows in the accuracy model by meta-feature similarity: "
                             "standard deviation of a Gaussian over natural-log distance; 0 (default) = "
                             "unweighted; zero-shot mode only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    regrets = first_visit_regret(args.table, args.folds, args.seed, true_time=args.true_time,
                                 max_iter=args.max_iter, learning_rate=args.learning_rate, l2_regularization=args.l2,
                                 known_fraction=args.known_fraction, mode=args.mode,
                                 probe=args.probe, probe_epochs=args.probe_epochs,
                                 similarity_width=args.similarity_width)
    means = [statistics.fmean(v) for v in regrets.values()]
    cells = " / ".join(f"{m:.1f}" for m in means)
    print(f"first-visit regret {cells} (mean {statistics.fmean(means):.1f}) "
          f"| {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
