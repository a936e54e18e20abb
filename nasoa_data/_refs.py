"""What a dataset is: URIs, the built-in catalogue, the split rule, errors.

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
seconds.  A folder has either ``train/``, ``val/`` and ``test/`` subfolders of class folders,
or ``train/`` and one held-out folder (``val/`` or ``test/``, used as the test split), or class
folders directly, split deterministically 80/20 per class into training pool and test
(``file://`` URIs accept ``?seed=N`` for the seeded splits).

Three splits (the split rule).  Every dataset has a train, a validation and a test split, all
seeded and disjoint.  ``train=N`` (and a folder's training part) names the *training pool*;
unless a folder brings its own ``val/`` next to ``test/``, the validation split is a seeded,
class-balanced 20% of that pool (:func:`validation_count`; at least one image, and at least
one left to fit), and the rest is fitted.  Fine-tuning chooses epochs and weights on the
validation split only; the test split is scored once, on the weights kept.

Environment (all optional):

* ``NASOA_DATA_ROOT``: folders must lie inside it (``..``, absolute paths and symlinks that
  escape it are refused); relative paths are taken relative to it.  Unset: any existing path,
  relative to the working directory.
* ``NASOA_FASHION_MNIST_DIR``: where the Fashion-MNIST IDX files are
  (default ``/usr/share/datasets/fashion-mnist``).

numpy is the only heavy import of the package at import time; torch and torchvision are
imported inside the torch dataset builders (``nasoa_data._torch``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BUILTIN_NAMES",
    "DatasetError",
    "DatasetRef",
    "VALIDATION_FRACTION",
    "validation_count",
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
# The share of a training pool held out for validation (see the split rule above).
VALIDATION_FRACTION = 0.2


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
    num_train: int  # the training pool: fitted images plus the validation split
    num_test: int
    seed: int
    class_names: tuple[str, ...]
    image_size: int | None = None
    channels: int | None = None
    layout: str | None = None  # folders: "train_val" | "split"
    data_root: str | None = None  # folders: the real root it was checked against, if any
    num_validation: int = 0  # the part of the training pool held out for validation

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_fit(self) -> int:
        """Images the weights are trained on: the training pool less the validation split."""
        return self.num_train - self.num_validation


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


def validation_count(pool: int) -> int:
    """How many of a training pool of ``pool`` images go to the validation split.

    >>> validation_count(1347), validation_count(5), validation_count(2), validation_count(1)
    (269, 1, 1, 0)
    """
    if pool < 2:
        return 0
    return min(max(1, round(VALIDATION_FRACTION * pool)), pool - 1)


def inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


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


def _fashion_dir() -> str:
    from nasoa_contracts import DataSettings, load_settings

    return str(load_settings(DataSettings).fashion_mnist_dir)


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
