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

import math
from collections.abc import Mapping, Sequence

from river import base, linear_model, stats

from adaptor_service._types import Candidate, TaskSpec

Features = dict[str, float]

__all__ = ["AccuracyPredictor", "TimePredictor", "cross_features", "make_features"]

_LOG_HPARAMS = ("lr", "batch_size", "weight_decay", "warmup_lr")


def make_features(task: TaskSpec, candidate: Candidate) -> Features:
    """Flatten a (task, candidate) pair into numeric features.

    Categorical values are one-hot (``hp.optimizer=sgd: 1.0``); numbers are kept, and sizes
    that span orders of magnitude get a log copy. ``log_steps`` (log of epochs x samples /
    batch size) is the physics of training time.

    >>> t = TaskSpec("builtin:digits", 30, {"num_samples": 1000.0, "num_classes": 10.0})
    >>> c = Candidate("etnas-s", {"lr": 0.01, "optimizer": "sgd"}, epochs=2, prior_seconds=5.0)
    >>> f = make_features(t, c)
    >>> f["hp.optimizer=sgd"], f["model=etnas-s"], round(f["log_epochs"], 3)
    (1.0, 1.0, 0.693)
    """
    x: Features = {"epochs": float(candidate.epochs), "log_epochs": math.log(candidate.epochs)}
    log_samples = 0.0
    for key, value in task.meta_features.items():
        x[f"meta.{key}"] = float(value)
        if key in ("num_samples", "num_classes") and value > 0:
            x[f"meta.log_{key}"] = math.log(value)
    if task.meta_features.get("num_samples", 0) > 0:
        log_samples = math.log(task.meta_features["num_samples"])
        if task.meta_features.get("num_classes", 0) > 0:
            x["meta.log_samples_per_class"] = log_samples - math.log(task.meta_features["num_classes"])
    log_batch = 0.0
    for key, value in candidate.hparams.items():
        if isinstance(value, str):
            x[f"hp.{key}={value}"] = 1.0
        else:
            x[f"hp.{key}"] = float(value)
            if key in _LOG_HPARAMS and value > 0:
                x[f"hp.log_{key}"] = math.log(float(value))
                if key == "batch_size":
                    log_batch = math.log(float(value))
    if log_samples:
        x["log_steps"] = x["log_epochs"] + log_samples - log_batch
    x[f"model={candidate.model}"] = 1.0
    for key, value in candidate.model_features.items():
        x[f"model.{key}"] = float(value)
    if candidate.prior_seconds is not None and candidate.prior_seconds > 0:
        x["log_prior_seconds"] = math.log(candidate.prior_seconds)
    return x


def _task_key(x: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """The task a feature dict belongs to: its meta-features."""
    return tuple(sorted((k, v) for k, v in x.items() if k.startswith("meta.")))


#: Continuous features crossed with every one-hot feature by ``interactions=True``.
_CROSSED = ("log_epochs", "hp.log_lr", "meta.log_num_samples", "meta.log_samples_per_class")


def cross_features(x: Mapping[str, float]) -> Features:
    """``x`` plus products of key continuous features with each one-hot (``k=v``) feature.

    A linear model on these learns, e.g., that a high learning rate hurts with one optimiser
    and not another, or that one model gains more from more epochs.

    >>> sorted(cross_features({"log_epochs": 2.0, "hp.opt=sgd": 1.0}).items())
    [('hp.opt=sgd', 1.0), ('log_epochs', 2.0), ('log_epochs*hp.opt=sgd', 2.0)]
    """
    out = dict(x)
    onehots = [k for k, v in x.items() if "=" in k and v]
    for name in _CROSSED:
        value = x.get(name)
        if value:
            for key in onehots:
                out[f"{name}*{key}"] = value * x[key]
    return out


def _members(model: base.Regressor) -> list[base.Regressor] | None:
    """The members of a River ensemble, or None for a single model."""
    if isinstance(model, list):
        return model
    try:
        members = list(model)  # type: ignore[call-overload]
    except TypeError:
        return None
    return members if members and all(isinstance(m, base.Estimator) for m in members) else None


def _mean_std(model: base.Regressor, x: Features) -> tuple[float, float]:
    """Prediction and its spread: ensemble members' spread, or a Bayesian model's sigma."""
    members = _members(model)
    if members is not None:
        preds = [m.predict_one(x) for m in members]
        mean = sum(preds) / len(preds)
        var = sum((p - mean) ** 2 for p in preds) / max(len(preds) - 1, 1)
        return mean, math.sqrt(var)
    # A single model (e.g. BayesianLinearRegression): its mean only. Its predictive sigma
    # costs a d x d quadratic form per candidate (0.5 ms at d = 100), too slow for 1,000
    # candidates; the callers add the residual spread measured by progressive validation.
    return float(model.predict_one(x)), 0.0


def _default_accuracy_regressor(seed: int) -> base.Regressor:
    return linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0)


class AccuracyPredictor:
    """Predicts the validation accuracy (percent) of a run after a number of epochs.

    Parameters
    ----------
    regressor
        A River regressor learning the task-standardised accuracy; it is cloned, never
        modified. Ensembles (e.g. ``forest.ARFRegressor``) give their spread as uncertainty,
        ``BayesianLinearRegression`` its predictive sigma. ``None``: the default model.
    normalize_by_task
        Learn ``(accuracy - task mean) / task spread`` instead of the raw accuracy.
    interactions
        Add :func:`cross_features` to the features.
    min_spread
        Floor of a task's spread (points), so a task with identical results is no division
        by zero.
    seed
        Seeds the regressor's randomness (the default regressor has none).
    prior_accuracy
        What is predicted before anything was learned.
    """

    def __init__(
        self,
        regressor: base.Regressor | None = None,
        normalize_by_task: bool = True,
        interactions: bool = False,
        min_spread: float = 2.0,
        seed: int = 0,
        prior_accuracy: float = 50.0,
    ) -> None:
        self.regressor = regressor
        self.normalize_by_task = normalize_by_task
        self.interactions = interactions
        self.min_spread = min_spread
        self.seed = seed
        self.prior_accuracy = prior_accuracy
        self._model = regressor.clone() if regressor is not None else _default_accuracy_regressor(seed)
        self._tasks: dict[tuple[tuple[str, float], ...], stats.Var] = {}
        self._levels = stats.Mean()  # mean of task means: the level of an unseen task
        self._spreads = stats.Mean()
        self._residual = stats.Var()
        self._n_seen = 0

    def _scale(self, x: Mapping[str, float]) -> tuple[float, float]:
        if not self.normalize_by_task:
            return self.prior_accuracy, 1.0
        var = self._tasks.get(_task_key(x))
        if var is not None and var.mean.n >= 2:
            return var.mean.get(), max(math.sqrt(var.get()), self.min_spread)
        if self._levels.n:
            return self._levels.get(), max(self._spreads.get(), self.min_spread)
        return self.prior_accuracy, 25.0

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        x = dict(x)
        y = float(y)
        if self.normalize_by_task:
            key = _task_key(x)
            var = self._tasks.get(key)
            if var is None:
                var = self._tasks[key] = stats.Var()
            var.update(y)
            self._levels = stats.Mean()
            self._spreads = stats.Mean()
            for v in self._tasks.values():
                if v.mean.n >= 2:
                    self._levels.update(v.mean.get())
                    self._spreads.update(math.sqrt(v.get()))
        level, spread = self._scale(x)
        target = (y - level) / spread
        if self.interactions:
            x = cross_features(x)
        if self._n_seen:
            self._residual.update(target - _mean_std(self._model, x)[0])
        self._model.learn_one(x, target)
        self._n_seen += 1

    def predict_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        """Mean and standard deviation of the accuracy, in points."""
        if not self._n_seen:
            return self.prior_accuracy, 25.0
        level, spread = self._scale(x)
        mean, model_std = _mean_std(self._model, cross_features(x) if self.interactions else dict(x))
        noise = self._residual.get() if self._n_seen > 1 else 1.0
        accuracy = min(100.0, max(0.0, level + spread * mean))
        return accuracy, spread * math.sqrt(model_std**2 + noise)

    def predict_one(self, x: Mapping[str, float]) -> float:
        return self.predict_dist(x)[0]

    def predict_many(self, xs: Sequence[Mapping[str, float]]) -> list[tuple[float, float]]:
        """``predict_dist`` of each feature dict."""
        return [self.predict_dist(x) for x in xs]


class TimePredictor:
    """Predicts the wall-clock seconds of a run, as a learned correction of a physics prior.

    With ``log_prior_seconds`` in the features the prediction is
    ``prior x exp(correction(x))``; without it, the model predicts log seconds directly.
    The default model is River's ``BayesianLinearRegression`` in log space: time is close to
    log-linear in epochs, samples, batch size and a per-model constant, and the exact
    online posterior learns it from few runs, with an uncertainty.

    Parameters
    ----------
    regressor
        A River regressor of log seconds (cloned); ``None``: Bayesian linear regression.
    alpha, beta
        Prior precision and noise precision of the default Bayesian linear regression.
    seed
        Seeds the regressor's randomness (the default has none).
    """

    def __init__(
        self,
        regressor: base.Regressor | None = None,
        alpha: float = 0.1,
        beta: float = 10.0,
        seed: int = 0,
    ) -> None:
        self.regressor = regressor
        self.alpha = alpha
        self.beta = beta
        self.seed = seed
        self._model = (
            regressor.clone()
            if regressor is not None
            else linear_model.BayesianLinearRegression(alpha=alpha, beta=beta)
        )
        self._log_residual = stats.Var()
        self._n_seen = 0

    @staticmethod
    def _base(x: Mapping[str, float]) -> float:
        return x.get("log_prior_seconds", 0.0)

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        x = dict(x)
        target = math.log(max(float(y), 1e-3)) - self._base(x)
        if self._n_seen:
            self._log_residual.update(target - _mean_std(self._model, x)[0])
        self._model.learn_one(x, target)
        self._n_seen += 1

    def predict_log_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        """Mean and standard deviation of log(seconds)."""
        if not self._n_seen:
            return self._base(x), 1.0
        correction, spread = _mean_std(self._model, dict(x))
        noise = math.sqrt(self._log_residual.get()) if self._n_seen > 1 else 1.0
        return self._base(x) + correction, math.sqrt(spread**2 + noise**2)

    def predict_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        log_mean, log_std = self.predict_log_dist(x)
        seconds = math.exp(min(log_mean, 50.0))
        return seconds, seconds * (math.exp(min(log_std, 10.0)) - 1.0)

    def predict_one(self, x: Mapping[str, float]) -> float:
        return self.predict_dist(x)[0]

    def predict_many(self, xs: Sequence[Mapping[str, float]]) -> list[tuple[float, float]]:
        """``predict_dist`` of each feature dict."""
        return [self.predict_dist(x) for x in xs]
