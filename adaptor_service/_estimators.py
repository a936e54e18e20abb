"""River-shaped regressors built on batch learners (gradient boosting refit on a buffer)."""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from river import base, stats

from adaptor_service._fast_trees import (
    _SMALL_BATCH,
    _SPECIALIZE_ROWS,
    _fit_outside_lock,
    _flat_trees,
    _one_thread,
    _predict_fixing_constants,
    _walk,
    fitting_outside_lock,
)
from adaptor_service._features import FeatureIndex, FeatureRows, Features

__all__ = ["BatchRefitRegressor"]

_Trees = tuple[float, list[tuple[list, ...]]]  # one fitted member as plain lists (_fast_trees._flat_trees)


class BatchRefitRegressor(base.Regressor):
    """River-shaped gradient boosting: learns one sample at a time, refits in batches.

    This is **not** an incremental tree learner. ``learn_one`` appends the sample to a
    buffer; when the buffer has grown by the factor ``growth`` since the last fit (and has
    at least ``min_samples``), scikit-learn's ``HistGradientBoostingRegressor`` is refit on
    the whole buffer. The geometric schedule keeps the total fitting cost within
    ``growth / (growth - 1)`` times one fit on all the data; between refits, predictions
    come from the last fit; below ``small_buffer`` samples, a refit comes at least every
    ``max_stale`` samples (small fits are cheap). Until the first fit, ``starter`` (an online River regressor,
    cloned) learns every sample and makes the predictions (``None``: the running mean), so a
    cold service learns from its first observations. With ``n_members > 1`` the extra members are fit on bootstrap
    resamples and the spread of their predictions is the model's uncertainty. The buffer keeps
    the last ``window`` samples (older ones are dropped), so memory stays bounded.

    Everything is deterministic given ``seed`` and the sequence of ``learn_one`` calls
    (early stopping, whose validation split is random, is off), so a service restarted from
    a snapshot plus its log makes the very same predictions.

    >>> model = BatchRefitRegressor(min_samples=20, max_iter=50, min_samples_leaf=2)
    >>> for i in range(40):
    ...     model.learn_one({"x": float(i % 10)}, float(i % 10) * 2)
    >>> round(model.predict_one({"x": 8.0}))
    16
    """

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        growth: float = 1.5,
        min_samples: int = 64,
        n_members: int = 1,
        starter: base.Regressor | None = None,
        seed: int = 0,
        small_buffer: int = 2048,
        max_stale: int = 32,
        window: int = 1_000_000,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.growth = growth
        self.min_samples = min_samples
        self.n_members = n_members
        self.starter = starter
        self.seed = seed
        self.small_buffer = small_buffer
        self.max_stale = max_stale
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._n_learnt = 0  # all samples ever learnt (the buffer keeps the last ``window``)
        self._starter = starter.clone() if starter is not None else None
        self._index = FeatureIndex()
        self._xs: list[dict[str, float]] = []
        self._ys: list[float] = []
        self._mean = stats.Mean()
        self._members: list[object] = []
        self._columns_fitted = 0
        self._next_fit = min_samples
        self._n_fits = 0
        self._residual = stats.Var()
        self._scored = 0  # samples [0, _scored) are counted in _residual
        self._trees: list[_Trees] = []
        self._target_source: Callable[[], Sequence[float]] | None = None

    def progressive_residual(self) -> stats.Var:
        """Residuals of each sample predicted by the fit in force when it arrived.

        This is progressive validation computed in one vectorised batch just before each
        refit (so it covers the samples up to the last refit): a sample learnt after fit k
        is scored by fit k. Samples before the first fit are not scored.
        """
        return self._residual

    def _score_pending(self) -> None:
        if self._members and self._scored < len(self._ys):
            pending = self._xs[self._scored :]
            predicted = self.predict_matrix(pending).mean(axis=0)
            for y, p in zip(self._ys[self._scored :], predicted.tolist(), strict=True):
                self._residual.update(y - p)
        self._scored = len(self._ys)

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        yield {"min_samples": 10, "max_iter": 10}
        yield {"min_samples": 10, "max_iter": 10, "window": 50}

    @property
    def buffered_samples(self) -> int:
        """Samples kept for the next refit (at most about ``window``)."""
        return len(self._ys)

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        if self._starter is not None and not self._members:
            # Keys in name order: River's linear models round differently with another order.
            self._starter.learn_one(dict(sorted(x.items())), float(y))
        self._index.add(x)
        self._xs.append(dict(x))
        self._ys.append(float(y))
        self._mean.update(float(y))
        self._n_learnt += 1
        if len(self._ys) > self.window + self.window // 16:  # trim in steps: O(1) amortised per sample
            drop = len(self._ys) - self.window
            del self._xs[:drop], self._ys[:drop]
            self._scored = max(0, self._scored - drop)
        if self._n_learnt >= self._next_fit:
            self.refit()

    def refit(self) -> None:
        """Fit on everything seen now (a warm start ends with one), then resume the schedule."""
        if not self._ys:
            return
        self._score_pending()
        self._refit()
        n = self._n_learnt
        self._next_fit = max(n + 1, math.ceil(n * self.growth))
        if len(self._ys) < self.small_buffer:
            # Small data: refits are cheap, and a model stale for many jobs keeps making the
            # same wrong pick (a one-shot choice learns only from what it tried).
            self._next_fit = min(self._next_fit, n + self.max_stale)

    def set_target_source(self, targets: Callable[[], Sequence[float]] | None) -> None:
        """Refits take their targets from ``targets()`` (one per sample) instead of the learnt ``y``.

        ``AccuracyPredictor`` standardises accuracy by its task's level, which keeps moving
        as the task is seen more: each refit restandardises every sample with today's level.
        """
        self._target_source = targets

    def _refit(self) -> None:
        # Columns sorted by name: the fit must not depend on the order keys first arrived in
        # (gradient boosting breaks ties between equal splits by column position). Sorted in a
        # copy: until the swap, readers predict with the old fit in its own column order.
        index = copy.deepcopy(self._index)
        index.sort()
        X = index.matrix(self._xs)
        source = self._target_source
        y = np.asarray(source() if source is not None else self._ys, dtype=float)[-len(self._ys) :]
        # Off the readers' lock (the background learner), the rows they predicted with the old
        # fit are predicted with the new one before the swap: otherwise the first plan of each
        # task after a refit predicts all its candidates while the others wait.
        ahead = list(_PREDICTED_ROWS.get(self, ())) if fitting_outside_lock() else []
        ahead_known = [self._known_rows(r) for r in ahead]  # only the rows asked for, of those asked for in part

        def fit() -> tuple[list[object], list[_Trees], list[np.ndarray]]:
            members = self._fit_members(X, y)
            trees = [_flat_trees(m) for m in members]
            width = X.shape[1]
            return members, trees, [
                _predict_with(members, trees, r.matrix_for(index.columns, width, None if k is None else np.flatnonzero(k)))
                for r, k in zip(ahead, ahead_known, strict=True)
            ]

        members, trees, predicted = _fit_outside_lock(fit)
        # Swapped in at once: a reader sees the old fit or the new one, never a mix.
        self._index, self._members, self._trees = index, members, trees
        self._columns_fitted = X.shape[1]
        self._n_fits += 1
        _PREDICTED_ROWS[self] = weakref.WeakSet()
        for rows, known, preds in zip(ahead, ahead_known, predicted, strict=True):
            if known is not None:
                part, preds = preds, np.full((len(preds), len(rows)), np.nan)
                preds[:, known] = part
            else:
                preds.flags.writeable = False
            rows.memo[id(self)] = (weakref.ref(self), self._n_fits, preds, known)

    def _fit_members(self, X: np.ndarray, y: np.ndarray) -> list[object]:
        """The members fit on ``X, y``: reads nothing that learn_one changes."""
        from sklearn.ensemble import HistGradientBoostingRegressor  # lazy: heavy import

        members = []
        for member in range(self.n_members):
            rows = np.arange(len(y))
            if member:
                rng = np.random.default_rng([self.seed, self._n_fits, member])
                rows = rng.integers(0, len(y), len(y))
            model = HistGradientBoostingRegressor(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                early_stopping=False,
                random_state=self.seed + member,
            )
            with _one_thread():  # type: ignore[attr-defined]
                model.fit(X[rows], y[rows])
            members.append(model)
        return members

    def predict_matrix(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Predictions of every member, shape (members, len(xs))."""
        if not self._members:
            if self._starter is not None:
                return np.array([[float(self._starter.predict_one(dict(sorted(x.items())))) for x in xs]])
            return np.full((1, len(xs)), self._mean.get() if self._mean.n else 0.0)
        if isinstance(xs, FeatureRows):
            return self._predict_rows(xs)
        return self._predict_members(self._index.matrix(xs)[:, : self._columns_fitted])

    def _predict_rows(self, rows: FeatureRows) -> np.ndarray:
        """Remembered per fit: the same rows give the same predictions until the next refit.

        Rows taken from others (``FeatureRows.take``: a request's shortlist) are remembered
        in those others, row by row: each row's prediction does not depend on its batch.
        """
        whole, index = (rows, None) if rows.parent is None else (rows.parent, rows.index)
        _PREDICTED_ROWS.setdefault(self, weakref.WeakSet()).add(whole)
        found = self._memo(whole)
        if found is not None and found[1] is None:  # every row predicted
            return found[0] if index is None else found[0][:, index]
        columns, width = self._index.columns, self._columns_fitted
        if index is None:
            preds = self._predict_members(whole.matrix_for(columns, width))
            preds.flags.writeable = False
            whole.memo[id(self)] = (weakref.ref(self), self._n_fits, preds, None)
            return preds
        if found is None:
            found = (np.full((len(self._members), len(whole)), np.nan), np.zeros(len(whole), dtype=bool))
            whole.memo[id(self)] = (weakref.ref(self), self._n_fits, *found)
        preds, known = found
        assert known is not None
        missing = np.unique(index[~known[index]])
        if len(missing):
            preds[:, missing] = self._predict_members(whole.matrix_for(columns, width, missing))
            known[missing] = True
        return preds[:, index]

    def _memo(self, rows: FeatureRows) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(predictions, rows predicted; None: all) that ``rows`` keep for the current fit, if any."""
        found = rows.memo.get(id(self))
        if found is None or found[0]() is not self or found[1] != self._n_fits:  # type: ignore[operator]
            return None
        return found[2], found[3]  # type: ignore[return-value]

    def _known_rows(self, rows: FeatureRows) -> np.ndarray | None:
        """The rows of ``rows`` predicted with the current fit when only some were; None: all (or none).

        A copy: readers go on marking rows while a refit runs outside their lock.
        """
        found = self._memo(rows)
        return None if found is None or found[1] is None else found[1].copy()

    def _predict_members(self, X: np.ndarray) -> np.ndarray:
        return _predict_with(self._members, self._trees, X)

    def predict_mean_std(self, xs: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        preds = self.predict_matrix(xs)
        std = preds.std(axis=0, ddof=1) if len(preds) > 1 else np.zeros(preds.shape[1])
        return preds.mean(axis=0), std

    def predict_one(self, x: Mapping[str, float]) -> float:
        return float(self.predict_matrix([x]).mean())


# Per model: the rows read since its last fit, which its next refit predicts ahead. Kept beside
# the models, weakly, because the models are pickled into the snapshots and the rows are not.
_PREDICTED_ROWS: weakref.WeakKeyDictionary[BatchRefitRegressor, weakref.WeakSet[FeatureRows]] = (
    weakref.WeakKeyDictionary()
)


def _predict_with(members: Sequence[object], trees: Sequence[_Trees], X: np.ndarray) -> np.ndarray:
    """Predictions of every member, shape (members, len(X))."""
    if len(X) <= _SMALL_BATCH and trees:
        # A few rows: walking the trees in Python is ~10x faster than scikit-learn's
        # per-tree calls, and gives the very same sums (same order of additions).
        return np.array([[_walk(t, row) for row in X.tolist()] for t in trees])
    predict = _predict_fixing_constants if len(X) >= _SPECIALIZE_ROWS else (lambda m, X: m.predict(X))
    with _one_thread():  # type: ignore[attr-defined]
        return np.stack([predict(m, X) for m in members])  # type: ignore[attr-defined]


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
    if isinstance(model, BatchRefitRegressor):
        mean, std = model.predict_mean_std([x])
        return float(mean[0]), float(std[0])
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


def _mean_std_many(model: base.Regressor, xs: Sequence[Features]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_mean_std` of many feature dicts, vectorised where the model allows it."""
    if isinstance(model, BatchRefitRegressor):
        return model.predict_mean_std(xs)
    pairs = [_mean_std(model, x) for x in xs]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)
