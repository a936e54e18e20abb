"""The zoo store on disk (:class:`ZooStore`) and the default store's timm-style functions.

A :class:`ZooStore` is a directory::

    <root>/entries/<name>.json            one ZooEntry per model
    <root>/blobs/<sha256>.safetensors     content-addressed checkpoints

Every write is atomic (temp file, fsync, ``os.replace``) and every checkpoint load verifies the
full sha256. The module-level functions (timm-style :func:`create_model`, :func:`list_models`
by fnmatch pattern) use the default store: ``$NASOA_ZOO_DIR`` if set, else the committed
``zoo_store/default_zoo/``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zoo_store._checkpoints import (
    InvalidCheckpointError,
    atomic_write_bytes,
    fsync_dir,
    load_safetensors,
    save_safetensors,
    sha256_file,
    validate_safetensors_header,
    verify_file,
)
from zoo_store._entries import _NAME_RE, ModelNotFound, ZooEntry, check_name, describe_architecture
from zoo_store._families import build_model, infer_num_classes, load_into_architecture, reset_classifier

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DEFAULT_ZOO_DIR",
    "ENV_ZOO_DIR",
    "ZooStore",
    "create_model",
    "create_model_from_entry",
    "default_store",
    "get_entry",
    "list_models",
]

DEFAULT_ZOO_DIR = Path(__file__).resolve().parent / "default_zoo"
ENV_ZOO_DIR = "NASOA_ZOO_DIR"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ZooStore:
    """A zoo on disk: ``entries/<name>.json`` and ``blobs/<sha256>.safetensors``.

    Thread-safe for one process (writes hold a lock); every write is atomic, so readers in other
    processes see either the old or the new file. Checkpoints are verified at every load.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ZooStore({str(self.root)!r})"

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    def blob_path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"invalid sha256 {sha256!r}")
        return self.blobs_dir / f"{sha256}.safetensors"

    def _entry_path(self, name: str) -> Path:
        return self.entries_dir / f"{check_name(name)}.json"

    # ---- reading

    def names(self) -> list[str]:
        if not self.entries_dir.is_dir():
            return []
        return sorted(p.stem for p in self.entries_dir.glob("*.json") if not p.name.startswith("."))

    def list_models(self, pattern: str = "*") -> list[str]:
        """Names matching the fnmatch pattern (all when empty), sorted."""
        pattern = pattern or "*"
        return [n for n in self.names() if fnmatch.fnmatchcase(n, pattern)]

    def list_entries(self, pattern: str = "*") -> list[ZooEntry]:
        return [self.get_entry(n) for n in self.list_models(pattern)]

    def has(self, name: str) -> bool:
        return _NAME_RE.match(name or "") is not None and self._entry_path(name).is_file()

    def get_entry(self, name: str) -> ZooEntry:
        """The entry named ``name``; raises ``ModelNotFound`` listing the available names."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ModelNotFound(str(name), self.names())
        try:
            text = self._entry_path(name).read_text()
        except FileNotFoundError:
            raise ModelNotFound(name, self.names()) from None
        return ZooEntry.from_json(text)

    def checkpoint_path(self, name: str, verify: bool = True) -> Path:
        """Path of the entry's checkpoint blob, its sha256 verified unless ``verify=False``."""
        entry = self.get_entry(name)
        path = self.blob_path(entry.sha256)
        if verify:
            verify_file(path, entry.sha256, entry.size_bytes)
        return path

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, after a full sha256 check (``ChecksumMismatch`` if corrupt)."""
        entry = self.get_entry(name)
        return load_safetensors(self.blob_path(entry.sha256), entry.sha256, entry.size_bytes)

    def create_model(
        self,
        name: str,
        num_classes: int | None = None,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
    ) -> nn.Module:
        """Build the entry's architecture, load its verified weights, set the classifier size."""
        return create_model_from_entry(
            self.get_entry(name),
            num_classes=num_classes,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path
            if checkpoint_path is not None
            else (self.blob_path(self.get_entry(name).sha256) if pretrained else None),
        )

    # ---- writing

    def put_entry(self, entry: ZooEntry) -> None:
        """Write (or overwrite) an entry's JSON atomically. Its blob must already be stored."""
        check_name(entry.name)
        with self._lock:
            atomic_write_bytes(self._entry_path(entry.name), entry.to_json().encode())

    def add_blob(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Copy a safetensors file into the blob store (validated, atomic); its (sha256, size)."""
        validate_safetensors_header(path)
        sha = sha256_file(path)
        dest = self.blob_path(sha)
        if dest.is_file() and sha256_file(dest) == sha:
            return sha, dest.stat().st_size
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob.", suffix=".tmp", dir=self.blobs_dir)
        os.fchmod(fd, 0o644)
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if sha256_file(tmp) != sha:
                raise InvalidCheckpointError(f"{path} changed while it was being copied")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.blobs_dir)
        return sha, dest.stat().st_size

    def add_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int]:
        """Store a state dict as a safetensors blob; its (sha256, size)."""
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob.", suffix=".safetensors", dir=self.blobs_dir)
        os.close(fd)
        try:
            sha, size = save_safetensors(state_dict, tmp)
            os.replace(tmp, self.blob_path(sha))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.blobs_dir)
        return sha, size

    def register(
        self,
        entry: ZooEntry,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> ZooEntry:
        """Add a model: store its checkpoint, check it loads into the architecture, write the entry.

        Exactly one of ``state_dict``/``checkpoint_path`` (a safetensors file) is given. The
        stored entry gets the checkpoint's sha256/size and the params, MACs, stage count and
        class count measured from the loaded model; the other fields are kept from ``entry``.
        Raises ``FileExistsError`` if the name is taken and ``overwrite`` is false.
        """
        check_name(entry.name)
        if (state_dict is None) == (checkpoint_path is None):
            raise ValueError("give exactly one of state_dict or checkpoint_path")
        if self.has(entry.name) and not overwrite:
            raise FileExistsError(f"zoo model {entry.name!r} already exists in {self.root}")
        if state_dict is None:
            sha, size = self.add_blob(checkpoint_path)  # type: ignore[arg-type]
        else:
            sha, size = self.add_state_dict(state_dict)
        weights = load_safetensors(self.blob_path(sha), sha, size)
        facts = describe_architecture(entry.family, entry.architecture, weights, entry.input_size)
        provenance = dict(entry.provenance)
        provenance["num_classes"] = str(facts.pop("num_classes"))
        final = entry.replace(sha256=sha, size_bytes=size, provenance=provenance, **facts)
        self.put_entry(final)
        return final

    def remove(self, name: str) -> None:
        """Delete an entry (its blob is kept while other entries use it)."""
        entry = self.get_entry(name)
        with self._lock:
            self._entry_path(name).unlink()
            fsync_dir(self.entries_dir)
            if not any(e.sha256 == entry.sha256 for e in self.list_entries()):
                self.blob_path(entry.sha256).unlink(missing_ok=True)

    def update_step_time(self, name: str, device_class: str, ms: float, batch_size: int) -> ZooEntry:
        entry = self.get_entry(name)
        times = dict(entry.step_time_ms) if entry.step_batch_size == batch_size else {}
        times[device_class] = round(float(ms), 3)
        updated = entry.replace(step_time_ms=times, step_batch_size=batch_size)
        self.put_entry(updated)
        return updated


def create_model_from_entry(
    entry: ZooEntry,
    num_classes: int | None = None,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build ``entry``'s architecture; with ``pretrained``, load ``checkpoint_path`` (sha-verified).

    The checkpoint is loaded strictly with its own classifier size, then the classifier is
    replaced when ``num_classes`` differs. Workers call this with the path from their
    :class:`~zoo_store.CheckpointCache`.
    """
    if not pretrained:
        return build_model(entry.family, entry.architecture, num_classes=num_classes or 1000)
    if checkpoint_path is None:
        raise ValueError(f"pretrained=True needs the checkpoint of {entry.name!r}")
    weights = load_safetensors(checkpoint_path, entry.sha256, entry.size_bytes or None)
    model = load_into_architecture(entry.family, entry.architecture, weights)
    if num_classes is not None and num_classes != infer_num_classes(entry.family, entry.architecture, weights):
        reset_classifier(model, num_classes)
    return model


# --------------------------------------------------------------------------- default store

_default_lock = threading.Lock()
_default: tuple[str, ZooStore] | None = None


def default_store() -> ZooStore:
    """The store at ``$NASOA_ZOO_DIR``, or the committed ``zoo_store/default_zoo/``."""
    global _default
    root = os.environ.get(ENV_ZOO_DIR) or str(DEFAULT_ZOO_DIR)
    with _default_lock:
        if _default is None or _default[0] != root:
            _default = (root, ZooStore(root))
        return _default[1]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the default store's models matching an fnmatch pattern, sorted."""
    return default_store().list_models(pattern)


def get_entry(name: str) -> ZooEntry:
    """The default store's entry; raises ``ModelNotFound`` listing the available names."""
    return default_store().get_entry(name)


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Create a zoo model by name from the default store (timm-style).

    With ``pretrained`` the checkpoint (the store's blob, or ``checkpoint_path``) is verified by
    sha256 and loaded; ``num_classes`` replaces the classifier when it differs from the source.
    """
    return default_store().create_model(
        name, num_classes=num_classes, pretrained=pretrained, checkpoint_path=checkpoint_path
    )
