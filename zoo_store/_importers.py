"""Importers: released ET-NAS ``.pth`` checkpoints and torchvision weights into a ZooStore.

Foreign weights are read with ``torch.load(..., weights_only=True)`` only (a pickle that would
run code is refused before anything runs), loaded strictly into the architecture, converted to
safetensors and registered. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from zoo_store._checkpoints import load_torch_weights, sha256_file
from zoo_store._entries import ZooEntry
from zoo_store._families import build_model, load_into_architecture
from zoo_store._store import ZooStore

__all__ = ["RELEASED_TOP1", "encoding_from_path", "import_etnas_pth", "import_torchvision"]

# ImageNet top-1 of the released models (PAPER.md, the public README).
RELEASED_TOP1: dict[str, float] = {
    "ET-NAS-A": 62.06,
    "ET-NAS-B": 66.92,
    "ET-NAS-C": 71.29,
    "ET-NAS-D": 74.46,
    "ET-NAS-E": 76.87,
    "ET-NAS-F": 78.80,
    "ET-NAS-G": 80.41,
    "ET-NAS-H": 80.92,
    "ET-NAS-I": 81.38,
    "ET-NAS-J": 82.08,
    "ET-NAS-K": 82.42,
    "ET-NAS-L": 82.65,
}


def encoding_from_path(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(encoding, released name or None)`` from ``<encoding>.pth`` or ``ET-NAS/<name>/<encoding>.pth``.

    >>> encoding_from_path("ET-NAS/ET-NAS-B/031-_32_1-1-221-11121.pth")
    ('031-_32_1-1-221-11121', 'ET-NAS-B')
    >>> encoding_from_path("/tmp/2-_32_2-11-112-1121112.pth")
    ('2-_32_2-11-112-1121112', None)
    """
    from zoo_store._encoding import ETNASEncoding

    p = Path(path)
    stem = p.name
    for suffix in (".pth.tar", ".pth", ".pt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    encoding = str(ETNASEncoding.parse(stem))  # InvalidEncodingError names the bad position
    parent = p.parent.name
    released = parent if re.fullmatch(r"ET-NAS-[A-L]", parent) else None
    return encoding, released


def import_etnas_pth(
    path: str | os.PathLike[str],
    store: ZooStore,
    *,
    name: str | None = None,
    input_size: int = 224,
    source_accuracy: float | None = None,
    overwrite: bool = False,
) -> ZooEntry:
    """Import a released ET-NAS state dict (``weights_only``, strict load) as safetensors.

    The encoding comes from the file name. The name defaults to the released name in lower case
    (``et-nas-b``) or ``etnas-<encoding>``. Step time is not measured here: run
    ``nasoa-zoo profile NAME``.
    """
    from zoo_store._encoding import OFFICIAL_ENCODINGS

    encoding, released = encoding_from_path(path)
    if released is None:
        released = next((n for n, e in OFFICIAL_ENCODINGS.items() if e == encoding), None)
    state_dict = load_torch_weights(path)
    load_into_architecture("etnas", encoding, state_dict)  # strict; a clear error if it does not fit
    if name is None:
        name = released.lower() if released else "etnas-" + re.sub(r"[^A-Za-z0-9._-]", "", encoding)
    if source_accuracy is None:
        source_accuracy = RELEASED_TOP1.get(released or "", 0.0)
    entry = ZooEntry(
        name=name,
        family="etnas",
        architecture=encoding,
        num_params=0,
        macs=0,
        input_size=input_size,
        source_accuracy=source_accuracy,
        provenance={
            "search_run": "ET-NAS release (NAS-OA/NASOA)" if released else "imported",
            "source_data": "ImageNet-1k" if released else "unknown",
            "imported_from": Path(path).name,
            "imported_sha256": sha256_file(path),
            **({"released_name": released} if released else {}),
        },
    )
    return store.register(entry, state_dict=state_dict, overwrite=overwrite)


def import_torchvision(
    arch: str,
    weights_path: str | os.PathLike[str],
    store: ZooStore,
    *,
    name: str | None = None,
    input_size: int = 224,
    source_accuracy: float = 0.0,
    overwrite: bool = False,
) -> ZooEntry:
    """Import a torchvision architecture (resnet18, mobilenet_v3_small, regnet_x_400mf,
    efficientnet_b0, ...) from a local state dict file, loaded with ``weights_only=True``."""
    build_model("torchvision", arch, num_classes=10)  # unknown architecture: a clear error first
    state_dict = load_torch_weights(weights_path)
    load_into_architecture("torchvision", arch, state_dict)
    entry = ZooEntry(
        name=name or f"tv-{arch.replace('_', '-')}",
        family="torchvision",
        architecture=arch,
        num_params=0,
        macs=0,
        input_size=input_size,
        source_accuracy=source_accuracy,
        provenance={
            "search_run": "baseline (torchvision)",
            "source_data": "unknown",
            "imported_from": Path(weights_path).name,
            "imported_sha256": sha256_file(weights_path),
        },
    )
    return store.register(entry, state_dict=state_dict, overwrite=overwrite)
