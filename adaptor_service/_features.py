"""Feature dicts of (task, candidate) pairs, and their matrices.

:func:`make_features` is what every predictor learns from: the task's meta-features (with
log sizes), the candidate's epochs, hyperparameters and model, and the log of its physics
time estimate when it has one. :class:`FeatureIndex` gives columns to feature dicts (sorted
by name, so the matrix does not depend on the order keys arrive in); :class:`FeatureRows` is
one request's candidates as a matrix, converted once.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from nasoa_contracts import Candidate, TaskSpec

Features = dict[str, float]

__all__ = [
    "CandidateBlock",
    "FeatureIndex",
    "FeatureRows",
    "Features",
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

    :meth:`sort` renumbers them in name order; ``BatchRefitRegressor`` does so before each
    fit, so that the same samples with their keys in another order give the same model.

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

    def sort(self) -> None:
        """Renumber the columns in name order (a model fit after this reads them in that order)."""
        if list(self.columns) != sorted(self.columns):
            self.columns = {key: i for i, key in enumerate(sorted(self.columns))}
            self._groups.clear()

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
        self.memo: dict[int, tuple[object, ...]] = {}  # id(model) -> (weakref, version, predictions, ...)
        self.on_dicts: Callable[[], None] | None = None  # told when the dicts are made (a cache re-weighs)
        self.parent: FeatureRows | None = None  # the rows these were taken from, at ``index``
        self.index: np.ndarray | None = None

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

    @property
    def holds_dicts(self) -> bool:
        """Whether the rows hold every row's dict (made when a model read them), not only the matrix."""
        return self._xs is not None and self._remake is not None

    def _dicts(self) -> Sequence[Features]:
        made = False
        with self._lock:
            if self._xs is None:
                self._xs = self._remake()  # type: ignore[misc]
                made = True
            xs = self._xs
        if made and self.on_dicts is not None:
            self.on_dicts()
        return xs

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if i == 0:
            return self.first
        return self._dicts()[i]

    def __iter__(self) -> Iterator[Features]:
        return iter(self._dicts())

    def take(self, index: np.ndarray, first: Features) -> FeatureRows:
        """The rows at ``index``; ``first`` is the dict of row ``index[0]``."""
        part = FeatureRows.from_arrays(
            self.names, self.values[index], self.present[index], first, lambda: [self[i] for i in index.tolist()]
        )
        part.parent, part.index = self, index
        return part

    def column(self, name: str, default: float) -> np.ndarray:
        """The values of feature ``name``, ``default`` where a dict lacks it."""
        j = self.names.get(name)
        if j is None:
            return np.full(len(self), default)
        return np.where(self.present[:, j], self.values[:, j], default)

    def matrix_for(self, columns: Mapping[str, int], width: int, rows: np.ndarray | None = None) -> np.ndarray:
        """The matrix in a FeatureIndex's column order (what ``FeatureIndex.matrix`` gives); ``rows``: only those."""
        values = self.values if rows is None else self.values[rows]
        out = np.empty((len(values), width))
        for name, j in columns.items():
            if j >= width:
                continue
            src = self.names.get(name)
            out[:, j] = values[:, src] if src is not None else (0.0 if "=" in name else np.nan)
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
