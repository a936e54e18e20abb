"""The planner: predictions for every candidate of a task, then the generator's plan.

It reads the learned state (under the learner's lock) and never changes it. Feature matrices
are cached per task (everything but the budget), the candidates' own features per candidate
space, so a request costs array operations; a plan is reused while the learned state has not
changed.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from adaptor_service._candidates import CandidateSpace, CandidateTable
from adaptor_service._hedge import BEST_PRIOR
from adaptor_service._known_runs import Measured, RunKey, correct_accuracy, correct_seconds, rows_by_run
from adaptor_service._learner import Learner, accuracy_at, measured_runs, predict_candidates
from adaptor_service._predictors import CandidateBlock, FeatureRows, make_features
from adaptor_service._schedulers import RunIndex, ScheduleGenerator, ScoredCandidate
from nasoa_contracts import Candidate, CurvePoint, InvalidArgument, NotFound, Plan, Prediction, TaskSpec

__all__ = ["Planner"]

T = TypeVar("T")


class Planner:
    """Plans tasks from the learner's state with a candidate space and a schedule generator.

    ``default_margin`` is the factor on predicted time until five results have measured the
    time model's error on this stream.
    """

    def __init__(
        self,
        learner: Learner,
        candidate_space: CandidateSpace | None,
        generator: ScheduleGenerator,
        default_margin: float = 1.2,
        feature_cache_size: int = 32,
        feature_cache_bytes: int = 256 << 20,
        plan_cache_size: int = 256,
    ) -> None:
        self.learner = learner
        self.candidate_space = candidate_space
        self.generator = generator
        self.default_margin = default_margin
        self._features: _LRU[tuple[CandidateTable, FeatureRows]] = _LRU(
            feature_cache_size, max_bytes=feature_cache_bytes, weigh=_rows_bytes
        )
        self._shared: _LRU[_SpaceParts] = _LRU(8)  # per (space, models): what every task shares
        # per (space, models, ranker encoding): best-prior's configurations of the runs and their vectors
        self._encoded: _LRU[tuple[list, np.ndarray]] = _LRU(8)
        # Per (learner generation, task, models, top_k): a task planned again (Submit after its
        # Recommend) while nothing was learned gets the same plan without predicting again.
        self._plans: _LRU[Plan] = _LRU(plan_cache_size)

    @property
    def time_margin(self) -> float:
        """Safety factor on predicted time: the 90th percentile of actual/predicted over the latest results."""
        state = self.learner.state
        q90 = state.time_log_error_q90.get()
        if state.n_learned < 5 or q90 is None:  # None: no result had a measured time
            return self.default_margin
        return min(3.0, max(1.0, math.exp(q90)))

    def predict(
        self, task: TaskSpec, candidates: Sequence[Candidate], curves: Sequence[Sequence[CurvePoint]] | None = None
    ) -> list[Prediction]:
        """Predictions for ``candidates`` (one batch call per predictor), measured runs corrected.

        ``curves``: each candidate's own measured curve (by default, those learned for the task).
        """
        with self.learner.lock:
            return predict_candidates(self.learner.state, task, candidates, curves)

    def _best_prior_rows(
        self, task: TaskSpec, candidates: Sequence[Candidate], margin: float, measured: Measured | None = None,
        runs: RunIndex | None = None, key: object = None,
    ) -> np.ndarray | None:
        """Best-prior's candidates, when the hedge trusts it more than the predictors at this budget.

        The runs ``measured`` on this task compete with best-prior's: the hedge weighs two
        guesses about unmeasured runs, and a run measured on the task is no guess. With ``runs``
        (the candidates' RunIndex) each run is scored once, its encoding kept under ``key``
        (the candidates' identity) while the ranker's encoding stays the same. ``measured``
        None: looked up here, only when best-prior plans.
        """
        hedge = self.learner.state.hedge
        if hedge.decide(task.budget_seconds, margin).policy != BEST_PRIOR:
            return None
        if measured is None:
            measured = measured_runs(self.learner.state, task, candidates)
        known = np.fromiter((i for i, _, _ in measured), dtype=np.intp)
        if runs is None:
            best = hedge.best_prior_configs([(c.model, c.hparams) for c in candidates], task.budget_seconds)
            return np.union1d(best, known)
        cache_key = (key, hedge.ranker.space)  # a new encoding (a run outside the old one) is a new key
        encoded = self._encoded.get(cache_key)
        if encoded is None:
            configs = [(candidates[i].model, candidates[i].hparams) for i in runs.first_rows().tolist()]
            encoded = (configs, None if hedge.ranker.space is None else hedge.ranker.encode(configs))
            if encoded[1] is not None:
                self._encoded.put(cache_key, encoded)
        configs, vectors = encoded
        best_runs = hedge.best_prior_configs(configs, task.budget_seconds, vectors)
        best = np.flatnonzero(np.isin(runs.run, best_runs))  # every row of the chosen runs (configs[r] is run r)
        return np.union1d(best, known)

    def recommend(
        self,
        task: TaskSpec,
        candidates: Sequence[Candidate] | None = None,
        models: Sequence[str] = (),
        top_k: int = 5,
    ) -> Plan:
        if top_k < 0 or top_k > 1000:
            raise InvalidArgument(f"top_k must be between 0 and 1000, got {top_k}")
        if candidates is None or len(candidates) == 0:
            if self.candidate_space is None:
                raise InvalidArgument("no candidates given and the adaptor has no candidate space")
            key = (task, tuple(models), top_k or 5)
            # Without the state lock: plans are cached only under a settled (even) generation,
            # so a plan found under the generation read now was made from the state as it is.
            plan = self._plans.get((self.learner.generation, *key))
            return plan or self._recommend_from_space(*key)
        if models:
            known = {c.model for c in candidates}
            unknown = [m for m in models if m not in known]
            if unknown:
                raise NotFound(f"unknown model {', '.join(map(repr, unknown))} among the given candidates")
            candidates = [c for c in candidates if c.model in models]
        if not candidates:
            raise InvalidArgument("there is no candidate to choose from")
        with self.learner.lock:
            predictions = self.predict(task, candidates)
            scored = [ScoredCandidate(c, p) for c, p in zip(candidates, predictions, strict=True)]
            prior_rows = self._best_prior_rows(task, candidates, self.time_margin)
            if prior_rows is not None:
                scored = [scored[i] for i in prior_rows]
            return self.generator.choose(task, scored, self.time_margin, top_k or 5)

    def prepare(self) -> None:
        """Build what every task of the candidate space shares (its candidates, their feature
        block, their runs), so that the first requests after a start do not queue behind it."""
        if self.candidate_space is not None:
            self._space_parts((), self.candidate_space.table(TaskSpec("nasoa:prepare", 60.0)))

    def _space_parts(self, models: tuple[str, ...], candidates: CandidateTable) -> _SpaceParts:
        """The parts every task of the space (limited to ``models``) shares, built once."""
        key = (self.candidate_space, models)
        parts = self._shared.get(key)
        if parts is None:
            templates = candidates.templates
            parts = self._shared.put(
                key, _SpaceParts(CandidateBlock(templates), RunIndex.of(templates), rows_by_run(templates))
            )
        return parts

    def _task_rows(self, task: TaskSpec, models: tuple[str, ...]) -> tuple[CandidateTable, FeatureRows]:
        """The task's candidates and their feature rows, cached.

        They depend on the task only through its device class and meta-features (not its
        budget, dataset or id): tasks alike share them, and the predictions they remember.
        """
        space = self.candidate_space
        assert space is not None
        key = (space, models, task.device_class, tuple(task.meta_features.items()))
        entry = self._features.get(key)
        if entry is None:
            candidates = space.table(task, models)
            if not len(candidates):
                raise InvalidArgument("there is no candidate to choose from")
            # The candidates' own features are built once per space; a task adds its columns.
            rows = self._space_parts(models, candidates).block.rows(task, candidates.priors, candidates)
            rows.on_dicts = self._features.reweigh  # a batch model reads the matrix; others make dicts
            entry = self._features.put(key, (candidates, rows))
        return entry

    def _recommend_from_space(self, task: TaskSpec, models: tuple[str, ...], top_k: int) -> Plan:
        space = self.candidate_space
        assert space is not None
        candidates, rows = self._task_rows(task, models)
        parts = self._space_parts(models, candidates)
        generator = self.generator
        with self.learner.lock:
            generation = self.learner.generation
            state = self.learner.state
            sec, sec_std = state.time.predict_arrays(rows)
            measured: Measured = []
            if state.known_runs.of_task(task):
                measured = measured_runs(state, task, candidates, parts.rows_of_run)
                correct_seconds(measured, sec, sec_std)
            margin = self.time_margin
            # The shortlist hooks need candidates that differ in their keys (a grid may repeat a value).
            hooks = space.unique_keys
            need = generator.rows_to_score(task, sec, margin, top_k) if hooks else None
            runs = parts.runs
            prior_rows = self._best_prior_rows(task, candidates.templates, margin, measured, runs, (space, models))
            if prior_rows is not None:  # the hedge plans with best-prior: its rows, no shortlist
                need, hooks = prior_rows, False
            need, acc, acc_std = self._accuracy_of(task, candidates, rows, need)
            if measured:  # positions in the rows predicted
                position = np.full(len(candidates), -1)
                position[need] = np.arange(len(need))
                measured = [(int(position[i]), c, curve) for i, c, curve in measured if position[i] >= 0]
                correct_accuracy(measured, acc, acc_std, accuracy_at(state, task))
            picked = None
            if hooks:
                picked = generator.shortlist(task, acc, acc_std, sec[need], margin, top_k, runs.take(need))
            if picked is None:
                picked = np.arange(len(need))
            index = need[picked]
            columns = (acc[picked].tolist(), acc_std[picked].tolist(), sec[index].tolist(), sec_std[index].tolist())
            scored = [
                ScoredCandidate(candidates[i], Prediction(*p))
                for i, p in zip(index.tolist(), zip(*columns, strict=True), strict=True)
            ]
            plan = generator.choose(task, scored, margin, top_k)
            if generator.repeatable and generation % 2 == 0 and self.learner.generation == generation:
                self._plans.put((generation, task, models, top_k), plan)  # made from one state throughout
            return plan

    def _accuracy_of(
        self, task: TaskSpec, candidates: CandidateTable, rows: FeatureRows, need: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows predicted, accuracy, its std): the rows ``need`` (None: all) unless a prediction is NaN."""
        accuracy = self.learner.state.accuracy
        if need is not None and len(need) < len(rows):
            part = rows.take(need, make_features(task, candidates[int(need[0])]))
            acc, acc_std = accuracy.predict_arrays(part, same_task=True)
            if np.isfinite(acc).all() and np.isfinite(acc_std).all():
                return need, acc, acc_std
            # NaN: the generator sees every candidate, as it orders NaN its own way
        acc, acc_std = accuracy.predict_arrays(rows, same_task=True)
        return np.arange(len(rows)), acc, acc_std


class _SpaceParts(NamedTuple):
    """What every task of a candidate space shares."""

    block: CandidateBlock  # the candidates' own features
    runs: RunIndex  # each candidate's run, for the shortlist and best-prior
    rows_of_run: dict[RunKey, list[int]]  # each run's candidates, for the measured runs


class _LRU(Generic[T]):
    """A small thread-safe LRU cache (tasks' feature rows, candidate blocks).

    At most ``size`` entries and, with ``weigh``, at most ``max_bytes`` in all: a value
    heavier than that alone is returned but not kept.
    """

    def __init__(self, size: int, max_bytes: int = 0, weigh: Callable[[T], int] | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._bytes = 0
        self._items: collections.OrderedDict[object, tuple[T, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: object) -> T | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: object, value: T) -> T:
        weight = self._weigh(value) if self._weigh is not None else 0
        with self._lock:
            if self.size <= 0 or (self.max_bytes and weight > self.max_bytes):
                return value
            old = self._items.pop(key, None)
            self._bytes += weight - (old[1] if old else 0)
            self._items[key] = (value, weight)
            self._evict()
            return value

    def reweigh(self) -> None:
        """Weigh every entry again (a value grew since it was put), evicting the oldest if need be."""
        if self._weigh is None:
            return
        with self._lock:
            for key, (value, _) in self._items.items():
                self._items[key] = (value, self._weigh(value))
            self._bytes = sum(weight for _, weight in self._items.values())
            self._evict()

    def _evict(self) -> None:
        while len(self._items) > self.size or (self.max_bytes and self._bytes > self.max_bytes):
            self._bytes -= self._items.popitem(last=False)[1][1]


# A River model (and the starter before the first batch fit) reads the rows as dicts, which
# the rows then keep: measured at about four times the matrix (5,040 candidates x 50 features).
_DICTS_PER_MATRIX_BYTE = 4


def _rows_bytes(entry: tuple[CandidateTable, FeatureRows]) -> int:
    """The memory a task's cached feature rows hold: matrix, mask, and the dicts once made, roughly."""
    rows = entry[1]
    matrix = int(rows.values.nbytes)
    dicts = matrix * _DICTS_PER_MATRIX_BYTE if rows.holds_dicts else 0
    return matrix + dicts + int(rows.present.nbytes) + 64 * len(entry[0])
