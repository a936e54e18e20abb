"""The fast prediction path of fitted gradient boosting, and the threading rules of its fits.

:func:`_predict_fixing_constants` gives the same numbers as scikit-learn's ``predict`` (tested
against it in tests/test_fast_paths.py), faster when the rows share columns (one request's
candidates share the task's features). It reads scikit-learn's private tree structures, which
is why pyproject.toml pins scikit-learn to the versions the test passes on.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

__all__ = ["fits_outside"]

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


def fitting_outside_lock() -> bool:
    """Whether this thread's fits release a lock that readers wait for (the background learner)."""
    return getattr(_OUTSIDE, "lock", None) is not None


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
