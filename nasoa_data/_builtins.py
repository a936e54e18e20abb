"""The built-in datasets as numpy arrays, and the train/validation/test splits of any dataset."""

from __future__ import annotations

import functools
import importlib.util
import math
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._folders import folder_geometry, load_folder_sample, read_folder_arrays, scan_folder
from ._generators import render_patterns, render_shapes
from ._refs import (
    _BUILTINS,
    Arrays,
    DatasetError,
    DatasetRef,
    _balanced_order,
    _fashion_dir,
    _fashion_files,
    validation_count,
)
from ._resolve import resolve

__all__ = ["SplitArrays", "load_arrays", "load_splits", "split_validation"]


def load_arrays(ref: DatasetRef | str) -> Arrays:
    """Load a dataset as ``(x_train, y_train, x_test, y_test, class_names)``.

    Images are uint8 NHWC (channels 1 or 3), labels int64.  Built-ins are cached in-process
    and deterministic for a given URI; folders decode every image (see
    :func:`load_folder_sample` to cap that).

    >>> x, y, xt, yt, names = load_arrays("builtin:shapes?train=16&test=8")
    >>> x.shape, x.dtype, xt.shape
    ((16, 32, 32, 3), dtype('uint8'), (8, 32, 32, 3))
    >>> y[:8].tolist(), names[:3]
    ([0, 1, 2, 3, 4, 5, 6, 7], ('circle', 'square', 'triangle'))
    """
    if isinstance(ref, str):
        ref = resolve(ref)
    if ref.kind == "folder":
        return load_folder_sample(ref)
    return _load_builtin(ref.name, ref.num_train, ref.num_test, ref.seed)


class SplitArrays(NamedTuple):
    """The three splits as ``(x, y)`` uint8 NHWC images and int64 labels, and the class names."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    class_names: tuple[str, ...]


def load_splits(ref: DatasetRef | str) -> SplitArrays:
    """The dataset's train (fitted), validation and test splits as arrays (the split rule).

    >>> s = load_splits("builtin:digits")
    >>> len(s.train[1]), len(s.validation[1]), len(s.test[1])
    (1078, 269, 450)
    """
    if isinstance(ref, str):
        ref = resolve(ref)
    if ref.kind == "folder":
        scan = scan_folder(ref.name, ref.seed, ref.data_root)
        size, mode = folder_geometry(scan.pool + scan.test)
        return SplitArrays(
            read_folder_arrays(scan.train, size, mode),
            read_folder_arrays(scan.validation, size, mode),
            read_folder_arrays(scan.test, size, mode),
            scan.class_names,
        )
    x, y, xt, yt, names = _load_builtin(ref.name, ref.num_train, ref.num_test, ref.seed)
    fit, val = split_validation(y, ref.seed)
    return SplitArrays((x[fit], y[fit]), (x[val], y[val]), (xt, yt), names)


def split_validation(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, validation) of a training pool: a seeded, class-balanced
    :func:`~nasoa_data.validation_count` of it for validation, from its own random stream."""
    order = _balanced_order(labels, np.random.default_rng([seed, 2]))
    n_val = validation_count(len(labels))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@functools.lru_cache(maxsize=8)
def _load_builtin(name: str, train: int, test: int, seed: int) -> Arrays:
    spec = _BUILTINS[name]
    if name == "digits":
        x, y = _digits()
        order = _balanced_order(y, np.random.default_rng(seed))
        tr, te = order[:train], order[train : train + test]
        out = (x[tr], y[tr], x[te], y[te])
    elif name == "fashion-mnist":
        x_all, y_all, xt_all, yt_all = _fashion(_fashion_dir())
        rng = np.random.default_rng(seed)
        tr = np.sort(_balanced_order(y_all, rng)[:train])
        te = np.sort(_balanced_order(yt_all, rng)[:test])
        out = (x_all[tr], y_all[tr], xt_all[te], yt_all[te])
    else:
        make = render_shapes if name == "shapes" else render_patterns
        # Separate streams: the test set does not change when only train= changes.
        x_tr, y_tr = make(train, np.random.default_rng([seed, 0]))
        x_te, y_te = make(test, np.random.default_rng([seed, 1]))
        out = (x_tr, y_tr, x_te, y_te)
    arrays = tuple(np.ascontiguousarray(a) for a in out)
    for a in arrays:
        a.setflags(write=False)  # shared by the cache: nobody may modify them
    return (*arrays, spec.class_names)  # type: ignore[return-value]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """load_digits' data as uint8 8x8x1 (0..16 scaled to 0..255)."""
    # Reading scikit-learn's bundled CSV directly avoids a ~1 s `import sklearn.datasets`;
    # the loader is the fallback when that file moves.
    spec = importlib.util.find_spec("sklearn")
    csv = None
    if spec is not None and spec.submodule_search_locations:
        csv = Path(list(spec.submodule_search_locations)[0]) / "datasets/data/digits.csv.gz"
    if csv is not None and csv.is_file():
        data = np.loadtxt(csv, delimiter=",", dtype=np.float64)
        raw, y = data[:, :-1], data[:, -1].astype(np.int64)
    else:  # pragma: no cover - depends on scikit-learn's layout
        from sklearn.datasets import load_digits

        bunch = load_digits()
        raw, y = bunch.data, bunch.target.astype(np.int64)
    x = np.rint(raw * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8, 1)
    return x, y


@functools.lru_cache(maxsize=2)
def _fashion(directory: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xi, yi, xti, yti = (_read_idx(p) for p in _fashion_files(directory))
    return xi[..., None], yi.astype(np.int64), xti[..., None], yti.astype(np.int64)


def _read_idx(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        data = zlib.decompress(f.read(), wbits=31)  # 4x faster than gzip.open(...).read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path!r} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise DatasetError(f"{path!r} is truncated: expected {shape}, got {body.size} bytes")
    return body.reshape(shape)
