"""Torch datasets of the splits, and the single-image transform that matches them.

torch and torchvision are imported inside the functions, so importing this module is light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._builtins import load_arrays, load_splits
from ._folders import scan_folder
from ._refs import _BUILTINS, IMAGENET_MEAN, IMAGENET_STD, DatasetError, DatasetRef
from ._resolve import resolve

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.utils.data import Dataset

__all__ = ["TorchSplits", "image_transform", "make_torch_datasets", "make_torch_splits", "normalisation"]


def normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std used by :func:`make_torch_datasets` (ImageNet's; their average for grey)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


def make_torch_datasets(
    ref: DatasetRef | str, image_size: int = 32, channels: int = 3
) -> tuple[Dataset[Any], Dataset[Any], int]:
    """``(train_ds, test_ds, num_classes)``: torch datasets of ``(float CHW tensor, int)``,
    the train set being the whole training pool (validation split included); pretraining uses
    it.  Fine-tuning uses :func:`make_torch_splits`.  Preprocessing as there.
    """
    ref, prep = _prepared(ref, image_size, channels)
    if ref.kind == "builtin":
        x_tr, y_tr, x_te, y_te, names = load_arrays(ref)
        return prep.tensors(x_tr, y_tr, augment=True), prep.tensors(x_te, y_te), len(names)
    scan = scan_folder(ref.name, ref.seed, ref.data_root)
    return prep.files(scan.pool, augment=True), prep.files(scan.test), len(scan.class_names)


class TorchSplits(NamedTuple):
    train: Dataset[Any]  # augmented
    validation: Dataset[Any]
    test: Dataset[Any]
    num_classes: int


def make_torch_splits(ref: DatasetRef | str, image_size: int = 32, channels: int = 3) -> TorchSplits:
    """The three splits (see the split rule) as torch datasets of ``(float CHW tensor, int)``.

    Images are converted to ``channels`` (grey is repeated to RGB), resized to
    ``image_size`` and normalised (:func:`normalisation`), exactly as
    :func:`image_transform` does for a single image.  The train split adds light
    augmentation: a random crop with zero padding of ``image_size // 8``, and a horizontal
    flip where a mirror image keeps its class (Fashion-MNIST, shapes, user folders; not digits
    or the oriented patterns).  Randomness comes from torch's global RNG, so
    ``torch.manual_seed`` makes an epoch reproducible.

    Built-ins are held in memory as uint8, converted and resized once with torchvision; their
    per-sample crop and flip are tensor slices equivalent to ``v2.RandomCrop(padding=...)`` and
    ``v2.RandomHorizontalFlip()``, about 6x cheaper per sample, which matters when a CPU
    fine-tune lasts seconds.  Folders go through the torchvision v2 pipeline from PIL.
    """
    ref, prep = _prepared(ref, image_size, channels)
    if ref.kind == "builtin":
        s = load_splits(ref)
        return TorchSplits(
            prep.tensors(*s.train, augment=True), prep.tensors(*s.validation), prep.tensors(*s.test),
            len(s.class_names),
        )  # fmt: skip
    scan = scan_folder(ref.name, ref.seed, ref.data_root)
    return TorchSplits(
        prep.files(scan.train, augment=True), prep.files(scan.validation), prep.files(scan.test),
        len(scan.class_names),
    )  # fmt: skip


def image_transform(
    image_size: int, channels: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], torch.Tensor]:
    """One image (PIL image, or uint8 array HxW / HxWxC) -> normalised float CHW tensor.

    The same arithmetic as the evaluation splits of :func:`make_torch_splits` for built-ins,
    so a model scores a built-in's images the same way through either path.
    """
    import torch
    from torchvision.transforms.v2 import functional as F

    c = len(mean)
    shift = torch.tensor(mean, dtype=torch.float32).view(c, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(c, 1, 1) * 255.0)

    def transform(image: Any) -> torch.Tensor:
        from PIL import Image

        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.dtype != np.uint8:
                raise DatasetError(f"image arrays must be uint8 (HxW or HxWxC), got {array.dtype}")
            image = Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array)
        t = F.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
        if t.shape[-1] != image_size or t.shape[-2] != image_size:
            t = F.resize(t, [image_size, image_size], antialias=True)
        return (t.float() - shift) * scale

    return transform


class _Prep:
    """How one ``(image_size, channels)`` turns arrays or files into datasets."""

    def __init__(self, ref: DatasetRef, image_size: int, channels: int) -> None:
        self.image_size, self.channels = image_size, channels
        self.mean, self.std = normalisation(channels)
        self.hflip = _BUILTINS[ref.name].hflip if ref.kind == "builtin" else True
        self.pad = max(1, image_size // 8)

    def tensors(self, x: np.ndarray, y: np.ndarray, augment: bool = False) -> Dataset[Any]:
        images = _prepare_tensor(x, self.image_size, self.channels)
        cls = _dataset_classes()["_TensorImages"]
        if augment:
            return cls(images, y, self.mean, self.std, pad=self.pad, flip=self.hflip)
        return cls(images, y, self.mean, self.std)

    def files(self, items: tuple[tuple[str, int], ...], augment: bool = False) -> Dataset[Any]:
        import torch
        from torchvision.transforms import v2

        steps: list[Any] = [v2.PILToTensor(), v2.Resize((self.image_size, self.image_size), antialias=True)]
        if augment:  # resizing before the crop keeps the same pixels per class whatever the file sizes
            steps.append(v2.RandomCrop(self.image_size, padding=self.pad))
            if self.hflip:
                steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        mode = "L" if self.channels == 1 else "RGB"
        return _dataset_classes()["_FileImages"](items, mode, v2.Compose(steps))


def _prepared(ref: DatasetRef | str, image_size: int, channels: int) -> tuple[DatasetRef, _Prep]:
    if isinstance(ref, str):
        ref = resolve(ref)
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    if image_size < 8:
        raise DatasetError(f"image_size must be at least 8, got {image_size}")
    return ref, _Prep(ref, image_size, channels)


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
            from ._folders import open_image

            path, label = self.items[i]
            with open_image(path) as im:
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
