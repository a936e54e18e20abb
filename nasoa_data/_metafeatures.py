"""Task meta-features: a few cheap numbers that describe a dataset to the predictors.

Computed once per dataset content and cached as JSON by content hash, so a client can send
them with every request at no cost.  numpy only: no torch import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._builtins import load_arrays
from ._folders import load_folder_sample, scan_folder
from ._refs import DatasetRef
from ._resolve import resolve

__all__ = ["MetaFeatures", "compute_meta_features"]

log = logging.getLogger(__name__)

# Bump when a definition below changes: old cache entries then stop matching.
FEATURES_VERSION = 1
PROBE_TRAIN = 1000  # probe sample sizes: enough for a stable estimate, still milliseconds
PROBE_TEST = 500
PROBE_SIDE = 8  # the probe sees 8x8 images: coarse structure only
# User folders: decode at most this many images for pixel statistics and probes.
FOLDER_SAMPLE_TRAIN = 1000
FOLDER_SAMPLE_TEST = 500


@dataclass(frozen=True)
class MetaFeatures:
    """Meta-features of one dataset (``as_dict`` gives them all as floats).

    =========================  ==================================================================
    feature                    meaning
    =========================  ==================================================================
    num_samples                training images
    num_test                   held-out images
    num_classes                classes
    samples_per_class          num_samples / num_classes
    image_size                 side of the images in pixels (mean of height and width)
    channels                   1 (grey) or 3 (colour)
    class_entropy              entropy of the training labels / log(num_classes); 1 = balanced
    class_ratio                smallest / largest class count in training; 1 = balanced
    pixel_mean                 mean pixel value over training images, in [0, 1]
    pixel_std                  standard deviation of pixel values, in [0, 1]
    colourfulness              mean over pixels of the std across RGB channels (0 for grey)
    mean_gradient              mean absolute difference of neighbouring pixels, in [0, 1]:
                               high for fine texture and noise
    probe_centroid_accuracy    held-out accuracy (percent) of a nearest-centroid classifier on
                               8x8 grey images, each standardised (plus its mean and std as two
                               features, so colour and contrast do not swamp the shape),
                               <= 1,000 train / 500 test images, seeded
    probe_knn_accuracy         the same with a 1-nearest-neighbour classifier
    =========================  ==================================================================

    The probes predict difficulty: a task that a linear-ish probe on 8x8 pixels already solves
    is easy to fine-tune on.  ``content_hash`` (the cache key) is not a feature.
    """

    num_samples: int
    num_test: int
    num_classes: int
    samples_per_class: float
    image_size: float
    channels: int
    class_entropy: float
    class_ratio: float
    pixel_mean: float
    pixel_std: float
    colourfulness: float
    mean_gradient: float
    probe_centroid_accuracy: float
    probe_knn_accuracy: float
    content_hash: str = ""

    def as_dict(self) -> dict[str, float]:
        """Every feature as a float, in declaration order (``content_hash`` left out)."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "content_hash"}


def default_cache_dir() -> Path:
    """``$NASOA_CACHE_DIR/meta``, else ``~/.cache/nasoa/meta``."""
    from nasoa_contracts import DataSettings, load_settings

    base = load_settings(DataSettings).cache_dir
    return (base if base else Path.home() / ".cache" / "nasoa") / "meta"


def compute_meta_features(
    uri_or_ref: str | DatasetRef,
    cache_dir: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> MetaFeatures:
    """Meta-features of a dataset, read from the cache when its content was seen before.

    ``data_root`` applies when a folder URI is given (see :func:`nasoa_data.resolve`).
    Cache failures (read-only disk, corrupt file) only cost a recomputation.

    >>> import tempfile
    >>> mf = compute_meta_features("builtin:digits", cache_dir=tempfile.mkdtemp())
    >>> mf.num_samples, mf.num_classes, mf.image_size, mf.channels
    (1347, 10, 8.0, 1)
    >>> mf.probe_knn_accuracy > 90
    True
    """
    ref = uri_or_ref if isinstance(uri_or_ref, DatasetRef) else resolve(uri_or_ref, data_root)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if ref.kind == "builtin":
        arrays = load_arrays(ref)
        key = _hash_arrays(arrays)
    else:
        key = _hash_folder(ref)
        arrays = None
    cached = _read_cache(directory, key)
    if cached is not None:
        return cached
    if arrays is None:
        arrays = load_folder_sample(ref, FOLDER_SAMPLE_TRAIN, FOLDER_SAMPLE_TEST)
        counts = np.bincount(
            [label for _, label in scan_folder(ref.name, ref.seed, ref.data_root).pool],
            minlength=ref.num_classes,
        )
    else:
        counts = np.bincount(arrays[1], minlength=ref.num_classes)
    features = _compute(ref, arrays, counts, key)
    _write_cache(directory, key, ref.uri, features)
    return features


def _compute(
    ref: DatasetRef,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]],
    counts: np.ndarray,
    key: str,
) -> MetaFeatures:
    x_tr, y_tr, x_te, y_te, names = arrays
    entropy, ratio = class_balance(counts)
    pixels = x_tr.astype(np.float32) / 255.0
    colour = float(pixels.std(axis=-1).mean()) if pixels.shape[-1] > 1 else 0.0
    grad = 0.5 * (float(np.abs(np.diff(pixels, axis=1)).mean()) + float(np.abs(np.diff(pixels, axis=2)).mean()))
    centroid, knn = probe_accuracies(x_tr, y_tr, x_te, y_te)
    return MetaFeatures(
        num_samples=ref.num_train,
        num_test=ref.num_test,
        num_classes=len(names),
        samples_per_class=ref.num_train / len(names),
        image_size=(x_tr.shape[1] + x_tr.shape[2]) / 2,
        channels=int(x_tr.shape[-1]),
        class_entropy=entropy,
        class_ratio=ratio,
        pixel_mean=float(pixels.mean()),
        pixel_std=float(pixels.std()),
        colourfulness=colour,
        mean_gradient=grad,
        probe_centroid_accuracy=centroid,
        probe_knn_accuracy=knn,
        content_hash=key,
    )


def class_balance(counts: np.ndarray) -> tuple[float, float]:
    """(normalised entropy, min/max ratio) of class counts; both 1.0 when balanced.

    >>> class_balance(np.array([50, 50]))
    (1.0, 1.0)
    >>> entropy, ratio = class_balance(np.array([90, 10, 0]))
    >>> round(entropy, 3), ratio
    (0.296, 0.0)
    """
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) < 2 or counts.sum() == 0:
        return 1.0, 1.0
    p = counts / counts.sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum() / np.log(len(counts)))
    return round(entropy, 12), float(counts.min() / counts.max())


def downsample(x: np.ndarray, side: int) -> np.ndarray:
    """Block means of NHWC images to ``side`` x ``side`` (bins as even as the sizes allow).

    >>> downsample(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1), 2)[..., 0]
    array([[[ 2.5,  4.5],
            [10.5, 12.5]]], dtype=float32)
    """
    x = x.astype(np.float32)
    for axis in (1, 2):
        n = x.shape[axis]
        if n == side:
            continue
        if n < side:  # upsample small images by repetition so probes see a fixed size
            x = np.repeat(x, -(-side // n), axis=axis)
            n = x.shape[axis]
        edges = np.linspace(0, n, side + 1).astype(int)
        sums = np.add.reduceat(x, edges[:-1], axis=axis)
        shape = [1] * x.ndim
        shape[axis] = side
        x = sums / np.diff(edges).reshape(shape).astype(np.float32)
    return x


def probe_accuracies(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """Held-out accuracy (percent) of nearest-centroid and 1-NN probes on 8x8 grey images.

    Each image is standardised on its own first, its mean and std kept as two features: on
    the generated sources colour and brightness are random, and as 64 pixel features they
    would drown the shape in the distance.
    """
    rng = np.random.default_rng(seed)
    tr = _pick(len(y_tr), PROBE_TRAIN, rng)
    te = _pick(len(y_te), PROBE_TEST, rng)
    a, b = _probe_input(x_tr[tr]), _probe_input(x_te[te])
    mu, sd = a.mean(axis=0), a.std(axis=0) + 1e-3
    a, b = (a - mu) / sd, (b - mu) / sd
    ya, yb = y_tr[tr], y_te[te]
    classes = np.unique(ya)
    centroids = np.stack([a[ya == c].mean(axis=0) for c in classes])
    pred_c = classes[np.argmin(_sq_dist(b, centroids), axis=1)]
    pred_k = ya[np.argmin(_sq_dist(b, a), axis=1)]
    return float((pred_c == yb).mean() * 100), float((pred_k == yb).mean() * 100)


def _probe_input(x: np.ndarray) -> np.ndarray:
    grey = downsample(x, PROBE_SIDE).mean(axis=-1).reshape(len(x), -1)
    mean = grey.mean(axis=1, keepdims=True)
    std = grey.std(axis=1, keepdims=True)
    shape = (grey - mean) / (std + 1.0)  # +1 (of 255): flat images stay near 0
    return np.concatenate([shape, mean, std], axis=1)  # brightness and contrast: 2 features


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]


def _pick(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))


# --------------------------------------------------------------------------- cache


def _hash_arrays(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]],
) -> str:
    h = hashlib.sha256(f"nasoa-meta-v{FEATURES_VERSION}".encode())
    for a in arrays[:4]:
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(np.ascontiguousarray(a).data)
    h.update(json.dumps(list(arrays[4])).encode())
    return h.hexdigest()


def _hash_folder(ref: DatasetRef) -> str:
    """Hash of every file's bytes, relative path and label, in scan order."""
    scan = scan_folder(ref.name, ref.seed, ref.data_root)
    h = hashlib.sha256(f"nasoa-meta-v{FEATURES_VERSION}:folder".encode())
    h.update(json.dumps(list(scan.class_names)).encode())
    for split, items in (("train", scan.pool), ("test", scan.test)):
        for path, label in items:
            h.update(f"\0{split}\0{os.path.relpath(path, ref.name)}\0{label}\0".encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _read_cache(directory: Path, key: str) -> MetaFeatures | None:
    path = directory / f"{key}.json"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") != FEATURES_VERSION:
            return None
        values = dict(data["features"])
        kinds = {f.name: f.type for f in dataclasses.fields(MetaFeatures)}
        kwargs: dict[str, object] = {name: int(v) if kinds[name] == "int" else float(v) for name, v in values.items()}
        return MetaFeatures(**kwargs, content_hash=key)  # type: ignore[arg-type]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable meta-feature cache %s: %s", path, exc)
        return None


def _write_cache(directory: Path, key: str, uri: str, features: MetaFeatures) -> None:
    payload = {"version": FEATURES_VERSION, "uri": uri, "features": features.as_dict()}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / f"{key}.json")  # readers see the old file or the new
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("could not cache meta-features in %s: %s", directory, exc)
