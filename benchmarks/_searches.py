"""Search baselines of the replay: run configurations of a task's pool one after another.

:class:`AnytimeSearch` has one abstract method, :meth:`AnytimeSearch.search`, which spends up
to a horizon of seconds on one task and returns the trajectory of the best accuracy found
against the seconds spent; the result at any budget is read off that trajectory.
"""

from __future__ import annotations

import abc
import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptor_service import ExperienceRun, HpSpace

__all__ = ["AnytimeSearch", "HyperbandSearch", "TPESearch", "Trajectory"]



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
