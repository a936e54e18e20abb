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

import copy
import inspect
import itertools
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from river import base, linear_model, stats

from nasoa_contracts import Candidate, TaskSpec

Features = dict[str, float]

__all__ = [
    "AccuracyPredictor",
    "BatchRefitRegressor",
    "CandidateBlock",
    "FeatureIndex",
    "FeatureRows",
    "TimePredictor",
    "cross_features",
    "make_features",
    "task_features",
]

_LOG_HPARAMS = ("lr", "batch_size", "weight_decay", "warmup_lr")


def task_features(task: TaskSpec) -> Features:
    """The task's own features: its meta-features, with log copies of its sizes.

    >>> x = task_features(TaskSpec("builtin:digits", 30, {"num_samples": 1000.0, "num_classes": 10.0}))
    >>> sorted(x)
    ['meta.log_num_classes', 'meta.log_num_samples', 'meta.log_samples_per_class', 'meta.num_classes', 'meta.num_samples']
    """
    meta = task.meta_features
    x: Features = {}
    for key, value in meta.items():
        x[f"meta.{key}"] = float(value)
        if key in ("num_samples", "num_classes") and value > 0:
            x[f"meta.log_{key}"] = math.log(value)
    if meta.get("num_samples", 0) > 0 and meta.get("num_classes", 0) > 0:
        x["meta.log_samples_per_class"] = math.log(meta["num_samples"]) - math.log(meta["num_classes"])
    return x


def _candidate_parts(candidate: Candidate) -> tuple[Features, Features, Features]:
    """The candidate's own features: (epochs, hyperparameters, model)."""
    head: Features = {"epochs": float(candidate.epochs), "log_epochs": math.log(candidate.epochs)}
    hparams: Features = {}
    for key, value in candidate.hparams.items():
        if isinstance(value, str):
            hparams[f"hp.{key}={value}"] = 1.0
        else:
            hparams[f"hp.{key}"] = float(value)
            if key in _LOG_HPARAMS and value > 0:
                hparams[f"hp.log_{key}"] = math.log(float(value))
    model: Features = {f"model={candidate.model}": 1.0}
    for key, value in candidate.model_features.items():
        model[f"model.{key}"] = float(value)
    return head, hparams, model


def _log_samples(task: TaskSpec) -> float:
    num_samples = task.meta_features.get("num_samples", 0)
    return math.log(num_samples) if num_samples > 0 else 0.0


def _log_batch(candidate: Candidate) -> float:
    batch = candidate.hparams.get("batch_size")
    return math.log(float(batch)) if batch is not None and not isinstance(batch, str) and batch > 0 else 0.0


def _log_steps(log_epochs, log_samples, log_batch):  # type: ignore[no-untyped-def]
    """log(epochs x samples / batch size): one formula for floats and arrays (same rounding)."""
    return log_epochs + log_samples - log_batch


def _log_prior(prior_seconds: float | None) -> float | None:
    return math.log(prior_seconds) if prior_seconds is not None and prior_seconds > 0 else None


def make_features(task: TaskSpec, candidate: Candidate) -> Features:
    """Flatten a (task, candidate) pair into numeric features.

    Categorical values are one-hot (``hp.optimizer=sgd: 1.0``); numbers are kept, and sizes
    that span orders of magnitude get a log copy. ``log_steps`` (log of epochs x samples /
    batch size) is the physics of training time. The features are the task's
    (:func:`task_features`), the candidate's and two joint ones (``log_steps`` and
    ``log_prior_seconds``, whose prior a candidate space makes per task); :class:`CandidateBlock`
    builds the same for many candidates at once.

    >>> t = TaskSpec("builtin:digits", 30, {"num_samples": 1000.0, "num_classes": 10.0})
    >>> c = Candidate("etnas-s", {"lr": 0.01, "optimizer": "sgd"}, epochs=2, prior_seconds=5.0)
    >>> f = make_features(t, c)
    >>> f["hp.optimizer=sgd"], f["model=etnas-s"], round(f["log_epochs"], 3)
    (1.0, 1.0, 0.693)
    """
    head, hparams, model = _candidate_parts(candidate)
    log_samples = _log_samples(task)
    steps = {"log_steps": _log_steps(head["log_epochs"], log_samples, _log_batch(candidate))} if log_samples else {}
    log_prior = _log_prior(candidate.prior_seconds)
    prior = {"log_prior_seconds": log_prior} if log_prior is not None else {}
    # This key order is the models' column order (first seen, first column): keep it.
    return {**head, **task_features(task), **hparams, **steps, **model, **prior}


class CandidateBlock:
    """The candidate-only features of a list of candidates as arrays, made once.

    :meth:`rows` adds a task's features (broadcast) and the joint columns with numpy: a
    candidate space's block serves every task. Each row equals :func:`make_features`.

    >>> t = TaskSpec("builtin:digits", 30, {"num_samples": 1000.0, "num_classes": 10.0})
    >>> cs = [Candidate("m", {"lr": 0.01, "batch_size": 32}, epochs=e, prior_seconds=2.0 * e) for e in (1, 5)]
    >>> rows = CandidateBlock(cs).rows(t, [c.prior_seconds for c in cs], cs)
    >>> list(rows) == [make_features(t, c) for c in cs]
    True
    """

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        parts = [_candidate_parts(c) for c in candidates]
        self.names, self.values, self.present = _to_matrix([{**h, **p, **m} for h, p, m in parts])
        self.log_epochs = np.array([h["log_epochs"] for h, _, _ in parts], dtype=float)
        self.log_batch = np.array([_log_batch(c) for c in candidates], dtype=float)

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, task: TaskSpec, priors: Sequence[float | None], candidates: Sequence[Candidate]) -> FeatureRows:
        """The feature rows of ``task`` with these candidates, whose ``prior_seconds`` are ``priors``.

        ``candidates`` (a lazy sequence is fine) makes the dicts when a model needs them.
        """
        n, width = self.values.shape
        extra = task_features(task)
        log_samples = _log_samples(task)
        if log_samples:
            extra["log_steps"] = 0.0
        extra["log_prior_seconds"] = 0.0
        names = dict(self.names)
        for key in extra:
            names[key] = len(names)
        values = np.empty((n, len(names)))
        present = np.ones((n, len(names)), dtype=bool)
        values[:, :width], present[:, :width] = self.values, self.present
        values[:, width:] = list(extra.values())
        if log_samples:
            values[:, names["log_steps"]] = _log_steps(self.log_epochs, log_samples, self.log_batch)
        logs = {p: _log_prior(p) for p in set(priors)}  # a task's candidates share a few priors
        log_prior = np.array([logs[p] for p in priors], dtype=float)  # None -> NaN
        present[:, -1] = ~np.isnan(log_prior)
        values[:, -1] = log_prior

        first = make_features(task, candidates[0]) if n else {}

        def dicts() -> list[Features]:  # made only when a model reads dicts
            return [make_features(task, c) for c in candidates]

        return FeatureRows.from_arrays(names, values, present, first, dicts)


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


class FeatureIndex:
    """Columns for feature dicts: every key gets a column the first time it is seen.

    One-hot keys (``k=v``) that a dict lacks read 0; other missing keys read NaN (gradient
    boosting treats NaN as "missing"). Dicts with the same keys in the same order (the
    candidates of one request) are converted together, so a matrix of 2,000 rows costs a
    few milliseconds.

    >>> index = FeatureIndex()
    >>> index.add({"a": 1.0, "m=x": 1.0})
    >>> index.matrix([{"a": 2.0}, {"m=x": 1.0, "b": 5.0}]).tolist()
    [[2.0, 0.0], [nan, 1.0]]
    """

    def __init__(self) -> None:
        self.columns: dict[str, int] = {}
        self._groups: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def add(self, x: Mapping[str, float]) -> None:
        for key in x:
            if key not in self.columns:
                self.columns[key] = len(self.columns)
                self._groups.clear()

    def _where(self, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        found = self._groups.get(keys)
        if found is None:
            known = [i for i, k in enumerate(keys) if k in self.columns]
            found = (np.array(known, dtype=np.intp), np.array([self.columns[keys[i]] for i in known], dtype=np.intp))
            if len(self._groups) < 4096:
                self._groups[keys] = found
        return found

    def blank(self, n: int) -> np.ndarray:
        row = np.array([0.0 if "=" in k else np.nan for k in self.columns])
        return np.tile(row, (n, 1))

    def matrix(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        out = self.blank(len(xs))
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(tuple(x), []).append(i)
        for keys, rows in groups.items():
            src, dst = self._where(keys)
            if not len(src):
                continue
            values = np.array([list(xs[i].values()) for i in rows], dtype=float)
            out[np.ix_(np.asarray(rows), dst)] = values[:, src]
        return out

    def __getstate__(self) -> dict[str, object]:
        return {"columns": self.columns}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.columns = state["columns"]  # type: ignore[assignment]
        self._groups = {}


class FeatureRows(Sequence[Features]):
    """The feature dicts of one request's candidates, converted to a matrix once.

    It is a sequence of feature dicts wherever predictors take one, so every model works
    with it. ``BatchRefitRegressor`` reads the matrix instead of the dicts and keeps its
    predictions until its next refit, so a task asked for again costs array operations.
    Only the first dict is kept: the others are made again by ``remake`` when a model needs
    dicts (River models, the starter before the first fit).

    >>> rows = FeatureRows([{"a": 1.0, "m=x": 1.0}, {"a": 2.0}])
    >>> rows.column("m=x", 0.0).tolist(), rows[1]
    ([1.0, 0.0], {'a': 2.0})
    """

    def __init__(self, xs: Sequence[Features], remake: Callable[[], Sequence[Features]] | None = None) -> None:
        self.names, self.values, self.present = _to_matrix(xs)
        self.first: Features = dict(xs[0]) if xs else {}
        self._xs: Sequence[Features] | None = None if remake is not None else xs
        self._remake = remake
        self._lock = threading.Lock()
        self.memo: dict[int, tuple[object, ...]] = {}  # id(model) -> (weakref, version, predictions)

    @classmethod
    def from_arrays(
        cls,
        names: dict[str, int],
        values: np.ndarray,
        present: np.ndarray,
        first: Features,
        remake: Callable[[], Sequence[Features]],
    ) -> FeatureRows:
        """Rows already in matrix form (blanks as in :func:`_to_matrix`); ``first`` is row 0's dict."""
        rows = cls([], remake)
        rows.names, rows.values, rows.present, rows.first = names, values, present, first
        return rows

    def __len__(self) -> int:
        return len(self.values)

    def _dicts(self) -> Sequence[Features]:
        with self._lock:
            if self._xs is None:
                self._xs = self._remake()  # type: ignore[misc]
            return self._xs

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if i == 0:
            return self.first
        return self._dicts()[i]

    def __iter__(self) -> Iterator[Features]:
        return iter(self._dicts())

    def take(self, index: np.ndarray, first: Features) -> FeatureRows:
        """The rows at ``index``; ``first`` is the dict of row ``index[0]``."""
        return FeatureRows.from_arrays(
            self.names, self.values[index], self.present[index], first, lambda: [self[i] for i in index.tolist()]
        )

    def column(self, name: str, default: float) -> np.ndarray:
        """The values of feature ``name``, ``default`` where a dict lacks it."""
        j = self.names.get(name)
        if j is None:
            return np.full(len(self), default)
        return np.where(self.present[:, j], self.values[:, j], default)

    def matrix_for(self, columns: Mapping[str, int], width: int) -> np.ndarray:
        """The matrix in a FeatureIndex's column order (what ``FeatureIndex.matrix`` gives)."""
        out = np.empty((len(self), width))
        for name, j in columns.items():
            if j >= width:
                continue
            src = self.names.get(name)
            out[:, j] = self.values[:, src] if src is not None else (0.0 if "=" in name else np.nan)
        return out


def _to_matrix(xs: Sequence[Mapping[str, float]]) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Columns, values and presence of feature dicts; blanks as in FeatureIndex (0 one-hot, else NaN)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(tuple(x), []).append(i)
    names: dict[str, int] = {}
    for keys in groups:
        for key in keys:
            names.setdefault(key, len(names))
    row = np.array([0.0 if "=" in k else np.nan for k in names])
    values = np.tile(row, (len(xs), 1))
    present = np.zeros(values.shape, dtype=bool)
    for keys, rows in groups.items():
        at = np.ix_(np.asarray(rows), np.array([names[k] for k in keys], dtype=np.intp))
        flat = itertools.chain.from_iterable(xs[i].values() for i in rows)
        values[at] = np.fromiter(flat, dtype=float, count=len(rows) * len(keys)).reshape(len(rows), len(keys))
        present[at] = True
    return names, values, present


_OUTSIDE = threading.local()


@contextmanager
def fits_outside(lock: object) -> Iterator[None]:
    """Within this block, this thread releases ``lock`` while scikit-learn fits a model.

    The adaptor's background learner holds its state lock while it learns; a refit takes
    long and reads only its own copy of the data, so readers (Recommend) may go on meanwhile.
    """
    _OUTSIDE.lock = lock
    try:
        yield
    finally:
        _OUTSIDE.lock = None


def _fit_outside_lock(fit: Callable[[], object]) -> object:
    lock = getattr(_OUTSIDE, "lock", None)
    if lock is None:
        return fit()
    lock.release()  # type: ignore[attr-defined]
    try:
        return fit()
    finally:
        lock.acquire()  # type: ignore[attr-defined]


_THREADPOOLS: list[object] = []


def _one_thread() -> object:
    """A context that runs scikit-learn's OpenMP code on one thread.

    On a shared machine, OpenMP's spinning threads made a fit 40x and a one-row prediction
    60x slower (measured on the 2-core dev machine under load); one thread is also what a
    latency-bound service wants.
    """
    if not _THREADPOOLS:
        from threadpoolctl import ThreadpoolController

        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api="openmp")  # type: ignore[attr-defined]


_SMALL_BATCH = 8


def _flat_trees(model: object) -> tuple[float, list[tuple[list, ...]]]:
    """A fitted HistGradientBoostingRegressor's trees as plain lists (numerical splits only)."""
    trees = []
    for (predictor,) in model._predictors:  # type: ignore[attr-defined]
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported by the fast path")
        trees.append(
            tuple(
                nodes[f].tolist()
                for f in ("is_leaf", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "value")
            )
        )
    return float(np.ravel(model._baseline_prediction)[0]), trees  # type: ignore[attr-defined]


def _walk(flat: tuple[float, list[tuple[list, ...]]], row: list[float]) -> float:
    """The prediction of one row: baseline plus each tree's leaf, added in tree order."""
    total, trees = flat
    for is_leaf, feature, threshold, missing_left, left, right, value in trees:
        node = 0
        while not is_leaf[node]:
            v = row[feature[node]]
            if v != v:  # NaN: missing
                node = left[node] if missing_left[node] else right[node]
            elif v <= threshold[node]:
                node = left[node]
            else:
                node = right[node]
        total += value[node]
    return total


@dataclass
class _Forest:
    """A fitted model's trees with their nodes in one array (kept while the model lives).

    ``shells`` are copies of the tree predictors whose nodes each prediction points at its
    own cut of the trees, in ``buffer``; ``lock`` lets one prediction at a time use them
    (another one makes its own copies).
    """

    trees: list
    nodes: np.ndarray
    starts: np.ndarray
    offset: np.ndarray
    left: np.ndarray
    right: np.ndarray
    shells: list
    buffer: np.ndarray
    lock: threading.Lock


_FORESTS: weakref.WeakKeyDictionary[object, _Forest] = weakref.WeakKeyDictionary()

#: Below this many rows, fixing the constant features costs more than it saves.
_SPECIALIZE_ROWS = 256


def _forest(model: object) -> _Forest:
    found = _FORESTS.get(model)
    if found is None:
        trees = [predictor for (predictor,) in model._predictors]  # type: ignore[attr-defined]
        nodes = np.concatenate([t.nodes for t in trees])
        starts = np.cumsum([0] + [len(t.nodes) for t in trees])
        offset = np.repeat(starts[:-1], np.diff(starts))  # each node's tree start
        left = nodes["left"].astype(np.intp) + offset
        right = nodes["right"].astype(np.intp) + offset
        found = _FORESTS[model] = _Forest(
            trees, nodes, starts, offset, left, right, [copy.copy(t) for t in trees], nodes.copy(), threading.Lock()
        )
    return found


def _predict_fixing_constants(model: object, X: np.ndarray) -> np.ndarray:
    """``model.predict(X)``, faster when some columns hold one value in every row.

    The rows of one request share the task's features: each tree is cut down to the
    branches those values lead to (a split on a constant column always goes one way), then
    scikit-learn predicts with the smaller trees, adding them in the same order, so the
    result is identical.
    """
    forest = _forest(model)
    nodes, starts, offset, left, right = forest.nodes, forest.starts, forest.offset, forest.left, forest.right
    first = X[0]
    constant = ((first == X) | (np.isnan(X) & np.isnan(first))).all(axis=0)
    if not constant.any() or nodes["is_categorical"].any():
        return model.predict(X)  # type: ignore[attr-defined]
    feature = nodes["feature_idx"]
    fixed = (nodes["is_leaf"] == 0) & constant[feature]
    value = first[feature]
    with np.errstate(invalid="ignore"):
        go_left = np.where(np.isnan(value), nodes["missing_go_to_left"] == 1, value <= nodes["num_threshold"])
    jump = np.where(fixed, np.where(go_left, left, right), np.arange(len(nodes)))
    while True:  # follow fixed splits to the first real split or leaf
        further = jump[jump]
        if np.array_equal(further, jump):
            break
        jump = further
    own = forest.lock.acquire(blocking=False)
    try:
        cut = forest.buffer if own else np.empty_like(nodes)
        shells = forest.shells if own else [copy.copy(t) for t in forest.trees]
        cut[...] = nodes
        cut["left"] = jump[left] - offset
        cut["right"] = jump[right] - offset
        roots = starts[:-1]
        moved = jump[roots] != roots
        cut[roots[moved]] = cut[jump[roots][moved]]  # a tree starts at its node 0
        predictors = []
        for shell, start, end in zip(shells, starts[:-1], starts[1:], strict=True):
            shell.nodes = cut[start:end]
            predictors.append([shell])
        raw = np.zeros((len(X), 1), dtype=model._baseline_prediction.dtype, order="F")  # type: ignore[attr-defined]
        raw += model._baseline_prediction  # type: ignore[attr-defined]
        model._predict_iterations(X, predictors, raw, False, 1)  # type: ignore[attr-defined]
    finally:
        if own:
            forest.lock.release()
    return raw.ravel()


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
    resamples and the spread of their predictions is the model's uncertainty.

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
        self._trees: list[tuple[float, list[tuple[list, ...]]]] = []
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

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        if self._starter is not None and not self._members:
            self._starter.learn_one(dict(x), float(y))
        self._index.add(x)
        self._xs.append(dict(x))
        self._ys.append(float(y))
        self._mean.update(float(y))
        if len(self._ys) >= self._next_fit:
            self.refit()

    def refit(self) -> None:
        """Fit on everything seen now (a warm start ends with one), then resume the schedule."""
        if not self._ys:
            return
        self._score_pending()
        self._refit()
        n = len(self._ys)
        self._next_fit = max(n + 1, math.ceil(n * self.growth))
        if n < self.small_buffer:
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
        X = self._index.matrix(self._xs)
        source = self._target_source
        y = np.asarray(source() if source is not None else self._ys, dtype=float)
        members = _fit_outside_lock(lambda: self._fit_members(X, y))
        # Swapped in at once: a reader sees the old fit or the new one, never a mix.
        self._members = members  # type: ignore[assignment]
        self._columns_fitted = X.shape[1]
        self._n_fits += 1
        self._trees = [_flat_trees(m) for m in self._members]

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
                return np.array([[float(self._starter.predict_one(dict(x))) for x in xs]])
            return np.full((1, len(xs)), self._mean.get() if self._mean.n else 0.0)
        if isinstance(xs, FeatureRows):
            return self._predict_rows(xs)
        return self._predict_members(self._index.matrix(xs)[:, : self._columns_fitted])

    def _predict_rows(self, rows: FeatureRows) -> np.ndarray:
        # Remembered per fit: the same rows give the same predictions until the next refit.
        found = rows.memo.get(id(self))
        if found is not None and found[0]() is self and found[1] == self._n_fits:
            return found[2]  # type: ignore[return-value]
        preds = self._predict_members(rows.matrix_for(self._index.columns, self._columns_fitted))
        preds.flags.writeable = False
        rows.memo[id(self)] = (weakref.ref(self), self._n_fits, preds)
        return preds

    def _predict_members(self, X: np.ndarray) -> np.ndarray:
        if len(X) <= _SMALL_BATCH and self._trees:
            # A few rows: walking the trees in Python is ~10x faster than scikit-learn's
            # per-tree calls, and gives the very same sums (same order of additions).
            return np.array([[_walk(trees, row) for row in X.tolist()] for trees in self._trees])
        predict = _predict_fixing_constants if len(X) >= _SPECIALIZE_ROWS else (lambda m, X: m.predict(X))
        with _one_thread():  # type: ignore[attr-defined]
            return np.stack([predict(m, X) for m in self._members])  # type: ignore[attr-defined]

    def predict_mean_std(self, xs: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        preds = self.predict_matrix(xs)
        std = preds.std(axis=0, ddof=1) if len(preds) > 1 else np.zeros(preds.shape[1])
        return preds.mean(axis=0), std

    def predict_one(self, x: Mapping[str, float]) -> float:
        return float(self.predict_matrix([x]).mean())


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


class _Params:
    """``clone()`` and ``repr()`` from the init arguments, which are stored as-is (River style)."""

    def _params(self) -> dict[str, object]:
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def refit(self) -> None:
        """Refit a batch model on everything learnt (River models learn as they go: no-op)."""
        model = getattr(self, "_model", None)
        if isinstance(model, BatchRefitRegressor):
            model.refit()

    def clone(self) -> _Params:
        """A fresh, unfitted predictor with the same parameters."""
        return type(self)(**self._params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


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


def _default_accuracy_regressor(seed: int) -> base.Regressor:
    return BatchRefitRegressor(
        max_iter=200,
        learning_rate=0.1,
        growth=1.5,
        starter=linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0),
        seed=seed,
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
        on the replay: docs/REPLAY.md, session 3).
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
    ) -> None:
        self.regressor = regressor
        self.normalize_by_task = normalize_by_task
        self.interactions = interactions
        self.min_spread = min_spread
        self.seed = seed
        self.prior_accuracy = prior_accuracy
        self.task_prior_weight = task_prior_weight
        self._model = regressor.clone() if regressor is not None else _default_accuracy_regressor(seed)
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
    """Predicts the wall-clock seconds of a run, as a learned correction of a physics prior.

    With ``log_prior_seconds`` in the features the prediction is
    ``prior x exp(correction(x))``; without it, the model predicts log seconds directly.
    The default model works in log space: a Bayesian linear regression (time is close to
    log-linear in epochs, samples, batch size and a per-model constant) learns the first
    samples, then gradient boosting refit on a geometric schedule takes over (median
    absolute log error 0.19 instead of 0.25 on the replay).

    Parameters
    ----------
    regressor
        A River regressor of log seconds (cloned); ``None``:
        ``BatchRefitRegressor(max_iter=50, learning_rate=0.4, growth=2.0)`` (gradient
        boosting refit each time the data doubles) with a Bayesian linear regression starter
        until its first fit. On the replay it is as good as 100 trees at 0.2 (docs/REPLAY.md,
        session 3) and halves the time model's share of Recommend.
    alpha, beta
        Prior precision and noise precision of the default's Bayesian linear starter.
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
            else BatchRefitRegressor(
                max_iter=50,
                learning_rate=0.4,
                growth=2.0,
                starter=linear_model.BayesianLinearRegression(alpha=alpha, beta=beta),
                seed=seed,
            )
        )
        self._log_residual = stats.Var()
        self._n_seen = 0

    #: The feature holding the physics prior (log seconds) that the model corrects.
    BASE_FEATURE = "log_prior_seconds"

    @staticmethod
    def _base(x: Mapping[str, float]) -> float:
        return x.get(TimePredictor.BASE_FEATURE, 0.0)

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        x = dict(x)
        target = math.log(max(float(y), 1e-3)) - self._base(x)
        if self._n_seen and not isinstance(self._model, BatchRefitRegressor):
            self._log_residual.update(target - _mean_std(self._model, x)[0])
        self._model.learn_one(x, target)
        self._n_seen += 1

    def _noise_std(self) -> float:
        """Standard deviation of the progressive-validation residual of log seconds."""
        if isinstance(self._model, BatchRefitRegressor):
            residual = self._model.progressive_residual()
            return math.sqrt(residual.get()) if residual.mean.n > 1 else 1.0
        return math.sqrt(self._log_residual.get()) if self._n_seen > 1 else 1.0

    def predict_log_dist(self, x: Mapping[str, float]) -> tuple[float, float]:
        """Mean and standard deviation of log(seconds)."""
        if not self._n_seen:
            return self._base(x), 1.0
        correction, spread = _mean_std(self._model, dict(x))
        noise = self._noise_std()
        return self._base(x) + correction, math.sqrt(spread**2 + noise**2)

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
        if isinstance(xs, FeatureRows):
            base_log = xs.column(self.BASE_FEATURE, 0.0)  # what _base reads, from the matrix
        else:
            base_log = np.array([self._base(x) for x in xs], dtype=float)
        if not self._n_seen:
            log_mean, log_std = base_log, np.ones(len(xs))
        else:
            correction, spread = _mean_std_many(self._model, xs)  # type: ignore[arg-type]
            noise = self._noise_std()
            log_mean, log_std = base_log + correction, np.sqrt(spread**2 + noise**2)
        seconds = np.exp(np.minimum(log_mean, 50.0))
        std = seconds * (np.exp(np.minimum(log_std, 10.0)) - 1.0)
        return seconds, std
