"""The time model alone on held-out tasks: its error and how often its spread covers it.

A development tool beside :mod:`benchmarks._predictor_lab`. For each fold (the replay's split),
a fresh ``TimePredictor`` learns every curve point (the replay's epoch grid) of the other folds'
runs in a shuffled order and refits; it then predicts every point of the held-out tasks' runs.
With ``leave_family_out``, the warm start leaves out the largest model family (the suite's
variant (e)) and only that family's points are scored: models the predictor never saw.

Run it as::

    python -m benchmarks._time_error --tables quicktune-extended,synthetic,e-family-out --folds 3 [--no-model-prior]

Each line: the held-out points, the median and mean absolute error of log seconds, and the
share of points within 1.645 predicted log standard deviations (90 % if the spread is right).
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptor_service import ExperienceRun, ExperienceTable, TimePredictor, make_features, sample_curve
from benchmarks._replay import _split_folds, load_named_table
from benchmarks._suite import VARIANTS, model_family
from nasoa_contracts import Candidate, TaskSpec

__all__ = ["TimeError", "time_error"]


@dataclass(frozen=True)
class TimeError:
    points: int
    median_log_error: float
    mean_log_error: float
    coverage_90: float  #: share of points within 1.645 predicted log standard deviations

    def line(self, name: str) -> str:
        return (f"{name}: {self.points} held-out points, |log error| median {self.median_log_error:.3f}, "
                f"mean {self.mean_log_error:.3f}, within the 90 % band {self.coverage_90:.2f}")


def _features(run: ExperienceRun, epochs: int) -> dict[str, float]:
    task = TaskSpec(f"experience:{run.task_id}", 1.0, dict(run.meta), task_id=run.task_id)
    return make_features(task, Candidate(run.model, dict(run.hparams), epochs=epochs))


def time_error(
    table: ExperienceTable, folds: int = 3, seed: int = 0, leave_family_out: bool = False, model_prior: bool = True
) -> TimeError:
    """The default ``TimePredictor``'s held-out error on ``table`` (see the module's docstring).

    ``model_prior=False``: without the learned per-model prior (``TimePredictor(model_prior=False)``).
    """
    by_task = table.by_task()
    family = Counter(model_family(r.model) for r in table.runs).most_common(1)[0][0] if leave_family_out else None
    errors, spreads = [], []
    for fold, held_out in enumerate(_split_folds(sorted(by_task), folds, seed)):
        held = set(held_out)
        past = [r for r in table.runs if r.task_id not in held and model_family(r.model) != family]
        random.Random(seed * 7919 + fold).shuffle(past)
        predictor = TimePredictor(seed=seed, model_prior=model_prior)
        for run in past:
            for point in sample_curve(run.curve):
                if point.seconds > 0:
                    predictor.learn_one(_features(run, point.epoch), point.seconds)
        predictor.refit()
        scored = [(run, point) for task in held_out for run in by_task[task] for point in sample_curve(run.curve)
                  if point.seconds > 0 and (family is None or model_family(run.model) == family)]
        seconds, std = predictor.predict_arrays([_features(run, point.epoch) for run, point in scored])
        errors.append(np.log(np.array([point.seconds for _, point in scored]) / seconds))
        spreads.append(np.log1p(std / seconds))  # predict_dist's std = seconds x (exp(log std) - 1)
    error, spread = np.abs(np.concatenate(errors)), np.concatenate(spreads)
    return TimeError(len(error), float(np.median(error)), float(error.mean()), float(np.mean(error <= 1.645 * spread)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="quicktune-extended",
                        help="comma-separated: quicktune-extended, a table path, or a suite variant")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-model-prior", action="store_true", help="without the learned per-model time prior")
    args = parser.parse_args(argv)
    for name in args.tables.split(","):
        variant = VARIANTS.get(name)
        table = variant.build() if variant is not None else load_named_table(name)
        leave_out = variant is not None and variant.leave_family_out
        print(time_error(table, args.folds, args.seed, leave_out, not args.no_model_prior).line(name), flush=True)


if __name__ == "__main__":
    main()
