"""Policies the replay compares, behind two small interfaces.

:class:`Policy` (one-shot: picks one run per request) has one abstract method,
:meth:`Policy.choose`; :meth:`Policy.warm_start` and :meth:`Policy.observe` default to doing
nothing. A policy never sees outcomes through ``choose``: the request carries the task's
meta-features, the budget and the candidate runs' model and hyperparameters only (the
oracle is the one exception, and says so). Policies are not thread safe; the replay
deep-copies a warm-started policy for each order of the stream.

:class:`AnytimeSearch` (search baselines: run configurations one after another) has one
abstract method, :meth:`AnytimeSearch.search`, which spends up to a horizon of seconds on one
task and returns the trajectory of the best accuracy found against the seconds spent; the
result at any budget is read off that trajectory.
"""

from __future__ import annotations

import abc
import bisect
import logging
import math
import random
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptor_service._experience import (
    CURVE_SAMPLE_EPOCHS,
    ExperienceRun,
    runs_to_observations,
    sample_curve,
)
from nasoa_contracts import Candidate, CurvePoint, HParamValue, Observation, TaskSpec

__all__ = [
    "AnytimeSearch",
    "BestPriorPolicy",
    "HyperbandSearch",
    "HpSpace",
    "NasoaPolicy",
    "OraclePolicy",
    "Outcome",
    "Policy",
    "RandomPolicy",
    "Request",
    "RunOption",
    "TPESearch",
    "Trajectory",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class RunOption:
    """What a policy sees of a candidate run: its configuration, never its outcome."""

    run_id: str
    model: str
    hparams: Mapping[str, HParamValue]


@dataclass(frozen=True)
class Request:
    """One (task, budget) request of the stream."""

    task_id: str
    meta_features: Mapping[str, float]
    budget_seconds: float
    options: tuple[RunOption, ...]
    first_visit: bool = True

    def task_spec(self) -> TaskSpec:
        return TaskSpec(
            dataset_uri=f"experience:{self.task_id}",
            budget_seconds=self.budget_seconds,
            meta_features=dict(self.meta_features),
            task_id=self.task_id,
        )


@dataclass(frozen=True)
class Outcome:
    """What running the chosen run within the budget gave: best accuracy, seconds, curve."""

    run_id: str
    accuracy: float
    seconds: float
    curve: tuple[CurvePoint, ...]


# ---------------------------------------------------------------------- hyperparameters


class HpSpace:
    """Encodes (model, hyperparameters) as vectors in [0, 1]^d for distances.

    Numbers are min-max scaled (on a log scale when they are positive and span at least two
    orders of magnitude); text values (and the model) are one-hot. Built from the
    configurations of a table, never its outcomes.
    """

    def __init__(self, configs: Sequence[tuple[str, Mapping[str, HParamValue]]]) -> None:
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
        for key, values in sorted(numeric.items()):
            lo, hi = min(values), max(values)
            if hi <= lo or key in categorical:
                continue
            use_log = lo > 0 and hi / lo >= 100
            if use_log:
                lo, hi = math.log(lo), math.log(hi)
            self.numeric[key] = (lo, hi, use_log)
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

    def encode_options(self, options: Sequence[RunOption]) -> np.ndarray:
        return np.array([self.encode(o.model, o.hparams) for o in options]).reshape(len(options), self.dim)


# ------------------------------------------------------------------------------ one-shot


class Policy(abc.ABC):
    """Picks one candidate run per request (Optuna's sampler shape).

    Contract: ``choose`` returns an index into ``request.options``; it must not modify the
    request. ``observe`` receives the outcome of that choice (online learning). All
    randomness comes from ``seed``.
    """

    name: str = "policy"

    def warm_start(self, runs: Sequence[ExperienceRun]) -> None:  # noqa: B027
        """Learn from past runs (all their curves) before the stream. Default: nothing."""

    @abc.abstractmethod
    def choose(self, request: Request) -> int:
        """Index of the chosen run in ``request.options``."""

    def observe(self, request: Request, choice: int, outcome: Outcome) -> None:  # noqa: B027
        """Learn from the outcome of the chosen run. Default: nothing."""


class RandomPolicy(Policy):
    """A run drawn uniformly at random."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def choose(self, request: Request) -> int:
        return self._rng.randrange(len(request.options))


class OraclePolicy(Policy):
    """The run with the best outcome within the budget, in hindsight (reads outcomes)."""

    name = "oracle"

    def __init__(self, runs: Sequence[ExperienceRun]) -> None:
        self._runs = {(r.task_id, r.run_id): r for r in runs}

    def choose(self, request: Request) -> int:
        scores = [
            self._runs[(request.task_id, o.run_id)].outcome_within(request.budget_seconds)[0]
            for o in request.options
        ]
        return int(np.argmax(scores))


class BestPriorPolicy(Policy):
    """The most successful model and regime so far, carried over by nearest neighbours.

    Pools of different tasks share no configuration, so "the best default so far" is
    defined through hyperparameter space: each past run gets a score for the request's
    budget, the percentile of its outcome within that budget among the runs known for its
    task (1 = best of its task). A candidate's score is the mean score of its ``k`` nearest
    past runs (distance in :class:`HpSpace`); the best-scoring candidate is picked. It learns
    from the warm start and from each observed outcome (a partial curve, ranked with what
    is known of its task). It ignores the task's meta-features.
    """

    name = "best-prior"

    def __init__(self, space: HpSpace, k: int = 5, seed: int = 0) -> None:
        self.space = space
        self.k = k
        self.seed = seed
        self._runs: list[ExperienceRun] = []
        self._vectors: list[np.ndarray] = []
        self._cache: dict[float, np.ndarray] = {}

    def _add(self, run: ExperienceRun) -> None:
        self._runs.append(run)
        self._vectors.append(self.space.encode(run.model, run.hparams))
        self._cache.clear()

    def warm_start(self, runs: Sequence[ExperienceRun]) -> None:
        for run in runs:
            self._add(run)

    def _scores(self, budget: float) -> np.ndarray:
        if budget not in self._cache:
            outcome = np.array([r.outcome_within(budget)[0] for r in self._runs])
            tasks = np.array([r.task_id for r in self._runs])
            scores = np.zeros(len(self._runs))
            for task in np.unique(tasks):
                idx = np.flatnonzero(tasks == task)
                ranks = outcome[idx].argsort().argsort()
                scores[idx] = (ranks + 1) / len(idx)
            self._cache[budget] = scores
        return self._cache[budget]

    def choose(self, request: Request) -> int:
        if not self._runs:
            return 0
        scores = self._scores(request.budget_seconds)
        past = np.array(self._vectors)
        options = self.space.encode_options(request.options)
        dist = ((options[:, None, :] - past[None, :, :]) ** 2).sum(-1)
        k = min(self.k, len(self._runs))
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        return int(np.argmax(scores[nearest].mean(1)))

    def observe(self, request: Request, choice: int, outcome: Outcome) -> None:
        option = request.options[choice]
        if outcome.curve:
            self._add(
                ExperienceRun(
                    request.task_id, option.run_id, option.model, request.meta_features,
                    option.hparams, outcome.curve,
                )
            )


class NasoaPolicy(Policy):
    """NASOA: the service's :class:`Adaptor` (predictors and one-shot schedule generator).

    Each candidate run is offered at the epochs of ``epoch_grid``; the adaptor predicts the
    accuracy and time of each, and its generator picks the best predicted accuracy that fits
    the budget. The picked run then runs until its last epoch that fits the budget (the
    replay's outcome is its best accuracy within the budget, its seconds those of that
    epoch), and its curve up to the budget is observed.

    ``adaptor_factory(snapshot_path)`` builds a fresh adaptor (the default makes
    ``Adaptor.in_memory()`` with the default predictors and the one-shot generator). A copy
    of the policy (``copy.deepcopy``) goes through the adaptor's own snapshot: the learned
    state is written once and each copy restores it, as a restarted service would.
    """

    name = "nasoa"

    def __init__(
        self,
        adaptor_factory: Callable[[Path | None], Any] | None = None,
        epoch_grid: Sequence[int] = CURVE_SAMPLE_EPOCHS,
        seed: int = 0,
    ) -> None:
        self.adaptor_factory = adaptor_factory
        self.epoch_grid = tuple(epoch_grid)
        self.seed = seed
        workdir = tempfile.mkdtemp(prefix="nasoa-replay-")
        weakref.finalize(self, shutil.rmtree, workdir, True)  # removed with the policy
        self._snapshot = Path(workdir) / "adaptor.pkl"
        self._adaptor = self._factory()(self._snapshot)
        self._n_observed = 0

    def _factory(self) -> Callable[[Path | None], Any]:
        return self.adaptor_factory or default_adaptor_factory(self.seed)

    @property
    def adaptor(self) -> Any:
        return self._adaptor

    def __deepcopy__(self, memo: dict[int, object]) -> NasoaPolicy:
        self._adaptor.snapshot()
        twin = NasoaPolicy(self.adaptor_factory, self.epoch_grid, self.seed)
        shutil.copyfile(self._snapshot, twin._snapshot)
        twin._adaptor = twin._factory()(twin._snapshot)  # restores the snapshot
        twin._n_observed = self._n_observed
        return twin

    def _candidates(self, request: Request) -> tuple[list[Candidate], dict[str, int]]:
        candidates = []
        index: dict[str, int] = {}
        for i, option in enumerate(request.options):
            for epochs in self.epoch_grid:
                candidate = Candidate(option.model, dict(option.hparams), epochs=epochs)
                candidates.append(candidate)
                index.setdefault(candidate.key, i)
        return candidates, index

    def warm_start(self, runs: Sequence[ExperienceRun]) -> None:
        self._adaptor.warm_start(runs_to_observations(runs))

    def choose(self, request: Request) -> int:
        candidates, index = self._candidates(request)
        plan = self._adaptor.recommend(request.task_spec(), candidates)
        return index[plan.candidate.key]

    def observe(self, request: Request, choice: int, outcome: Outcome) -> None:
        if not outcome.curve:
            return  # not even one epoch fitted: nothing was measured
        option = request.options[choice]
        curve = sample_curve(outcome.curve, self.epoch_grid)
        self._n_observed += 1
        observation = Observation(
            job_id=f"replay-{self._n_observed}-{request.task_id}-{option.run_id}",
            task=request.task_spec(),
            candidate=Candidate(option.model, dict(option.hparams), epochs=curve[-1].epoch),
            accuracy=curve[-1].accuracy,
            seconds=curve[-1].seconds,
            curve=curve,
        )
        self._adaptor.observe(observation)


def default_adaptor_factory(seed: int = 0) -> Callable[[Path | None], Any]:
    """``Adaptor.in_memory`` with the one-shot generator and the default predictors."""

    def make(snapshot_path: Path | None) -> Any:
        from adaptor_service._adaptor import Adaptor  # lazy: the service is heavy
        from adaptor_service._predictors import AccuracyPredictor, TimePredictor
        from adaptor_service._schedulers import OneShotGenerator

        return Adaptor.in_memory(
            generator=OneShotGenerator(seed=seed),
            accuracy_predictor=AccuracyPredictor(seed=seed),
            time_predictor=TimePredictor(seed=seed),
            snapshot_path=snapshot_path,
            snapshot_every=10**9,  # only when a copy is made
            validate_requests=False,  # tasks and runs of experience tables, not service requests
        )

    return make


# -------------------------------------------------------------------------- search baselines


@dataclass(frozen=True)
class Trajectory:
    """Best accuracy found against seconds spent by a search on one task.

    ``seconds`` is increasing; ``best[i]`` is the best accuracy known after ``seconds[i]``.
    """

    seconds: tuple[float, ...]
    best: tuple[float, ...]
    trials: int = 0
    horizon: float = 0.0

    def best_within(self, budget_seconds: float) -> float:
        i = bisect.bisect_right(self.seconds, budget_seconds)
        return self.best[i - 1] if i else 0.0

    def time_to_reach(self, accuracy: float) -> float:
        """Seconds until the best accuracy is >= ``accuracy`` (inf if never)."""
        for seconds, best in zip(self.seconds, self.best, strict=True):
            if best >= accuracy:
                return seconds
        return math.inf


@dataclass
class _Recorder:
    horizon: float
    spent: float = 0.0
    best: float = 0.0
    times: list[float] = field(default_factory=list)
    bests: list[float] = field(default_factory=list)

    def epoch(self, seconds: float, accuracy: float) -> bool:
        """Account one epoch; False when it does not fit the horizon (search over)."""
        if self.spent + seconds > self.horizon:
            self.spent = self.horizon
            return False
        self.spent += seconds
        if accuracy > self.best:
            self.best = accuracy
            self.times.append(self.spent)
            self.bests.append(accuracy)
        return True

    def trajectory(self, trials: int) -> Trajectory:
        return Trajectory(tuple(self.times), tuple(self.bests), trials, self.horizon)


class AnytimeSearch(abc.ABC):
    """A hyperparameter search run on one task's pool of runs, one run after another."""

    name: str = "search"

    @abc.abstractmethod
    def search(self, pool: Sequence[ExperienceRun], horizon_seconds: float, seed: int) -> Trajectory:
        """Search ``pool`` for up to ``horizon_seconds``; return the best-so-far trajectory."""


class _PoolLookup:
    """Maps a sampled configuration to the nearest untried run of the pool (tabular HPO)."""

    def __init__(self, pool: Sequence[ExperienceRun], space: HpSpace) -> None:
        self.pool = list(pool)
        self.space = space
        self.matrix = np.array([space.encode(r.model, r.hparams) for r in self.pool])
        self.untried = np.ones(len(self.pool), dtype=bool)

    def distributions(self) -> dict[str, object]:
        import optuna

        dists: dict[str, object] = {}
        for key, (lo, hi, use_log) in self.space.numeric.items():
            if use_log:
                dists[key] = optuna.distributions.FloatDistribution(math.exp(lo), math.exp(hi), log=True)
            else:
                dists[key] = optuna.distributions.FloatDistribution(lo, hi)
        for key, values in self.space.categorical.items():
            dists[key] = optuna.distributions.CategoricalDistribution(values)
        return dists

    def nearest(self, params: Mapping[str, object]) -> ExperienceRun | None:
        if not self.untried.any():
            return None
        model = str(params.get("model", ""))
        hparams = {k: v for k, v in params.items() if k != "model"}
        vector = self.space.encode(model, hparams)  # type: ignore[arg-type]
        dist = ((self.matrix - vector) ** 2).sum(1)
        dist[~self.untried] = np.inf
        i = int(np.argmin(dist))
        self.untried[i] = False
        return self.pool[i]


class TPESearch(AnytimeSearch):
    """Optuna TPE: sample a configuration, run it to the end, tell its best accuracy, repeat.

    The search space is :class:`HpSpace` (numbers as ranges, text as categories); each
    sample runs the nearest untried run of the pool.
    """

    name = "tpe"

    def __init__(self, space: HpSpace, n_startup_trials: int = 10) -> None:
        self.space = space
        self.n_startup_trials = n_startup_trials

    def search(self, pool: Sequence[ExperienceRun], horizon_seconds: float, seed: int) -> Trajectory:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        lookup = _PoolLookup(pool, self.space)
        dists = lookup.distributions()
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials),
        )
        recorder = _Recorder(horizon_seconds)
        trials = 0
        while recorder.spent < horizon_seconds:
            trial = study.ask(dists)  # type: ignore[arg-type]
            run = lookup.nearest(trial.params)
            if run is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                break
            trials += 1
            best, previous, done = 0.0, 0.0, True
            for point in run.curve:
                if not recorder.epoch(point.seconds - previous, point.accuracy):
                    done = False
                    break
                previous = point.seconds
                best = max(best, point.accuracy)
            study.tell(trial, best)
            if not done:
                break
        return recorder.trajectory(trials)


class HyperbandSearch(AnytimeSearch):
    """BOHB-style: Optuna TPE with its HyperbandPruner (resource = epochs).

    Each trial runs the nearest untried run epoch by epoch, reporting its accuracy; the
    pruner stops unpromising ones early. Every epoch run costs its measured seconds.
    """

    name = "hyperband"

    def __init__(
        self, space: HpSpace, max_resource: int = 50, reduction_factor: int = 3,
        n_startup_trials: int = 10,
    ) -> None:
        self.space = space
        self.max_resource = max_resource
        self.reduction_factor = reduction_factor
        self.n_startup_trials = n_startup_trials

    def search(self, pool: Sequence[ExperienceRun], horizon_seconds: float, seed: int) -> Trajectory:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        lookup = _PoolLookup(pool, self.space)
        dists = lookup.distributions()
        study = optuna.create_study(
            # The pruner assigns brackets by a hash of the study name: a fixed name keeps
            # runs reproducible (the default name is a random uuid).
            study_name=f"hyperband-seed-{seed}",
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials),
            pruner=optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=self.max_resource, reduction_factor=self.reduction_factor
            ),
        )
        recorder = _Recorder(horizon_seconds)
        trials = 0
        while recorder.spent < horizon_seconds:
            trial = study.ask(dists)  # type: ignore[arg-type]
            run = lookup.nearest(trial.params)
            if run is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                break
            trials += 1
            best, previous, out_of_time, pruned = 0.0, 0.0, False, False
            for point in run.curve:
                if not recorder.epoch(point.seconds - previous, point.accuracy):
                    out_of_time = True
                    break
                previous = point.seconds
                best = max(best, point.accuracy)
                trial.report(point.accuracy, point.epoch)
                if trial.should_prune():
                    pruned = True
                    break
            if pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, best)
            if out_of_time:
                break
        return recorder.trajectory(trials)
