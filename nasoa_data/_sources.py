"""Dataset sources: URIs, validation, numpy arrays and torch datasets.

A dataset is named by a URI:

==================================  ==============================================================
``builtin:digits``                  scikit-learn's 1,797 handwritten digits, 8x8 grey, 10 classes
``builtin:fashion-mnist``           Fashion-MNIST (Debian ``dataset-fashion-mnist``), 28x28 grey
``builtin:shapes``                  generated geometric shapes, 32x32 RGB, 8 classes
``builtin:patterns``                generated formula-driven patterns, 32x32 RGB, 20 classes; the
                                    zoo's pretraining source, unlike any fine-tuning task
``/some/dir`` or ``file:///dir``    a user folder in torchvision ImageFolder layout
==================================  ==============================================================

Built-ins take query parameters ``train``, ``test`` (sample counts) and ``seed``, e.g.
``builtin:fashion-mnist?train=2000&test=500&seed=0``.  The defaults keep a CPU fine-tune in
seconds.  A folder has either ``train/`` and ``val/`` (or ``test/``) subfolders of class folders,
or class folders directly, split deterministically 80/20 per class (``file://`` URIs accept
``?seed=N`` for that split).

Environment (all optional):

* ``NASOA_DATA_ROOT``: folders must lie inside it (``..``, absolute paths and symlinks that
  escape it are refused); relative paths are taken relative to it.  Unset: any existing path,
  relative to the working directory.
* ``NASOA_FASHION_MNIST_DIR``: where the Fashion-MNIST IDX files are
  (default ``/usr/share/datasets/fashion-mnist``).

numpy is the only heavy import at module level; torch and torchvision are imported inside
:func:`make_torch_datasets`, so resolving URIs and computing meta-features stays light.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import re
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.utils.data import Dataset

__all__ = [
    "BUILTIN_NAMES",
    "DatasetError",
    "DatasetRef",
    "load_arrays",
    "load_folder_sample",
    "make_torch_datasets",
    "normalisation",
    "resolve",
]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# torchvision's ImageFolder extensions, so a folder means the same thing to both.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Upper bound on generated samples: a typo like train=10000000 should fail, not eat the RAM.
MAX_GENERATED = 200_000
# ImageNet statistics: the convention of torchvision checkpoints; the zoo is pretrained with the
# same normalisation through this module, so any checkpoint sees the inputs it was trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(ValueError):
    """A dataset URI, path or parameter that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class DatasetRef:
    """A validated dataset: what :func:`resolve` returns and every loader takes.

    ``uri`` is canonical (defaults filled in, parameters sorted; folders as ``file://`` + real
    path), so equal datasets have equal URIs.  ``image_size`` and ``channels`` are ``None`` for
    folders, whose images are only opened when loaded.
    """

    uri: str
    kind: str  # "builtin" | "folder"
    name: str  # builtin name, or the folder's real path
    num_train: int
    num_test: int
    seed: int
    class_names: tuple[str, ...]
    image_size: int | None = None
    channels: int | None = None
    layout: str | None = None  # folders: "train_val" | "split"
    data_root: str | None = None  # folders: the real root it was checked against, if any

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- built-in specs


@dataclass(frozen=True)
class _Builtin:
    name: str
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    default_train: int
    default_test: int
    max_train: int
    max_test: int
    max_total: int  # digits: train and test come from one pool of 1,797
    hflip: bool  # horizontal flip keeps the class (not for digits or oriented patterns)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_SHAPE_NAMES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "crescent")
_PATTERN_NAMES = (
    "grating-low-0", "grating-low-45", "grating-low-90", "grating-low-135",
    "grating-high-0", "grating-high-45", "grating-high-90", "grating-high-135",
    "checker-small", "checker-large", "checker-diagonal", "rings", "spokes", "spiral",
    "white-noise", "smooth-noise", "plaid", "dots", "zigzag", "hexagonal",
)  # fmt: skip
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_BUILTINS: dict[str, _Builtin] = {
    b.name: b
    for b in (
        _Builtin("digits", tuple(str(i) for i in range(10)), 8, 1, 1347, 450, 1797, 1797, 1797,
                 hflip=False),
        _Builtin("fashion-mnist", _FASHION_NAMES, 28, 1, 2000, 500, 60_000, 10_000, 70_000,
                 hflip=True),
        _Builtin("shapes", _SHAPE_NAMES, 32, 3, 2000, 500, MAX_GENERATED, MAX_GENERATED,
                 MAX_GENERATED, hflip=True),
        _Builtin("patterns", _PATTERN_NAMES, 32, 3, 2000, 500, MAX_GENERATED, MAX_GENERATED,
                 MAX_GENERATED, hflip=False),
    )
}  # fmt: skip
BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILTINS)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# --------------------------------------------------------------------------- resolve


def resolve(uri: str, data_root: str | os.PathLike[str] | None = None) -> DatasetRef:
    """Validate a dataset URI cheaply (no image is decoded) and return its :class:`DatasetRef`.

    ``data_root`` defaults to ``$NASOA_DATA_ROOT``; see the module docstring.

    >>> ref = resolve("builtin:digits")
    >>> ref.uri, ref.num_train, ref.num_test, ref.num_classes
    ('builtin:digits?seed=0&test=450&train=1347', 1347, 450, 10)
    >>> resolve("builtin:shapes?train=100&seed=3").uri
    'builtin:shapes?seed=3&test=500&train=100'
    >>> try:
    ...     resolve("builtin:shapes?size=5")
    ... except DatasetError as e:
    ...     print(e)
    unknown parameter 'size' in 'builtin:shapes?size=5'; allowed: seed, test, train
    """
    if not isinstance(uri, str) or not uri.strip():
        raise DatasetError(f"dataset URI must be a non-empty string, got {uri!r}")
    uri = uri.strip()
    if uri.startswith("builtin:"):
        return _resolve_builtin(uri)
    if uri.startswith("file://"):
        parsed = urllib.parse.urlsplit(uri)
        if parsed.netloc not in ("", "localhost"):
            raise DatasetError(f"file URI must be local (file:///path), got {uri!r}")
        params = _parse_query(uri, parsed.query, allowed=("seed",))
        return _resolve_folder(urllib.parse.unquote(parsed.path), uri, data_root, params)
    if _SCHEME.match(uri):
        raise DatasetError(
            f"unsupported dataset URI {uri!r}: use builtin:NAME "
            f"({', '.join(BUILTIN_NAMES)}), a folder path, or file:///path"
        )
    return _resolve_folder(uri, uri, data_root, {})


def _parse_query(uri: str, query: str, allowed: tuple[str, ...]) -> dict[str, int]:
    params: dict[str, int] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = urllib.parse.unquote(key)
        if key not in allowed:
            raise DatasetError(f"unknown parameter {key!r} in {uri!r}; allowed: {', '.join(sorted(allowed))}")
        if key in params:
            raise DatasetError(f"parameter {key!r} given twice in {uri!r}")
        if not sep or not re.fullmatch(r"\d{1,9}", value):
            raise DatasetError(f"parameter {key}={value!r} in {uri!r} must be a non-negative integer")
        params[key] = int(value)
    return params


def _resolve_builtin(uri: str) -> DatasetRef:
    name, _, query = uri[len("builtin:") :].partition("?")
    spec = _BUILTINS.get(name)
    if spec is None:
        raise DatasetError(
            f"unknown built-in dataset {name!r} in {uri!r}; known: " + ", ".join(f"builtin:{n}" for n in BUILTIN_NAMES)
        )
    params = _parse_query(uri, query, allowed=("seed", "test", "train"))
    train = params.get("train", spec.default_train)
    test = params.get("test", spec.default_test)
    seed = params.get("seed", 0)
    if train < spec.num_classes:
        raise DatasetError(
            f"train={train} in {uri!r} is too small: need at least {spec.num_classes} (the number of classes)"
        )
    limits = f"builtin:{name} allows at most train={spec.max_train}, test={spec.max_test}, train+test={spec.max_total}"
    if train > spec.max_train:
        raise DatasetError(f"train={train} in {uri!r} is too large: {limits}")
    if "test" not in params and train + test > spec.max_total:
        test = spec.max_total - train  # digits: a bigger train split takes it from test
    if test < 1:
        raise DatasetError(f"test={test} in {uri!r} must be at least 1")
    if test > spec.max_test or train + test > spec.max_total:
        raise DatasetError(f"{uri!r} asks for train={train}, test={test}: {limits}")
    if name == "fashion-mnist":
        _fashion_files(_fashion_dir())  # fails early and clearly when not installed
    canonical = f"builtin:{name}?seed={seed}&test={test}&train={train}"
    return DatasetRef(
        uri=canonical, kind="builtin", name=name, num_train=train, num_test=test, seed=seed,
        class_names=spec.class_names, image_size=spec.image_size, channels=spec.channels,
    )  # fmt: skip


def _env_data_root(data_root: str | os.PathLike[str] | None) -> str | None:
    if data_root is not None and str(data_root) != "":
        return str(data_root)
    env = os.environ.get("NASOA_DATA_ROOT", "")
    return env or None


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _resolve_folder(raw: str, uri: str, data_root: str | os.PathLike[str] | None, params: dict[str, int]) -> DatasetRef:
    root = _env_data_root(data_root)
    expanded = os.path.expanduser(raw)
    if root is not None:
        real_root = os.path.realpath(root)
        if not os.path.isdir(real_root):
            raise DatasetError(f"data root {root!r} (NASOA_DATA_ROOT) is not a directory")
        # realpath resolves '..' and symlinks before the check, so neither can escape.
        path = os.path.realpath(os.path.join(real_root, expanded))
        if not _inside(path, real_root):
            raise DatasetError(
                f"dataset path {raw!r} is outside the data root {root!r}; "
                f"put the data under the root or change NASOA_DATA_ROOT"
            )
    else:
        real_root = None
        path = os.path.realpath(expanded)
    if not os.path.exists(path):
        raise DatasetError(f"dataset path {raw!r} does not exist (resolved to {path!r})")
    if not os.path.isdir(path):
        raise DatasetError(
            f"dataset path {raw!r} is not a directory; expected an ImageFolder layout "
            f"(train/ and val/ with one folder per class, or one folder per class)"
        )
    seed = params.get("seed", 0)
    scan = _scan_folder(path, seed, real_root)
    return DatasetRef(
        uri="file://" + urllib.parse.quote(path) + (f"?seed={seed}" if seed else ""),
        kind="folder", name=path, num_train=len(scan.train), num_test=len(scan.test), seed=seed,
        class_names=scan.class_names, layout=scan.layout, data_root=real_root,
    )  # fmt: skip


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class _FolderScan:
    class_names: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # (absolute file path, class index)
    test: tuple[tuple[str, int], ...]
    layout: str


def _list_images(class_dir: str, root: str | None) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(IMG_EXTENSIONS):
                continue
            full = os.path.join(dirpath, f)
            if root is not None and not _inside(os.path.realpath(full), root):
                raise DatasetError(f"{full!r} links outside the data root {root!r}; refused")
            found.append(full)
    return found


def _class_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _scan_folder(path: str, seed: int, root: str | None) -> _FolderScan:
    subdirs = _class_dirs(path)
    test_dir = next((d for d in ("val", "test") if d in subdirs), None)
    if "train" in subdirs and test_dir is not None:
        layout = "train_val"
        classes = _class_dirs(os.path.join(path, "train"))
        index = {c: i for i, c in enumerate(classes)}
        train = [(f, index[c]) for c in classes for f in _list_images(os.path.join(path, "train", c), root)]
        test = []
        for c in _class_dirs(os.path.join(path, test_dir)):
            files = _list_images(os.path.join(path, test_dir, c), root)
            if files and c not in index:
                raise DatasetError(
                    f"class {c!r} is in {test_dir}/ but not in train/ of {path!r}; "
                    f"every held-out class needs training images"
                )
            test.extend((f, index[c]) for f in files)
    else:
        layout = "split"
        classes = _class_dirs(path)
        index = {c: i for i, c in enumerate(classes)}
        rng = np.random.default_rng(seed)
        train, test = [], []
        for c in classes:
            files = _list_images(os.path.join(path, c), root)
            order = rng.permutation(len(files))
            # 80/20 per class; a class with 2+ images keeps one for testing.
            n_test = min(max(1, round(0.2 * len(files))), len(files) - 1) if files else 0
            picked = [files[i] for i in order]
            test.extend((f, index[c]) for f in sorted(picked[:n_test]))
            train.extend((f, index[c]) for f in sorted(picked[n_test:]))
    present = sorted({label for _, label in train})
    where = f"{path}/train" if layout == "train_val" else path
    if not train:
        raise DatasetError(
            f"dataset {path!r} has no images ({', '.join(IMG_EXTENSIONS)}) in class folders under {where!r}"
        )
    if len(present) < 2:
        raise DatasetError(
            f"dataset {path!r} has images of only one class ({classes[present[0]]!r}); "
            f"classification needs at least two class folders with images"
        )
    if len(present) < len(classes):  # empty class folders would be dead outputs of the head
        empty = [c for i, c in enumerate(classes) if i not in present]
        raise DatasetError(f"class folders without training images in {where!r}: {empty}")
    if not test:
        raise DatasetError(f"dataset {path!r} has no held-out images; add a val/ folder or more images per class")
    return _FolderScan(tuple(classes), tuple(train), tuple(test), layout)


def _read_folder_arrays(
    items: tuple[tuple[str, int], ...], size: tuple[int, int] | None, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images = []
    for file, _ in items:
        with _open_image(file) as im:
            im = im.convert(mode)
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            images.append(np.asarray(im, dtype=np.uint8))
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    return x, np.array([label for _, label in items], dtype=np.int64)


@contextlib.contextmanager
def _open_image(path: str) -> Iterator[Any]:
    """``PIL.Image.open``, with an unreadable file as a DatasetError that names it."""
    from PIL import Image

    try:
        im = Image.open(path)
    except OSError as exc:  # PIL's UnidentifiedImageError, truncated or unreadable files
        raise DatasetError(f"image {path} cannot be read ({type(exc).__name__}); remove or replace it") from None
    with im:
        try:
            yield im
        except OSError as exc:  # decoding the pixels can fail later than the header
            raise DatasetError(f"image {path} is damaged ({exc}); remove or replace it") from None


def _folder_geometry(items: tuple[tuple[str, int], ...]) -> tuple[tuple[int, int], str]:
    """The most common image size and the colour mode ("L" if every image is grey)."""

    sizes: dict[tuple[int, int], int] = {}
    grey = True
    for file, _ in items:
        with _open_image(file) as im:  # reads the header only
            sizes[im.size] = sizes.get(im.size, 0) + 1
            grey = grey and im.mode in ("1", "L", "I", "I;16", "F")
    size = max(sizes, key=lambda s: (sizes[s], s))
    return size, ("L" if grey else "RGB")


def load_folder_sample(ref: DatasetRef, max_train: int | None = None, max_test: int | None = None) -> Arrays:
    """Decode (a class-balanced, seeded sample of) a folder's images as numpy arrays.

    Every image is converted to the folder's common mode (grey if all are grey) and resized
    to the most common size.
    """
    scan = _scan_folder(ref.name, ref.seed, ref.data_root)
    rng = np.random.default_rng(ref.seed)
    train = _subsample(scan.train, max_train, rng)
    test = _subsample(scan.test, max_test, rng)
    size, mode = _folder_geometry(train + test)
    x_tr, y_tr = _read_folder_arrays(train, size, mode)
    x_te, y_te = _read_folder_arrays(test, size, mode)
    return x_tr, y_tr, x_te, y_te, scan.class_names


def _subsample(
    items: tuple[tuple[str, int], ...], limit: int | None, rng: np.random.Generator
) -> tuple[tuple[str, int], ...]:
    if limit is None or len(items) <= limit:
        return items
    labels = np.array([label for _, label in items])
    keep = _balanced_order(labels, rng)[:limit]
    return tuple(items[i] for i in sorted(keep))


# --------------------------------------------------------------------------- arrays


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
        make = _render_shapes if name == "shapes" else _render_patterns
        # Separate streams: the test set does not change when only train= changes.
        x_tr, y_tr = make(train, np.random.default_rng([seed, 0]))
        x_te, y_te = make(test, np.random.default_rng([seed, 1]))
        out = (x_tr, y_tr, x_te, y_te)
    arrays = tuple(np.ascontiguousarray(a) for a in out)
    for a in arrays:
        a.setflags(write=False)  # shared by the cache: nobody may modify them
    return (*arrays, spec.class_names)  # type: ignore[return-value]


def _balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation interleaving the classes, so every prefix is class-balanced.

    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    >>> order = _balanced_order(labels, np.random.default_rng(0))
    >>> labels[order].tolist()
    [1, 0, 2, 1, 0, 2, 1, 0, 1, 0]
    >>> sorted(order.tolist()) == list(range(10))
    True
    """
    perm = rng.permutation(len(labels))
    lab = labels[perm]
    sort = np.argsort(lab, kind="stable")
    sorted_lab = lab[sort]
    starts = np.searchsorted(sorted_lab, sorted_lab, side="left")
    rank = np.empty(len(lab), dtype=np.int64)
    rank[sort] = np.arange(len(lab)) - starts  # position of each sample within its class
    return perm[np.lexsort((np.arange(len(lab)), rank))]


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


def _fashion_dir() -> str:
    return os.environ.get("NASOA_FASHION_MNIST_DIR", "") or FASHION_MNIST_DIR


_FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _fashion_files(directory: str) -> list[str]:
    paths = [os.path.join(directory, f) for f in _FASHION_FILES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"Fashion-MNIST is not installed (missing {missing[0]}); install it with "
            f"`apt-get install -y dataset-fashion-mnist` or set NASOA_FASHION_MNIST_DIR"
        )
    return paths


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


# --------------------------------------------------------------------------- generators


def _contrasting_colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of RGB colours in [0, 1] at least 0.45 apart, so every image is legible."""
    a = rng.random((n, 3))
    b = rng.random((n, 3))
    for _ in range(20):
        bad = np.linalg.norm(a - b, axis=1) < 0.45
        if not bad.any():
            break
        b[bad] = rng.random((int(bad.sum()), 3))
    bad = np.linalg.norm(a - b, axis=1) < 0.45
    b[bad] = np.where(a[bad] < 0.5, 1.0, 0.0)  # each channel >= 0.5 away: always legible
    return a, b


def _noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance uniform pixel noise (3x faster to draw than Gaussian)."""
    u = rng.random(shape, dtype=np.float32)
    u -= np.float32(0.5)
    u *= np.float32(np.sqrt(12.0))
    return u


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _render_shapes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 RGB images of 8 shapes, classes in turn: random place, size, colour, noise."""
    side, ss = 32, 2  # 2x supersampling gives anti-aliased edges (the box filter assumes 2)
    k = len(_SHAPE_NAMES)
    y = np.arange(n, dtype=np.int64) % k
    radius = rng.uniform(5.0, 12.0, n)
    cx = rng.uniform(radius + 0.5, side - radius - 0.5)
    cy = rng.uniform(radius + 0.5, side - radius - 0.5)
    theta = rng.uniform(0, 2 * np.pi, n)
    # Squares and diamonds differ only by 45 degrees, and a cross turned 45 degrees is an X:
    # keep those nearly upright so that the class stays well defined.
    upright = np.isin(y, [1, 3, 5])
    theta[upright] = rng.uniform(-0.2, 0.2, int(upright.sum()))
    fg, bg = _contrasting_colours(n, rng)
    noise_sigma = rng.uniform(0.0, 0.1, n)
    grad = rng.normal(0, 0.15, (n, 2))  # a gentle background ramp, so the background varies

    coords = ((np.arange(side * ss) + 0.5) / ss).astype(np.float32)
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    masks = np.empty((n, side * ss, side * ss), dtype=np.float32)
    f32 = np.float32
    for cls in range(k):
        idx = np.nonzero(y == cls)[0]
        if idx.size == 0:
            continue
        inv_r = (1.0 / radius[idx]).astype(f32)
        cos = (np.cos(theta[idx]) * inv_r).astype(f32)[:, None, None]
        sin = (np.sin(theta[idx]) * inv_r).astype(f32)[:, None, None]
        dx = gx[None] - cx[idx].astype(f32)[:, None, None]
        dy = gy[None] - cy[idx].astype(f32)[:, None, None]
        u, v = cos * dx + sin * dy, cos * dy - sin * dx  # rotated, in radius units
        name = _SHAPE_NAMES[cls]
        if name in ("circle", "ring", "star", "crescent"):
            r2 = u * u + v * v
        if name == "circle":
            m = r2 <= 1.0
        elif name == "square":
            m = np.maximum(np.abs(u), np.abs(v)) <= 0.8
        elif name == "triangle":
            m = (v >= -0.5) & (np.sqrt(3) * np.abs(u) + v <= 1.0)
        elif name == "cross":
            au, av = np.abs(u), np.abs(v)
            m = ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
        elif name == "ring":
            m = (r2 <= 1.0) & (r2 >= 0.36)
        elif name == "diamond":
            m = np.abs(u) + np.abs(v) <= 1.0
        elif name == "star":
            m = np.sqrt(r2) <= 0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))
        else:  # crescent
            m = (r2 <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.64)
        masks[idx] = m
    # 2x2 box filter as four strided adds: several times faster than mean(axis=(2, 4)).
    alpha = (masks[:, 0::2, 0::2] + masks[:, 1::2, 0::2] + masks[:, 0::2, 1::2]
             + masks[:, 1::2, 1::2])[..., None] * np.float32(0.25)  # fmt: skip
    pix = ((np.arange(side) + 0.5) / side - 0.5).astype(np.float32)
    g = grad.astype(np.float32)
    ramp = g[:, 0, None, None] * pix[None, :, None] + g[:, 1, None, None] * pix[None, None]
    img = ramp[..., None] + bg.astype(np.float32)[:, None, None, :]  # background
    img += alpha * (fg.astype(np.float32)[:, None, None, :] - img)  # alpha-blend the shape
    img += _noise(img.shape, rng) * noise_sigma.astype(np.float32)[:, None, None, None]
    return _to_uint8(img), y


def _render_patterns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 RGB formula-driven patterns (gratings, checkers, radial, noise), 20 classes."""
    side = 32
    k = len(_PATTERN_NAMES)
    y = np.arange(n, dtype=np.int64) % k
    coords = (np.arange(side) + 0.5) / side  # [0, 1)
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    gx, gy = gx[None], gy[None]
    value = np.empty((n, side, side), dtype=np.float64)
    for cls in range(k):
        idx = np.nonzero(y == cls)[0]
        m = idx.size
        if m == 0:
            continue

        def u(lo: float, hi: float, m: int = m) -> np.ndarray:
            return rng.uniform(lo, hi, m)[:, None, None]

        name = _PATTERN_NAMES[cls]
        phase = u(0, 2 * np.pi)
        if name.startswith("grating"):
            base = math.radians(float(name.rsplit("-", 1)[1]))
            ang = base + u(-0.14, 0.14)  # +-8 degrees: orientation is the class
            freq = u(1.5, 3.0) if "low" in name else u(5.0, 7.5)
            t = np.cos(ang) * gx + np.sin(ang) * gy
            v = 0.5 + 0.5 * np.cos(2 * np.pi * freq * t + phase)
        elif name.startswith("checker"):
            cells = u(6, 9) if name == "checker-small" else u(2, 3.5)
            ang = np.pi / 4 if name == "checker-diagonal" else 0.0
            a, b = np.cos(ang) * gx + np.sin(ang) * gy, -np.sin(ang) * gx + np.cos(ang) * gy
            off = u(0, 1)
            v = ((np.floor(a * cells + off) + np.floor(b * cells + off)) % 2).astype(float)
        elif name in ("rings", "spokes", "spiral"):
            cx, cy = u(0.3, 0.7), u(0.3, 0.7)
            r = np.hypot(gx - cx, gy - cy)
            th = np.arctan2(gy - cy, gx - cx)
            if name == "rings":
                v = 0.5 + 0.5 * np.cos(2 * np.pi * u(3, 6) * r + phase)
            elif name == "spokes":
                spokes = rng.integers(5, 10, m)[:, None, None]
                v = 0.5 + 0.5 * np.cos(spokes * th + phase)
            else:
                arms = rng.integers(2, 5, m)[:, None, None]
                v = 0.5 + 0.5 * np.cos(arms * th + 2 * np.pi * u(3, 5) * r + phase)
        elif name == "white-noise":
            v = rng.random((m, side, side))
        elif name == "smooth-noise":
            coarse = rng.random((m, 5, 5))
            v = _upsample_bilinear(coarse, side)
            v = (v - v.min(axis=(1, 2), keepdims=True)) / (np.ptp(v, axis=(1, 2), keepdims=True) + 1e-9)
        elif name == "plaid":
            ang = u(0, np.pi)
            f1, f2 = u(2, 5), u(2, 5)
            t1 = np.cos(ang) * gx + np.sin(ang) * gy
            t2 = -np.sin(ang) * gx + np.cos(ang) * gy
            v = 0.5 + 0.25 * (np.cos(2 * np.pi * f1 * t1 + phase) + np.cos(2 * np.pi * f2 * t2))
        elif name == "dots":
            f = u(3, 6)
            d = np.cos(2 * np.pi * f * gx + phase) * np.cos(2 * np.pi * f * gy + u(0, 6.3))
            v = (d > 0.5).astype(float)
        elif name == "zigzag":
            amp, f = u(0.05, 0.12), u(3, 6)
            tri = 2 * np.abs((gx * u(3, 5) + u(0, 1)) % 1 - 0.5)  # triangle wave along x
            v = 0.5 + 0.5 * np.cos(2 * np.pi * f * (gy + amp * tri * 4) + phase)
        else:  # hexagonal: three gratings 60 degrees apart
            ang, f = u(0, np.pi / 3), u(3, 5)
            acc = 0.0
            for j in range(3):
                a = ang + j * np.pi / 3
                acc = acc + np.cos(2 * np.pi * f * (np.cos(a) * gx + np.sin(a) * gy) + phase)
            v = (acc + 1.5) / 4.5
        value[idx] = np.broadcast_to(v, (m, side, side))
    c1, c2 = _contrasting_colours(n, rng)
    val = value[..., None]
    img = (c1[:, None, None, :] * (1 - val) + c2[:, None, None, :] * val).astype(np.float32)
    sigma = rng.uniform(0.0, 0.06, n).astype(np.float32)[:, None, None, None]
    img += _noise(img.shape, rng) * sigma
    return _to_uint8(img), y


def _upsample_bilinear(coarse: np.ndarray, side: int) -> np.ndarray:
    """Bilinear upsampling of (n, h, w) to (n, side, side), numpy only."""
    n, h, w = coarse.shape
    ys = np.linspace(0, h - 1, side)
    xs = np.linspace(0, w - 1, side)
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 2)
    fy = (ys - y0)[None, :, None]
    fx = (xs - x0)[None, None, :]
    a = coarse[:, y0][:, :, x0]
    b = coarse[:, y0][:, :, x0 + 1]
    c = coarse[:, y0 + 1][:, :, x0]
    d = coarse[:, y0 + 1][:, :, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


# --------------------------------------------------------------------------- torch


def normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std used by :func:`make_torch_datasets` (ImageNet's; their average for grey)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


def make_torch_datasets(
    ref: DatasetRef | str, image_size: int = 32, channels: int = 3
) -> tuple[Dataset[Any], Dataset[Any], int]:
    """``(train_ds, test_ds, num_classes)``: torch datasets of ``(float CHW tensor, int)``.

    Images are converted to ``channels`` (grey is repeated to RGB), resized to
    ``image_size`` and normalised (:func:`normalisation`).  The train set adds light
    augmentation: a random crop with zero padding of ``image_size // 8``, and a horizontal
    flip where a mirror image keeps its class (Fashion-MNIST, shapes, user folders; not digits
    or the oriented patterns).  Randomness comes from torch's global RNG, so
    ``torch.manual_seed`` makes an epoch reproducible.

    Built-ins are held in memory as uint8, converted and resized once with torchvision; their
    per-sample crop and flip are tensor slices equivalent to ``v2.RandomCrop(padding=...)`` and
    ``v2.RandomHorizontalFlip()``, about 6x cheaper per sample, which matters when a CPU
    fine-tune lasts seconds.  Folders go through the torchvision v2 pipeline from PIL.
    """
    if isinstance(ref, str):
        ref = resolve(ref)
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    if image_size < 8:
        raise DatasetError(f"image_size must be at least 8, got {image_size}")
    import torch
    from torchvision.transforms import v2

    mean, std = normalisation(channels)
    hflip = _BUILTINS[ref.name].hflip if ref.kind == "builtin" else True
    pad = max(1, image_size // 8)

    if ref.kind == "builtin":
        x_tr, y_tr, x_te, y_te, names = load_arrays(ref)
        prep = functools.partial(_prepare_tensor, image_size=image_size, channels=channels)
        images = _dataset_classes()["_TensorImages"]
        train_ds: Dataset[Any] = images(prep(x_tr), y_tr, mean, std, pad=pad, flip=hflip)
        test_ds: Dataset[Any] = images(prep(x_te), y_te, mean, std)
        return train_ds, test_ds, len(names)

    augment: list[Any] = [v2.RandomCrop(image_size, padding=pad)]
    if hflip:
        augment.append(v2.RandomHorizontalFlip())
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    train_tf = v2.Compose(augment + finish)
    test_tf = v2.Compose(finish)
    scan = _scan_folder(ref.name, ref.seed, ref.data_root)
    mode = "L" if channels == 1 else "RGB"
    # Resizing before the crop keeps the same pixels per class whatever the file sizes.
    load_tf = [v2.Resize((image_size, image_size), antialias=True)]
    files = _dataset_classes()["_FileImages"]
    train_ds = files(scan.train, mode, v2.Compose([v2.PILToTensor(), *load_tf, train_tf]))
    test_ds = files(scan.test, mode, v2.Compose([v2.PILToTensor(), *load_tf, test_tf]))
    return train_ds, test_ds, len(scan.class_names)


def _prepare_tensor(x: np.ndarray, image_size: int, channels: int) -> Any:
    """uint8 NHWC numpy -> uint8 NCHW tensor with the requested channels and side, once."""
    import torch
    from torchvision.transforms.v2 import functional as F

    t = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()  # copy: x is read-only
    if t.shape[1] == 1 and channels == 3:
        t = t.expand(-1, 3, -1, -1).contiguous()
    elif t.shape[1] == 3 and channels == 1:
        t = F.rgb_to_grayscale(t)
    if t.shape[-1] != image_size or t.shape[-2] != image_size:
        t = F.resize(t, [image_size, image_size], antialias=True)
    return t


@functools.cache
def _dataset_classes() -> dict[str, type]:
    """The torch Dataset subclasses, defined on first use so that this module never imports
    torch at import time.  Module ``__getattr__`` exposes them under their qualified names,
    so they pickle (e.g. for DataLoader workers started with spawn)."""
    import torch
    from torch.utils.data import Dataset

    class _TensorImages(Dataset):  # type: ignore[type-arg]
        """In-memory uint8 NCHW images; random crop (zero padding ``pad``) and flip per sample."""

        def __init__(
            self,
            images: torch.Tensor,
            labels: np.ndarray,
            mean: tuple[float, ...],
            std: tuple[float, ...],
            pad: int = 0,
            flip: bool = False,
        ):
            self.size = int(images.shape[-1])
            self.pad = pad
            self.flip = flip
            # Padded once here, so a random crop is a slice.
            self.images = torch.nn.functional.pad(images, (pad,) * 4) if pad else images
            self.labels = [int(v) for v in labels]
            c = int(images.shape[1])
            self.shift = torch.tensor(mean, dtype=torch.float32).view(c, 1, 1) * 255.0
            self.scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(c, 1, 1) * 255.0)

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            img = self.images[i]
            if self.pad:
                span = 2 * self.pad + 1
                # One draw decodes to (row offset, column offset, flip): a third of the RNG calls.
                r = int(torch.randint(0, span * span * 2, ()).item())
                top, left, mirror = r // (span * 2), (r // 2) % span, r % 2
                img = img[:, top : top + self.size, left : left + self.size]
                if self.flip and mirror:
                    img = img.flip(-1)
            return (img.float() - self.shift) * self.scale, self.labels[i]

    class _FileImages(Dataset):  # type: ignore[type-arg]
        """Images decoded from disk on access, the ImageFolder way."""

        def __init__(self, items: tuple[tuple[str, int], ...], mode: str, transform: Callable[[Any], Any]):
            self.items = items
            self.mode = mode
            self.transform = transform

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[Any, int]:

            path, label = self.items[i]
            with _open_image(path) as im:
                img = im.convert(self.mode)
            return self.transform(img), label

    classes: dict[str, type] = {"_TensorImages": _TensorImages, "_FileImages": _FileImages}
    for name, cls in classes.items():
        cls.__qualname__ = name
        cls.__module__ = __name__
    return classes


def __getattr__(name: str) -> Any:
    if name in ("_TensorImages", "_FileImages"):
        return _dataset_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
