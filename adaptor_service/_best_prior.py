"""Best-prior: the configurations that did best on past tasks, carried over by nearest neighbours.

Pools of different tasks rarely share a configuration, so "the regime with the best mean on
past tasks" is defined through hyperparameter space: at a budget, each past run scores the
percentile of its outcome within that budget among the runs of its own task (1 = best of its
task); a candidate scores the mean percentile of its ``k`` nearest past runs (:class:`HpSpace`
distance). It reads no meta-feature and no time model, so it cannot be misled by them: the
baseline a learned recommender must beat, and the fallback the hedge (``_hedge.py``) plans with
when it does not.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence

import numpy as np

from nasoa_contracts import CurvePoint, HParamValue

__all__ = ["BestPriorRanker", "HpSpace", "neighbour_means", "outcome_within"]

Config = tuple[str, Mapping[str, HParamValue]]


def outcome_within(curve: Sequence[CurvePoint], budget_seconds: float) -> float:
    """Best accuracy of the curve's points within the budget (0 when its first epoch does not fit)."""
    return max((p.accuracy for p in curve if p.seconds <= budget_seconds), default=0.0)


class HpSpace:
    """Encodes (model, hyperparameters) as vectors in [0, 1]^d for distances.

    Numbers are min-max scaled (on a log scale when they are positive and span at least two
    orders of magnitude); text values (and the model) are one-hot. Built from configurations,
    never outcomes. :meth:`covers` says whether a configuration lies inside the space.
    """

    def __init__(self, configs: Sequence[Config]) -> None:
        numeric: dict[str, list[float]] = {}
        categorical: dict[str, set[str]] = {"model": set()}
        for model, hparams in configs:
            categorical["model"].add(model)
            for key, value in hparams.items():
                if isinstance(value, str):
                    categorical.setdefault(key, set()).add(value)
                else:
                    numeric.setdefault(key, []).append(float(value))
        self.numeric: dict[str, tuple[float, float, bool]] = {}
        self._ranges: dict[str, tuple[float, float]] = {}
        for key, values in sorted(numeric.items()):
            lo, hi = min(values), max(values)
            self._ranges[key] = (lo, hi)
            if hi <= lo or key in categorical:
                continue
            use_log = lo > 0 and hi / lo >= 100
            if use_log:
                lo, hi = math.log(lo), math.log(hi)
            self.numeric[key] = (lo, hi, use_log)
        self._values = {k: frozenset(v) for k, v in categorical.items()}
        self.categorical: dict[str, tuple[str, ...]] = {
            k: tuple(sorted(v)) for k, v in sorted(categorical.items()) if len(v) > 1
        }
        self._slots: dict[tuple[str, str], int] = {}
        index = len(self.numeric)
        for key, values in self.categorical.items():
            for value in values:
                self._slots[(key, value)] = index
                index += 1
        self.dim = index

    def covers(self, model: str, hparams: Mapping[str, HParamValue]) -> bool:
        """True when every value of the configuration is inside the space's ranges and categories."""
        if model not in self._values["model"]:
            return False
        for key, value in hparams.items():
            if isinstance(value, str):
                if value not in self._values.get(key, ()):
                    return False
            else:
                lo, hi = self._ranges.get(key, (math.inf, -math.inf))
                if not lo <= float(value) <= hi:
                    return False
        return True

    def encode(self, model: str, hparams: Mapping[str, HParamValue]) -> np.ndarray:
        vector = np.zeros(self.dim)
        for i, (key, (lo, hi, use_log)) in enumerate(self.numeric.items()):
            value = hparams.get(key)
            if value is None or isinstance(value, str):
                vector[i] = 0.5
                continue
            number = float(value)
            if use_log:
                number = math.log(max(number, 1e-300))
            vector[i] = min(1.0, max(0.0, (number - lo) / (hi - lo)))
        for key in self.categorical:
            value = model if key == "model" else hparams.get(key)
            slot = self._slots.get((key, str(value)))
            if slot is not None:
                vector[slot] = 1.0
        return vector

    def encode_many(self, configs: Sequence[Config]) -> np.ndarray:
        return np.array([self.encode(m, h) for m, h in configs]).reshape(len(configs), self.dim)


def task_percentiles(outcomes: np.ndarray, tasks: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Each run's rank among its task's runs, as (rank + 1) / n (1 = best of its task).

    ``known``: the runs whose outcome is known; the others are ranked among none (NaN).
    """
    scores = np.full(len(outcomes), np.nan)
    if known is not None:
        rows = np.flatnonzero(known)
        scores[rows] = task_percentiles(outcomes[rows], tasks[rows])
        return scores
    order = np.lexsort((outcomes, tasks))  # by task, then by outcome
    sorted_tasks = tasks[order]
    starts = np.flatnonzero(np.r_[True, sorted_tasks[1:] != sorted_tasks[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    scores[order] = (rank + 1) / np.repeat(sizes, sizes)
    return scores


# Distances computed at once in :meth:`BestPriorRanker.neighbours` (8 bytes each).
_DISTANCE_BLOCK = 1 << 19


# Per ranker: (the vectors scored last, the runs known then, their neighbours). A planner
# scores the same encoded space for every task; between two learnt runs the answer is the same.
# Kept beside the ranker, not on it: the ranker is pickled into snapshots, a weak reference not.
_LAST_NEAREST: weakref.WeakKeyDictionary[BestPriorRanker, tuple[weakref.ref[np.ndarray], int, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


class BestPriorRanker:
    """Scores candidate configurations by the mean task percentile of their nearest past runs.

    ``learn_run`` adds a past run (its task, configuration and curve); ``score`` ranks
    configurations for a budget. ``space`` fixes the encoding (the replay passes the table's);
    without it the space is built from the runs seen and rebuilt when a run falls outside it.

    A run stopped before its end (a probe) is censored: at a budget beyond its last measured
    second its outcome is unknown, not its curve's best, so there it ranks among no runs and
    counts in no neighbour's mean (``extend_run`` adds its continuation).
    """

    def __init__(self, k: int = 5, space: HpSpace | None = None) -> None:
        self.k = k
        self.space = space
        self._fixed_space = space is not None
        self._configs: list[Config] = []
        self._tasks: list[str] = []
        self._curves: list[tuple[CurvePoint, ...]] = []
        self._censored: list[bool] = []
        self._buffer = np.zeros((0, space.dim if space else 0))  # encoded runs; rows beyond len() unused
        self._percentiles: dict[float, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._configs)

    def learn_run(self, task_id: str, model: str, hparams: Mapping[str, HParamValue],
                  curve: Sequence[CurvePoint], censored: bool = False) -> None:
        config = (model, dict(hparams))
        self._configs.append(config)
        self._tasks.append(task_id)
        self._curves.append(tuple(curve))
        self._censored.append(censored)
        self._percentiles.clear()
        if self.space is None or (not self._fixed_space and not self.space.covers(*config)):
            self.space = HpSpace(self._configs)
            self._buffer = self.space.encode_many(self._configs)
            return
        if len(self._buffer) < len(self._configs):  # grow geometrically: adding a run stays O(1) amortised
            grown = np.zeros((2 * len(self._configs), self.space.dim))
            grown[: len(self._configs) - 1] = self._buffer[: len(self._configs) - 1]
            self._buffer = grown
        self._buffer[len(self._configs) - 1] = self.space.encode(*config)

    def extend_run(self, index: int, points: Sequence[CurvePoint], censored: bool) -> None:
        """Add the later ``points`` of run ``index`` (a probe continued), and whether it is still censored."""
        self._curves[index] = (*self._curves[index], *points)
        self._censored[index] = censored
        self._percentiles.clear()

    @property
    def _matrix(self) -> np.ndarray:
        return self._buffer[: len(self._configs)]

    def percentiles(self, budget_seconds: float) -> np.ndarray:
        """Every known run's percentile within its task at the budget (cached until a run is added)."""
        key = float(budget_seconds)
        if key not in self._percentiles:
            outcomes = np.array([outcome_within(c, key) for c in self._curves])
            measured_to = np.array([c[-1].seconds if c else 0.0 for c in self._curves])
            known = ~np.array(self._censored, dtype=bool) | (measured_to >= key)
            self._percentiles[key] = task_percentiles(outcomes, np.array(self._tasks), known)
        return self._percentiles[key]

    def encode(self, configs: Sequence[Config]) -> np.ndarray:
        assert self.space is not None
        return self.space.encode_many(configs)

    def neighbours(self, vectors: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Indices of each vector's ``k`` nearest known runs (``mask``: per vector, the runs allowed)."""
        past = self._matrix
        k = min(self.k, len(past))
        past_norms = (past**2).sum(1)[None, :]
        out = np.empty((len(vectors), k), dtype=np.intp)
        # In blocks: the distances to every known run stay a few MB however many runs are known.
        step = max(1, _DISTANCE_BLOCK // max(len(past), 1))
        for start in range(0, len(vectors), step):
            block = vectors[start:start + step]
            dist = (block**2).sum(1)[:, None] + past_norms - 2.0 * block @ past.T
            if mask is not None:
                dist = np.where(mask[start:start + step], dist, np.inf)
            out[start:start + step] = np.argpartition(dist, k - 1, axis=1)[:, :k]
        return out

    def score(self, configs: Sequence[Config], budget_seconds: float, vectors: np.ndarray | None = None) -> np.ndarray:
        """Mean task percentile of each configuration's ``k`` nearest known runs (0.5 when none is known).

        ``vectors``: the configurations already encoded (``encode``), for callers that score
        the same configurations often.
        """
        if not self._configs:
            return np.full(len(configs), 0.5)
        if vectors is None:
            nearest = self.neighbours(self.encode(configs))
        else:
            last = _LAST_NEAREST.get(self)
            if last is not None and last[0]() is vectors and last[1] == len(self._configs):
                nearest = last[2]
            else:
                nearest = self.neighbours(vectors)
                _LAST_NEAREST[self] = (weakref.ref(vectors), len(self._configs), nearest)
        return neighbour_means(self.percentiles(budget_seconds)[nearest])


def neighbour_means(percentiles: np.ndarray) -> np.ndarray:
    """The mean of each row's known (not NaN) percentiles; 0.5 for a row with none."""
    known = ~np.isnan(percentiles)
    total = np.where(known, percentiles, 0.0).sum(-1)
    count = known.sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.5)
