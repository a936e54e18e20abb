"""Online predictors of fine-tuning accuracy and time, River-shaped.

Both predictors take the flat feature dict made by :func:`make_features` and learn with
``learn_one(x, y)``; ``predict_one(x)`` gives the mean and ``predict_dist(x)`` the mean and a
standard deviation.

The time predictor works in log space and starts from physics: when a candidate carries a
``prior_seconds`` estimate (steps x measured step time), the model learns only the
correction ``log(seconds) - log(prior)``.

The accuracy predictor learns accuracy *relative to its task*: each task (identified by its
meta-features) keeps a running mean and spread of the accuracies seen on it, and the
regressor learns the standardised score ``(accuracy - mean) / spread``. Which run is best
for a task does not depend on the task's (unknown) level, so a new task is ranked as well
as the tasks it resembles. See docs/REPLAY.md for the measurements behind these choices.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from river import base, linear_model, stats

from adaptor_service._estimators import BatchRefitRegressor, _mean_std, _mean_std_many
from adaptor_service._fast_trees import fits_outside
from adaptor_service._features import (
    CandidateBlock,
    FeatureIndex,
    FeatureRows,
    _task_key,
    cross_features,
    make_features,
    task_features,
)
from adaptor_service._time_prior import ModelTimePrior, TimeSamples

__all__ = [
    "AccuracyPredictor",
    "BatchRefitRegressor",
    "CandidateBlock",
    "FeatureIndex",
    "FeatureRows",
    "ModelTimePrior",
    "TimePredictor",
    "cross_features",
    "fits_outside",
    "make_features",
    "task_features",
]


class _Params(base.Regressor):
    """A River regressor (``clone``, ``repr``, River's estimator checks) that may wrap a batch model."""

    def refit(self) -> None:
        """Refit a batch model on everything learnt (River models learn as they go: no-op)."""
        model = getattr(self, "_model", None)
        if isinstance(model, BatchRefitRegressor):
            model.refit()

    def buffered_samples(self) -> int | None:
        """Samples the batch model's training buffer holds (None for a River model: no buffer)."""
        model = getattr(self, "_model", None)
        return model.buffered_samples if isinstance(model, BatchRefitRegressor) else None


class _TaskPrior:
    """The level and spread of an unseen task: the mean over the tasks known well enough.

    Known well enough: seen ``threshold`` times, or, while none is, twice. The means are
    running means (``stats.Mean``) over the tasks in first-seen order, whose rounding depends
    on that order; the state after each task is kept, so a change to one task recomputes from
    its position on: a new task, the usual case, costs O(1) instead of a pass over all tasks.
    """

    def __init__(self, threshold: float) -> None:
        self.thresholds = (threshold, 2.0)
        self._position: dict[object, int] = {}
        self._tasks: list[tuple[float, float, float]] = []  # (n, mean, spread) per task
        # Per threshold: (count, mean level, mean spread) after each task; [0] is before any.
        self._after: tuple[list[tuple[float, float, float]], ...] = ([(0.0, 0.0, 0.0)], [(0.0, 0.0, 0.0)])
        self._dirty = 0  # the first task whose "after" states are out of date

    def update(self, key: object, var: stats.Var) -> int:
        """Task ``key``'s statistics are now ``var``; returns the task's position (first seen, 0)."""
        i = self._position.setdefault(key, len(self._tasks))
        entry = (var.mean.n, var.mean.get(), math.sqrt(var.get()))
        if i == len(self._tasks):
            self._tasks.append(entry)
        else:
            self._tasks[i] = entry
        self._dirty = min(self._dirty, i)
        return i

    def get(self) -> tuple[float, float, float]:
        """(number of tasks averaged, mean level, mean spread)."""
        start = self._dirty
        for after, threshold in zip(self._after, self.thresholds, strict=True):
            del after[start + 1 :]
            count, level, spread = after[-1]
            for n, mean, std in itertools.islice(self._tasks, start, None):
                if n >= threshold:
                    # stats.Mean.update's arithmetic, so the result is the very same float.
                    count += 1.0
                    level += (1.0 / count) * (mean - level)
                    spread += (1.0 / count) * (std - spread)
                after.append((count, level, spread))
        self._dirty = len(self._tasks)
        well, any_two = self._after[0][-1], self._after[1][-1]
        return well if well[0] else any_two


def _default_accuracy_regressor(seed: int, window: int) -> base.Regressor:
    return BatchRefitRegressor(
        max_iter=200,
        learning_rate=0.1,
        growth=1.5,
        starter=linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0),
        seed=seed,
        window=window,
    )


class AccuracyPredictor(_Params):
    """Predicts the validation accuracy (percent) of a run after a number of epochs.

    Parameters
    ----------
    regressor
        A River regressor learning the task-standardised accuracy; it is cloned, never
        modified. Ensembles (e.g. ``forest.ARFRegressor``) give their spread as uncertainty,
        ``BatchRefitRegressor`` the spread of its bootstrap members. ``None``: the default,
        ``BatchRefitRegressor(max_iter=200, learning_rate=0.1, growth=1.5)`` (gradient
        boosting refit each time the data grows by half, on targets restandardised at each
        refit) with a ``BayesianLinearRegression(1, 1)`` starter until its first fit (chosen
        on the replay: docs/REPLAY.md, "Measurements behind the predictors").
    normalize_by_task
        Learn ``(accuracy - task mean) / task spread`` instead of the raw accuracy.
    interactions
        Add :func:`cross_features` to the features.
    min_spread
        Floor of a task's spread (points), so a task with identical results is no division
        by zero.
    task_prior_weight
        How many observations the prior level and spread (those of the known tasks) count
        for in a task's own level and spread: a task seen a few times is standardised with
        mostly the prior, not with the mean and spread of the one or two runs picked for it
        (which would teach the model that the picked run was average). 0: the task's own
        running statistics as soon as it has two observations.
    seed
        Seeds the regressor's randomness (the default regressor has none).
    prior_accuracy
        What is predicted before anything was learned.
    window
        The most recent samples kept for refits (the default regressor's buffer and the
        samples' task and accuracy kept for restandardising): memory stays bounded.
    """

    def __init__(
        self,
        regressor: base.Regressor | None = None,
        normalize_by_task: bool = True,
        interactions: bool = False,
        min_spread: float = 2.0,
        seed: int = 0,
        prior_accuracy: float = 50.0,
        task_prior_weight: float = 30.0,
        window: int = 1_000_000,
    ) -> None:
        self.regressor = regressor
        self.normalize_by_task = normalize_by_task
        self.interactions = interactions
        self.min_spread = min_spread
        self.seed = seed
        self.prior_accuracy = prior_accuracy
        self.task_prior_weight = task_prior_weight
        self.window = window
        self._model = regressor.clone() if regressor is not None else _default_accuracy_regressor(seed, window)
        self._tasks: dict[tuple[tuple[str, float], ...], stats.Var] = {}
        self._prior = _TaskPrior(max(2.0, task_prior_weight))  # the level and spread of an unseen task
        self._residual = stats.Var()
        self._n_seen = 0
        # Each learnt sample's task (its position in _tasks) and raw accuracy, so that a
        # refit restandardises old samples with their task's current level and spread.
        self._sample_task: list[int] = []
        self._sample_accuracy: list[float] = []
        if normalize_by_task and isinstance(self._model, BatchRefitRegressor):
            self._model.set_target_source(self._standardised_targets)

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        small = BatchRefitRegressor(min_samples=10, max_iter=10)
        yield {"regressor": small}
        yield {"regressor": small, "normalize_by_task": False}
        yield {"regressor": small, "interactions": True, "task_prior_weight": 0.0}
        # A River model; not its BayesianLinearRegression, whose predictions move by about 1e-4
        # with the order of the features, which River's shuffled-features check draws at random.
        yield {"regressor": linear_model.LinearRegression()}

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_prior")  # derived from _tasks: rebuilt on load
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._prior = _TaskPrior(max(2.0, self.task_prior_weight))
        for key, var in self._tasks.items():
            self._prior.update(key, var)

    def _prior_scale(self) -> tuple[float, float]:
        count, level, spread = self._prior.get()
        if count:
            return level, max(spread, self.min_spread)
        return self.prior_accuracy, 25.0

    def _scale(self, x: Mapping[str, float]) -> tuple[float, float]:
        if not self.normalize_by_task:
            return self.prior_accuracy, 1.0
        return self._task_scale(self._tasks.get(_task_key(x)))

    def _task_scale(self, var: stats.Var | None) -> tuple[float, float]:
        n0 = self.task_prior_weight
        if var is None or var.mean.n < 2:
            return self._prior_scale()
        if n0 <= 0:
            return var.mean.get(), max(math.sqrt(var.get()), self.min_spread)
        level0, spread0 = self._prior_scale()
        n = var.mean.n
        level = (n * var.mean.get() + n0 * level0) / (n + n0)
        spread = math.sqrt((n * var.get() + n0 * spread0**2) / (n + n0))
        return level, max(spread, self.min_spread)

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        x = dict(x)
        y = float(y)
        if self.normalize_by_task:
            key = _task_key(x)
            var = self._tasks.get(key)
            if var is None:
                var = self._tasks[key] = stats.Var()
            var.update(y)
            position = self._prior.update(key, var)  # = the task's place in _tasks
            if self._retargets():
                self._sample_task.append(position)
                self._sample_accuracy.append(y)
                if len(self._sample_task) > self.window + self.window // 16:
                    del self._sample_task[: -self.window], self._sample_accuracy[: -self.window]
        level, spread = self._scale(x)
        target = (y - level) / spread
        if self.interactions:
            x = cross_features(x)
        if self._n_seen and not isinstance(self._model, BatchRefitRegressor):
            self._residual.update(target - _mean_std(self._model, x)[0])
        self._model.learn_one(x, target)
        self._n_seen += 1

    def _retargets(self) -> bool:
        return isinstance(self._model, BatchRefitRegressor) and self._model._target_source is not None

    def _standardised_targets(self) -> np.ndarray:
        """Every learnt sample's accuracy standardised with its task's current level and spread."""
        scales = np.array([self._task_scale(var) for var in self._tasks.values()]).reshape(-1, 2)
        task = np.asarray(self._sample_task, dtype=np.intp)
        return (np.asarray(self._sample_accuracy) - scales[task, 0]) / scales[task, 1]

    def _noise(self) -> float:
        """Variance of the progressive-validation residual (of the standardised target)."""
        if isinstance(self._model, BatchRefitRegressor):
            residual = self._model.progressive_residual()
            return residual.get() if residual.mean.n > 1 else 1.0
        return self._residual.get() if self._n_seen > 1 else 1.0

    def predict_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        """Mean and standard deviation of the accuracy, in points."""
        if not self._n_seen:
            return self.prior_accuracy, 25.0
        level, spread = self._scale(x)
        mean, model_std = _mean_std(self._model, cross_features(x) if self.interactions else dict(x))
        noise = self._noise()
        accuracy = min(100.0, max(0.0, level + spread * mean))
        return accuracy, spread * math.sqrt(model_std**2 + noise)

    def predict_one(self, x: Mapping[str, float]) -> float:
        return self.predict_dist(x)[0]

    def predict_many(self, xs: Sequence[Mapping[str, float]], *, same_task: bool = False) -> list[tuple[float, float]]:
        """``predict_dist`` of each feature dict (one vectorised call where possible).

        ``same_task=True`` promises that every dict has the same meta-features (the
        candidates of one request): the task's statistics are then looked up once, which
        saves about 8 us per candidate.
        """
        accuracy, std = self.predict_arrays(xs, same_task=same_task)
        return list(zip(accuracy.tolist(), std.tolist(), strict=True))

    def predict_arrays(self, xs: Sequence[Mapping[str, float]], *, same_task: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_many` as two arrays: accuracy and its standard deviation."""
        if not self._n_seen:
            return np.full(len(xs), self.prior_accuracy), np.full(len(xs), 25.0)
        scales: dict[tuple[tuple[str, float], ...], tuple[float, float]] = {}
        level = np.empty(len(xs))
        spread = np.empty(len(xs))
        if same_task and len(xs):
            level[:], spread[:] = self._scale(xs[0])
        for i, x in enumerate(() if same_task else xs):
            key = _task_key(x)
            found = scales.get(key)
            if found is None:
                found = scales[key] = self._scale(x)
            level[i], spread[i] = found
        feats = [cross_features(x) for x in xs] if self.interactions else xs
        mean, model_std = _mean_std_many(self._model, feats)  # type: ignore[arg-type]
        noise = self._noise()
        accuracy = np.clip(level + spread * mean, 0.0, 100.0)
        std = spread * np.sqrt(model_std**2 + noise)
        return accuracy, std


class TimePredictor(_Params):
    """Predicts the wall-clock seconds of a run, as a learned correction of a prior.

    With ``log_prior_seconds`` in the features (the zoo's physics prior) the prediction is
    ``prior x exp(correction(x))``. Without it, the prior is learned from the results
    (``model_prior``): :class:`ModelTimePrior`, each model's seconds per sample-epoch with
    partial pooling, so an unseen model gets the mean over models with a wider spread; its
    variance is added to the prediction's. Without either (no ``num_samples``), the model
    predicts log seconds directly. The default model works in log space: a Bayesian linear
    regression (time is close to log-linear in epochs, samples, batch size and a per-model
    constant) learns the first samples, then gradient boosting refit on a geometric schedule
    takes over (median absolute log error 0.19 instead of 0.25 on the replay).

    Parameters
    ----------
    regressor
        A River regressor of log seconds (cloned); ``None``:
        ``BatchRefitRegressor(max_iter=50, learning_rate=0.4, growth=2.0)`` (gradient
        boosting refit each time the data doubles) with a Bayesian linear regression starter
        until its first fit. On the replay it is as good as 100 trees at 0.2 (docs/BENCHMARKS.md,
        replay section) and halves the time model's share of Recommend.
    alpha, beta
        Prior precision and noise precision of the default's Bayesian linear starter.
    seed
        Seeds the regressor's randomness (the default has none).
    window
        The most recent samples the default regressor keeps for its refits (bounded memory).
    model_prior
        Learn the per-model prior for rows without the zoo's. A batch regressor's refits then
        take the correction of the prior of now, as the prior moves with each result.
    """

    def __init__(
        self,
        regressor: base.Regressor | None = None,
        alpha: float = 0.1,
        beta: float = 10.0,
        seed: int = 0,
        window: int = 1_000_000,
        model_prior: bool = True,
    ) -> None:
        self.regressor = regressor
        self.alpha = alpha
        self.beta = beta
        self.seed = seed
        self.window = window
        self.model_prior = model_prior
        self._model = (
            regressor.clone()
            if regressor is not None
            else BatchRefitRegressor(
                max_iter=50,
                learning_rate=0.4,
                growth=2.0,
                starter=linear_model.BayesianLinearRegression(alpha=alpha, beta=beta),
                seed=seed,
                window=window,
            )
        )
        self._log_residual = stats.Var()
        self._n_seen = 0
        self._prior = ModelTimePrior() if model_prior else None
        # Per learnt sample, for refits: log seconds, the fixed part of its base (zoo prior or
        # log size), log batch size and its model's place in the prior (-1: a fixed base).
        self._samples = TimeSamples()
        if self._prior is not None and isinstance(self._model, BatchRefitRegressor):
            self._model.set_target_source(self._corrections)

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        yield {"regressor": BatchRefitRegressor(min_samples=10, max_iter=10)}
        yield {"regressor": BatchRefitRegressor(min_samples=10, max_iter=10), "model_prior": False}
        yield {"regressor": linear_model.LinearRegression()}  # a River model (see AccuracyPredictor's)

    #: The feature holding the zoo's physics prior (log seconds) that the model corrects.
    BASE_FEATURE = "log_prior_seconds"

    def _base(self, x: Mapping[str, float]) -> tuple[float, float]:
        """The prior's log seconds and its variance: the zoo's (exact), the learned one, or 0."""
        zoo = x.get(self.BASE_FEATURE)
        if zoo is not None:
            return zoo, 0.0
        learned = self._prior.log_dist(x) if self._prior is not None else None
        return learned if learned is not None else (0.0, 0.0)

    def _base_arrays(self, xs: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_base` of every row, from the matrix for ``FeatureRows``."""
        if not isinstance(xs, FeatureRows):
            pairs = np.array([self._base(x) for x in xs], dtype=float).reshape(-1, 2)
            return pairs[:, 0], pairs[:, 1]
        zoo = xs.column(self.BASE_FEATURE, np.nan)
        has_zoo = ~np.isnan(zoo)
        if self._prior is None or has_zoo.all():
            return np.where(has_zoo, zoo, 0.0), np.zeros(len(xs))
        mean, var, _ = self._prior.log_dist_rows(xs)
        return np.where(has_zoo, zoo, mean), np.where(has_zoo, 0.0, var)

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        x = dict(x)
        log_seconds = math.log(max(float(y), 1e-3))
        if self._prior is not None:  # first: the regressor's refit may ask for the corrections
            # The prior, with this result, is the base: the very first result of a model (or of
            # all) is otherwise corrected from a base that knew nothing of it, which an online
            # starter, never refit, keeps.
            self._prior.learn_one(x, y)
            if isinstance(self._model, BatchRefitRegressor) and self._model._target_source is not None:
                self._samples.add(x, log_seconds, self._prior, self.window)
        target = log_seconds - self._base(x)[0]
        if self._n_seen and not isinstance(self._model, BatchRefitRegressor):
            self._log_residual.update(target - _mean_std(self._model, x)[0])
        self._model.learn_one(x, target)
        self._n_seen += 1

    def _corrections(self) -> np.ndarray:
        """Every kept sample's log seconds less its prior of now: the targets of a refit."""
        return self._samples.corrections(self._prior.pooled() if self._prior is not None else None)

    def _noise_std(self) -> float:
        """Standard deviation of the progressive-validation residual of log seconds."""
        if isinstance(self._model, BatchRefitRegressor):
            residual = self._model.progressive_residual()
            return math.sqrt(residual.get()) if residual.mean.n > 1 else 1.0
        return math.sqrt(self._log_residual.get()) if self._n_seen > 1 else 1.0

    def predict_log_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        """Mean and standard deviation of log(seconds)."""
        base_log, base_var = self._base(x)
        if not self._n_seen:
            return base_log, 1.0
        correction, spread = _mean_std(self._model, dict(x))
        noise = self._noise_std()
        return base_log + correction, math.sqrt(spread**2 + noise**2 + base_var)

    def predict_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        log_mean, log_std = self.predict_log_dist(x)
        seconds = math.exp(min(log_mean, 50.0))
        return seconds, seconds * (math.exp(min(log_std, 10.0)) - 1.0)

    def predict_one(self, x: Mapping[str, float]) -> float:
        return self.predict_dist(x)[0]

    def predict_many(self, xs: Sequence[Mapping[str, float]]) -> list[tuple[float, float]]:
        """``predict_dist`` of each feature dict (one vectorised call where possible)."""
        seconds, std = self.predict_arrays(xs)
        return list(zip(seconds.tolist(), std.tolist(), strict=True))

    def predict_arrays(self, xs: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_many` as two arrays: seconds and their standard deviation."""
        base_log, base_var = self._base_arrays(xs)
        if not self._n_seen:
            log_mean, log_std = base_log, np.ones(len(xs))
        else:
            correction, spread = _mean_std_many(self._model, xs)  # type: ignore[arg-type]
            noise = self._noise_std()
            log_mean, log_std = base_log + correction, np.sqrt(spread**2 + noise**2 + base_var)
        seconds = np.exp(np.minimum(log_mean, 50.0))
        std = seconds * (np.exp(np.minimum(log_std, 10.0)) - 1.0)
        return seconds, std
