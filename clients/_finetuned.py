"""A fine-tuned model back in Python: :func:`load_finetuned` and :class:`FineTuned`.

No pickle anywhere: the weights are safetensors, the manifest JSON, and the model is rebuilt
from the manifest alone (the zoo entry's family and architecture, the class count), so a fresh
process on another machine needs nothing else. Pass a job id (downloaded first) or a
downloaded folder:

>>> ft = load_finetuned("3f2c...")              # doctest: +SKIP
>>> ft = load_finetuned("./3f2c...")            # doctest: +SKIP
>>> ft.predict(["cat.png", "dog.png"])          # doctest: +SKIP
[('cat', 0.97), ('dog', 0.88)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["MANIFEST_FORMAT", "FineTuned", "expand_images", "load_finetuned"]

MANIFEST_FORMAT = "nasoa-finetuned/1"
WEIGHTS, MANIFEST, SUMS = "model.safetensors", "manifest.json", "SHA256SUMS"
PREDICT_BATCH = 256


def expand_images(items: Iterable[Any]) -> list[Any]:
    """Paths, PIL images or arrays; a folder stands for its image files (recursively, sorted)."""
    from nasoa_data import IMG_EXTENSIONS, DatasetError

    out: list[Any] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
                if not found:
                    raise DatasetError(f"folder {str(path)!r} holds no images ({', '.join(IMG_EXTENSIONS)})")
                out.extend(found)
            elif path.is_file():
                out.append(path)
            else:
                raise DatasetError(f"image {str(path)!r} does not exist")
        else:
            out.append(item)
    return out


class FineTuned:
    """A fine-tuned model with what it needs to be used: classes, preprocessing, provenance.

    ``model`` is a torch module in eval mode; ``transform`` maps one PIL image (or uint8 array)
    to the input tensor, as the manifest's preprocessing says; ``classes`` are in label order.
    """

    def __init__(self, model: torch.nn.Module, manifest: dict[str, Any]) -> None:
        from nasoa_data import image_transform

        pre = manifest["preprocessing"]
        self.model = model.eval()
        self.manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.transform: Callable[[Any], torch.Tensor] = image_transform(
            int(pre["input_size"]), int(pre["channels"]), pre["mean"], pre["std"]
        )

    def __repr__(self) -> str:
        return (f"FineTuned({self.manifest['base_model']['name']!r} on {self.manifest['dataset']['uri']!r}, "
                f"{len(self.classes)} classes, test accuracy {self.accuracy:.1f}%)")  # fmt: skip

    @property
    def accuracy(self) -> float:
        """Test-split accuracy (percent) of these weights, measured once by the worker."""
        return float(self.manifest["test_accuracy"])

    @property
    def plan(self) -> dict[str, Any]:
        return dict(self.manifest["plan"])

    @property
    def curve(self) -> list[dict[str, float]]:
        """Validation accuracy after each epoch: ``{"epoch", "accuracy", "seconds"}``."""
        return [dict(p) for p in self.manifest["curve"]]

    def predict(self, images: Any) -> list[tuple[str, float]]:
        """``(class, probability)`` per image: paths, PIL images, arrays, or folders of images."""
        import torch
        from PIL import Image

        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Iterable):
            images = [images]
        items = expand_images(images)
        device = next(self.model.parameters()).device
        out: list[tuple[str, float]] = []
        for start in range(0, len(items), PREDICT_BATCH):
            tensors = []
            for item in items[start : start + PREDICT_BATCH]:
                if isinstance(item, Path):
                    with Image.open(item) as im:
                        tensors.append(self.transform(im))
                else:
                    tensors.append(self.transform(item))
            with torch.inference_mode():
                probs = torch.softmax(self.model(torch.stack(tensors).to(device)).float(), dim=1)
            p, idx = probs.max(dim=1)
            out.extend((self.classes[int(i)], float(q)) for i, q in zip(idx, p, strict=True))
        return out

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors``, ``manifest.json`` and ``SHA256SUMS`` into ``directory``."""
        from zoo_store import atomic_write_bytes, save_safetensors

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        sha, size = save_safetensors(self.model.state_dict(), folder / WEIGHTS)
        manifest = dict(self.manifest)
        manifest["files"] = {WEIGHTS: {"sha256": sha, "size": size}}
        self.manifest = manifest
        manifest_sha, _ = atomic_write_bytes(folder / MANIFEST, manifest_bytes(manifest))
        (folder / SUMS).write_text(f"{manifest_sha}  {MANIFEST}\n{sha}  {WEIGHTS}\n")
        return folder


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _verify_sums(folder: Path) -> None:
    from zoo_store import verify_file

    sums = folder / SUMS
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        sha, _, name = line.partition("  ")
        if name in (WEIGHTS, MANIFEST):
            verify_file(folder / name, sha)


def load_finetuned(path_or_job: str | os.PathLike[str], *, device: str = "cpu", adaptor_address: str | None = None,
                   zoo_address: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> FineTuned:  # fmt: skip
    """Load a fine-tuned model from a folder, or download a job's model first (by job id).

    A job's model is downloaded into ``cache_dir`` (default ``$NASOA_HOME/models/<job id>``)
    and reused from there while its sha256 checks out.  Every file is verified against the
    manifest (and ``SHA256SUMS``); a mismatch raises ``zoo_store.ChecksumMismatch``.
    """
    folder = Path(path_or_job)
    if not folder.is_dir():
        from clients._artifacts import _safe_folder_name, download_job

        job_id = str(path_or_job)
        from nasoa_contracts import ClientSettings, load_settings

        home = load_settings(ClientSettings).home
        target = Path(cache_dir) if cache_dir else home / "models" / _safe_folder_name(job_id)
        folder = download_job(job_id, target, adaptor_address=adaptor_address, zoo_address=zoo_address,
                              progress=False)  # fmt: skip
    return _load_folder(folder, device)


def _load_folder(folder: Path, device: str) -> FineTuned:
    from zoo_store import ZooEntry, create_model_from_entry, load_safetensors

    if not (folder / MANIFEST).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a fine-tuned model folder: it needs {MANIFEST} and {WEIGHTS}")
    _verify_sums(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except ValueError as exc:
        raise ValueError(f"{folder / MANIFEST} is not JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"{folder / MANIFEST} has format {manifest.get('format')!r}; this version reads {MANIFEST_FORMAT}"
        )
    weights = manifest["files"][WEIGHTS]
    state = load_safetensors(folder / WEIGHTS, weights["sha256"], int(weights["size"]))
    entry = ZooEntry.from_dict(manifest["base_model"])
    model = create_model_from_entry(entry, num_classes=len(manifest["classes"]), pretrained=False)
    model.load_state_dict(state, strict=True)
    return FineTuned(model.to(device), manifest)
