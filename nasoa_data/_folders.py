"""User folders in ImageFolder layout: scanning into splits and decoding images."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._refs import IMG_EXTENSIONS, Arrays, DatasetError, DatasetRef, _balanced_order, inside, validation_count

__all__ = ["FolderScan", "folder_geometry", "load_folder_sample", "open_image", "read_folder_arrays", "scan_folder"]


@dataclass(frozen=True)
class FolderScan:
    """A folder's images by split, as (absolute file path, class index), sorted."""

    class_names: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # fitted
    validation: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...]
    layout: str  # "train_val_test" | "train_val" | "split"

    @property
    def pool(self) -> tuple[tuple[str, int], ...]:
        """The training pool: fitted and validation images."""
        return tuple(sorted(self.train + self.validation))


def _list_images(class_dir: str, root: str | None) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not f.lower().endswith(IMG_EXTENSIONS):
                continue
            full = os.path.join(dirpath, f)
            if root is not None and not inside(os.path.realpath(full), root):
                raise DatasetError(f"{full!r} links outside the data root {root!r}; refused")
            found.append(full)
    return found


def _class_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _held_out(path: str, sub: str, index: dict[str, int], root: str | None) -> list[tuple[str, int]]:
    items = []
    for c in _class_dirs(os.path.join(path, sub)):
        files = _list_images(os.path.join(path, sub, c), root)
        if files and c not in index:
            raise DatasetError(
                f"class {c!r} is in {sub}/ but not in train/ of {path!r}; every held-out class needs training images"
            )
        items.extend((f, index[c]) for f in files)
    return items


def _carve(items: list[tuple[str, int]], rng: np.random.Generator, count: Callable[[int], int]) -> tuple[list, list]:
    """Split items per class: ``count(n)`` of a class's n images (seeded) go to the first list."""
    out, rest = [], []
    for label in sorted({lab for _, lab in items}):
        files = [f for f, lab in items if lab == label]
        order = rng.permutation(len(files))
        n_out = count(len(files))
        picked = [files[i] for i in order]
        out.extend((f, label) for f in sorted(picked[:n_out]))
        rest.extend((f, label) for f in sorted(picked[n_out:]))
    return out, rest


def scan_folder(path: str, seed: int, root: str | None) -> FolderScan:
    """The folder's classes and its three splits (see the split rule in ``nasoa_data._refs``)."""
    subdirs = _class_dirs(path)
    test_dir = "test" if "test" in subdirs else ("val" if "val" in subdirs else None)
    validation: list[tuple[str, int]] | None = None
    if "train" in subdirs and test_dir is not None:
        classes = _class_dirs(os.path.join(path, "train"))
        index = {c: i for i, c in enumerate(classes)}
        train = [(f, index[c]) for c in classes for f in _list_images(os.path.join(path, "train", c), root)]
        test = _held_out(path, test_dir, index, root)
        if test_dir == "test" and "val" in subdirs:
            layout = "train_val_test"
            validation = _held_out(path, "val", index, root)
        else:
            layout = "train_val"
    else:
        layout = "split"
        classes = _class_dirs(path)
        index = {c: i for i, c in enumerate(classes)}
        items = [(f, index[c]) for c in classes for f in _list_images(os.path.join(path, c), root)]
        # 80/20 per class; a class with 2+ images keeps one for testing.
        test, train = _carve(items, np.random.default_rng(seed), validation_count)
    if validation is None:  # carved from the training pool, with its own seeded stream
        validation, train = _carve(train, np.random.default_rng([seed, 2]), validation_count)
    present = sorted({label for _, label in train})
    where = path if layout == "split" else f"{path}/train"
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
        raise DatasetError(f"dataset {path!r} has no held-out images; add a test/ folder or more images per class")
    if not validation:
        raise DatasetError(
            f"dataset {path!r} has no validation images: give some class at least two training images, or add a val/ folder"
        )
    return FolderScan(tuple(classes), tuple(train), tuple(validation), tuple(test), layout)


@contextlib.contextmanager
def open_image(path: str) -> Iterator[Any]:
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


def read_folder_arrays(
    items: tuple[tuple[str, int], ...], size: tuple[int, int] | None, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images = []
    for file, _ in items:
        with open_image(file) as im:
            im = im.convert(mode)
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            images.append(np.asarray(im, dtype=np.uint8))
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    return x, np.array([label for _, label in items], dtype=np.int64)


def folder_geometry(items: tuple[tuple[str, int], ...]) -> tuple[tuple[int, int], str]:
    """The most common image size and the colour mode ("L" if every image is grey)."""
    sizes: dict[tuple[int, int], int] = {}
    grey = True
    for file, _ in items:
        with open_image(file) as im:  # reads the header only
            sizes[im.size] = sizes.get(im.size, 0) + 1
            grey = grey and im.mode in ("1", "L", "I", "I;16", "F")
    size = max(sizes, key=lambda s: (sizes[s], s))
    return size, ("L" if grey else "RGB")


def load_folder_sample(ref: DatasetRef, max_train: int | None = None, max_test: int | None = None) -> Arrays:
    """Decode (a class-balanced, seeded sample of) a folder's images as numpy arrays.

    Every image is converted to the folder's common mode (grey if all are grey) and resized
    to the most common size.
    """
    scan = scan_folder(ref.name, ref.seed, ref.data_root)
    rng = np.random.default_rng(ref.seed)
    train = _subsample(scan.pool, max_train, rng)
    test = _subsample(scan.test, max_test, rng)
    size, mode = folder_geometry(train + test)
    x_tr, y_tr = read_folder_arrays(train, size, mode)
    x_te, y_te = read_folder_arrays(test, size, mode)
    return x_tr, y_tr, x_te, y_te, scan.class_names


def _subsample(
    items: tuple[tuple[str, int], ...], limit: int | None, rng: np.random.Generator
) -> tuple[tuple[str, int], ...]:
    if limit is None or len(items) <= limit:
        return items
    labels = np.array([label for _, label in items])
    keep = _balanced_order(labels, rng)[:limit]
    return tuple(items[i] for i in sorted(keep))
