"""A learned time prior for the models the zoo does not profile: per model, relative to task size.

The model of a run's seconds, in log space::

    log(seconds) = log(epochs x num_samples) + rate[model] + slope x log(batch size) + noise

``rate[model]`` is the model's log seconds per sample-epoch at batch size 1; ``slope`` is shared
by all models and bounded to [-1, 0]: a step's time lies between constant in the batch size
(slope -1 per sample) and proportional to it (slope 0). The rates are estimated with partial
pooling (empirical Bayes, a random-intercept model): a model seen a few times is shrunk toward
the mean over models, and a model never seen gets that mean with the spread between models
added to its variance, so the prior of an unknown model widens instead of guessing.

The estimates are method-of-moments from sufficient statistics per model (bivariate Welford),
so learning one result is O(1) and the pooled estimate is a few array operations over models.
"""

from __future__ import annotations

import math
import weakref
from array import array
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from river import base

from adaptor_service._features import FeatureRows

__all__ = ["ModelTimePrior", "PooledRates", "TimeSamples"]

#: Features a row must have for the prior to apply (``log_epochs`` + ``meta.log_num_samples``).
_EPOCHS, _SAMPLES = "log_epochs", "meta.log_num_samples"
_BATCH = "hp.log_batch_size"
_MODEL = "model="
#: A row with the zoo's physics prior is left to it.
ZOO_FEATURE = "log_prior_seconds"


@dataclass(frozen=True)
class PooledRates:
    """The pooled estimate: the shared slope, each known model's rate and the unseen model's."""

    slope: float
    within_var: float  #: variance of one result around its model's line
    mean_rate: float  #: the mean over models: an unseen model's rate
    between_var: float  #: variance of the true rates between models
    rate: np.ndarray  #: per known model (first-seen order): posterior mean of its rate
    rate_var: np.ndarray  #: and its posterior variance
    unseen_var: float  #: variance of an unseen model's rate


class ModelTimePrior(base.Regressor):
    """Per-model log seconds per sample-epoch, partially pooled; predicts seconds.

    It learns and predicts only rows with a model (``model=NAME``), ``log_epochs`` and
    ``meta.log_num_samples``, and without the zoo's ``log_prior_seconds``; elsewhere
    :meth:`log_dist` is None and :meth:`predict_one` 0.

    Parameters
    ----------
    prior_log_std
        Spread of the rates between models (log units) while fewer than two models are known,
        and the within-model spread while there are too few results to measure it.
    min_between_std
        Floor of the measured spread between models: a handful of similar models must not make
        the prior of the next one certain.

    >>> prior = ModelTimePrior()
    >>> for model, per_sample in (("a", 0.01), ("b", 0.04)):
    ...     for epochs in (1, 2, 4):
    ...         x = {"log_epochs": math.log(epochs), "meta.log_num_samples": math.log(1000.0), f"model={model}": 1.0}
    ...         prior.learn_one(x, per_sample * epochs * 1000.0)
    >>> x = {"log_epochs": 0.0, "meta.log_num_samples": math.log(1000.0)}
    >>> round(prior.predict_one({**x, "model=a": 1.0}), 1), round(prior.predict_one({**x, "model=new": 1.0}), 1)
    (10.0, 20.0)
    >>> prior.log_dist({**x, "model=a": 1.0})[1] < prior.log_dist({**x, "model=new": 1.0})[1]
    True
    """

    def __init__(self, prior_log_std: float = 1.0, min_between_std: float = 0.05) -> None:
        self.prior_log_std = prior_log_std
        self.min_between_std = min_between_std
        self._position: dict[str, int] = {}  # model -> index in the arrays (first-seen order)
        # Per model: count, means of log batch and of the log rate, and their centred (co)sums.
        self._stats = np.zeros((6, 0))  # rows: n, mean_x, mean_y, sxx, sxy, syy
        self._pooled: PooledRates | None = None  # derived: rebuilt after each learn_one
        self._n_learnt = 0

    @staticmethod
    def locate(x: Mapping[str, float]) -> tuple[str, float, float] | None:
        """(model, log(epochs x samples), log batch size) of a row the prior applies to, else None."""
        if ZOO_FEATURE in x or _EPOCHS not in x or _SAMPLES not in x:
            return None
        model = next((k[len(_MODEL) :] for k, v in x.items() if v and k.startswith(_MODEL)), None)
        if model is None:
            return None
        return model, x[_EPOCHS] + x[_SAMPLES], x.get(_BATCH, 0.0)

    def position(self, model: str) -> int:
        """The model's index in :attr:`PooledRates.rate` (-1: never seen)."""
        return self._position.get(model, -1)

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        found = self.locate(x)
        if found is None:
            return
        model, size, log_batch = found
        log_rate = math.log(max(float(y), 1e-3)) - size
        i = self._position.setdefault(model, len(self._position))
        if i == self._stats.shape[1]:
            self._stats = np.concatenate([self._stats, np.zeros((6, 1))], axis=1)
        n, mean_x, mean_y, sxx, sxy, syy = self._stats[:, i].tolist()
        n += 1.0
        dx, dy = log_batch - mean_x, log_rate - mean_y
        mean_x += dx / n
        mean_y += dy / n
        self._stats[:, i] = (n, mean_x, mean_y, sxx + dx * (log_batch - mean_x),
                             sxy + dx * (log_rate - mean_y), syy + dy * (log_rate - mean_y))
        self._pooled = None
        self._n_learnt += 1

    def pooled(self) -> PooledRates | None:
        """The current estimate (None before any result)."""
        if self._pooled is None and self._stats.shape[1]:
            self._pooled = self._pool()
        return self._pooled

    def _pool(self) -> PooledRates:
        n, mean_x, mean_y, sxx, sxy, syy = self._stats
        models = len(n)
        total_xx, total_xy, total_yy = float(sxx.sum()), float(sxy.sum()), float(syy.sum())
        has_slope = total_xx > 1e-9
        slope = min(0.0, max(-1.0, total_xy / total_xx)) if has_slope else 0.0
        rate = mean_y - slope * mean_x  # each model's own estimate
        dof = float(n.sum()) - models - has_slope
        residual = total_yy - 2.0 * slope * total_xy + slope * slope * total_xx
        within_var = max(residual / dof, 1e-4) if dof > 0 else self.prior_log_std**2
        sampling_var = within_var / n
        if models >= 2:
            mean_rate = float(rate.mean())
            spread = float(rate.var(ddof=1)) - float(sampling_var.mean())  # the part not due to sampling
            between_var = max(spread, self.min_between_std**2)
        else:
            mean_rate, between_var = float(rate[0]), self.prior_log_std**2
        mean_var = between_var / models  # uncertainty of the mean over models
        weight = between_var / (between_var + sampling_var)  # 1: the model's own estimate
        return PooledRates(
            slope=slope,
            within_var=within_var,
            mean_rate=mean_rate,
            between_var=between_var,
            rate=mean_rate + weight * (rate - mean_rate),
            rate_var=weight * sampling_var + (1.0 - weight) ** 2 * mean_var,
            unseen_var=between_var + mean_var,
        )

    def log_dist(self, x: Mapping[str, float]) -> tuple[float, float] | None:
        """Mean and variance of log(seconds) for row ``x``; None where the prior does not apply."""
        found = self.locate(x)
        pooled = self.pooled()
        if found is None or pooled is None:
            return None
        model, size, log_batch = found
        i = self.position(model)
        rate, var = (pooled.rate[i], pooled.rate_var[i]) if i >= 0 else (pooled.mean_rate, pooled.unseen_var)
        return float(size + pooled.slope * log_batch + rate), float(var)

    def log_dist_rows(self, rows: FeatureRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`log_dist` of every row as arrays (mean, variance, whether the prior applies).

        Remembered in ``rows`` until the next result is learnt, as the regressors' predictions are.
        """
        found = rows.memo.get(id(self))
        if found is not None and found[0]() is self and found[1] == self._n_learnt:
            return found[2]  # type: ignore[return-value]
        names, which, applies, base = _layout(rows)
        pooled = self.pooled()
        if pooled is None or not applies.any():
            n = len(rows)
            result = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
        else:
            position = np.array([self.position(name) for name in names], dtype=np.intp)[which]
            seen = position >= 0
            known = np.where(seen, position, 0)
            rate = np.where(seen, pooled.rate[known], pooled.mean_rate)
            var = np.where(seen, pooled.rate_var[known], pooled.unseen_var)
            mean = base[0] + pooled.slope * base[1] + rate
            result = np.where(applies, mean, 0.0), np.where(applies, var, 0.0), applies
        for array_ in result:
            array_.flags.writeable = False
        rows.memo[id(self)] = (weakref.ref(self), self._n_learnt, result)
        return result

    def predict_one(self, x: Mapping[str, float]) -> float:
        """Seconds: the median of the prior (0 where it does not apply)."""
        found = self.log_dist(x)
        return math.exp(min(found[0], 50.0)) if found is not None else 0.0


def _layout(rows: FeatureRows) -> tuple[list[str], np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """What the prior reads of ``rows``, whatever it learnt: made once per rows.

    (model names, each row's index among them, whether the prior applies to the row,
    (log(epochs x samples), log batch size)).
    """
    key = id(ModelTimePrior)  # one layout for every prior; the priors' own entries use their ids
    found = rows.memo.get(key)
    if found is not None:
        return found  # type: ignore[return-value]
    n = len(rows)
    models = [(j, name[len(_MODEL) :]) for name, j in rows.names.items() if name.startswith(_MODEL)]
    size = rows.column(_EPOCHS, np.nan) + rows.column(_SAMPLES, np.nan)
    if models and n:
        onehot = rows.values[:, [j for j, _ in models]]  # absent one-hots read 0
        which = onehot.argmax(axis=1)
        has_model = onehot[np.arange(n), which] != 0
    else:
        which, has_model = np.zeros(n, dtype=np.intp), np.zeros(n, dtype=bool)
    applies = has_model & ~np.isnan(size) & np.isnan(rows.column(ZOO_FEATURE, np.nan))
    layout = ([name for _, name in models], which, applies, (size, rows.column(_BATCH, 0.0)))
    rows.memo[key] = layout
    return layout


class TimeSamples:
    """What a refit needs of each learnt sample to correct it with the prior of now.

    Per sample: log seconds, the fixed part of its prior (the zoo's log prior, the log size
    ``log(epochs x samples)`` where the learned prior applies, else 0), its log batch size and
    its model's place in the learned prior (-1: the prior is fixed). Plain arrays: 32 bytes a
    sample.
    """

    def __init__(self) -> None:
        self.log_seconds = array("d")
        self.fixed = array("d")
        self.log_batch = array("d")
        self.model = array("q")

    def __len__(self) -> int:
        return len(self.log_seconds)

    def add(self, x: Mapping[str, float], log_seconds: float, prior: ModelTimePrior, window: int) -> None:
        """Keep a sample (after ``prior`` learnt it), and only the last ``window``."""
        zoo = x.get(ZOO_FEATURE)
        found = prior.locate(x) if zoo is None else None
        if found is None:
            fixed, log_batch, model = (zoo if zoo is not None else 0.0), 0.0, -1
        else:
            name, fixed, log_batch = found
            model = prior.position(name)
        self.log_seconds.append(log_seconds)
        self.fixed.append(fixed)
        self.log_batch.append(log_batch)
        self.model.append(model)
        if len(self.model) > window + window // 16:  # trimmed in steps, as the regressor's buffer
            for column in (self.log_seconds, self.fixed, self.log_batch, self.model):
                del column[: len(column) - window]

    def corrections(self, pooled: PooledRates | None) -> np.ndarray:
        """Each sample's log seconds less its prior under ``pooled`` (the learned prior of now)."""
        out = np.array(self.log_seconds) - np.array(self.fixed)
        model = np.array(self.model, dtype=np.intp)
        learned = model >= 0
        if pooled is not None and learned.any():
            out[learned] -= pooled.rate[model[learned]] + pooled.slope * np.array(self.log_batch)[learned]
        return out
