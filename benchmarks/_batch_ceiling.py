"""How far can a batch model get on the replay's first visits? A diagnostic, not a policy.

For each fold of the replay's split, scikit-learn's ``HistGradientBoostingRegressor`` is fit
once on every sampled curve point of the other folds' tasks (the warm-start data, with the
service's own :func:`make_features`): accuracy standardised per task, and log seconds. Each
held-out (task, budget) then gets the run (at the grid epochs) with the best predicted
accuracy whose predicted time fits, and its regret to the oracle. No online updates, no
margin, no risk term: this is the zero-shot ranking quality of the model family alone.

``--true-time`` replaces the time model by each run's measured time: what is left is the
regret of the accuracy ranking alone, a ceiling for any time model.

Run it as::

    python -m benchmarks._batch_ceiling [--folds 5] [--seed 0] [--true-time] [--max-iter 200] [--learning-rate 0.1] [--l2 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from adaptor_service._experience import CURVE_SAMPLE_EPOCHS, ExperienceRun, sample_curve
from adaptor_service._predictors import make_features
from benchmarks._replay import DEFAULT_BUDGETS_SECONDS, _split_folds, load_named_table

__all__ = ["first_visit_regret"]


def _features(run: ExperienceRun, epochs: int) -> dict[str, float]:
    return make_features(run.to_task(), run.to_candidate(epochs))


def _seconds_at(run: ExperienceRun, epochs: int) -> float:
    """Measured cumulative seconds after ``epochs`` (extrapolated past a run's last epoch)."""
    if epochs <= run.epochs:
        return run.curve[epochs - 1].seconds
    return run.curve[-1].seconds * epochs / run.epochs


def first_visit_regret(
    table: str = "quicktune-extended",
    folds: int = 5,
    seed: int = 0,
    budgets: Sequence[float] = DEFAULT_BUDGETS_SECONDS,
    true_time: bool = False,
    max_iter: int = 200,
    learning_rate: float = 0.1,
    l2_regularization: float = 1.0,
) -> dict[float, list[float]]:
    """Regret (points) of every held-out (task, budget), per budget."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.feature_extraction import DictVectorizer

    by_task = load_named_table(table).by_task()
    regrets: dict[float, list[float]] = {b: [] for b in budgets}
    for held_out in _split_folds(sorted(by_task), folds, seed):
        rows, accuracy, seconds, task_of = [], [], [], []
        for task_id, runs in by_task.items():
            if task_id in held_out:
                continue
            for run in runs:
                for point in sample_curve(run.curve):
                    rows.append(_features(run, point.epoch))
                    accuracy.append(point.accuracy)
                    seconds.append(point.seconds)
                    task_of.append(task_id)
        y = np.asarray(accuracy)
        tasks = np.asarray(task_of)
        for task_id in set(task_of):
            mine = tasks == task_id
            y[mine] = (y[mine] - y[mine].mean()) / max(y[mine].std(), 1e-9)
        vectorizer = DictVectorizer(sparse=False)
        X = vectorizer.fit_transform(rows)

        settings = {"max_iter": max_iter, "learning_rate": learning_rate,
                    "l2_regularization": l2_regularization, "random_state": 0}
        accuracy_model = HistGradientBoostingRegressor(**settings).fit(X, y)
        time_model = None if true_time else HistGradientBoostingRegressor(**settings).fit(X, np.log(seconds))
        for task_id in held_out:
            runs = by_task[task_id]
            grid = [(i, e) for i in range(len(runs)) for e in CURVE_SAMPLE_EPOCHS]
            T = vectorizer.transform([_features(runs[i], e) for i, e in grid])
            predicted = accuracy_model.predict(T)
            if time_model is None:
                needed = np.array([_seconds_at(runs[i], e) for i, e in grid])
            else:
                needed = np.exp(time_model.predict(T))
            for budget in budgets:
                fits = needed <= budget
                pick = int(np.argmax(np.where(fits, predicted, -np.inf))) if fits.any() else int(np.argmin(needed))
                oracle = max(r.outcome_within(budget)[0] for r in runs)
                regrets[budget].append(oracle - runs[grid[pick][0]].outcome_within(budget)[0])
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
    args = parser.parse_args(argv)
    started = time.perf_counter()
    regrets = first_visit_regret(args.table, args.folds, args.seed, true_time=args.true_time,
                                 max_iter=args.max_iter, learning_rate=args.learning_rate, l2_regularization=args.l2)
    means = [statistics.fmean(v) for v in regrets.values()]
    cells = " / ".join(f"{m:.1f}" for m in means)
    print(f"first-visit regret {cells} (mean {statistics.fmean(means):.1f}) "
          f"| {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
