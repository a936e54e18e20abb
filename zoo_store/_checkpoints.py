"""Checkpoint files: safetensors with a full sha256 check at every load, atomic writes.

Our store keeps safetensors only. Foreign weights (released ET-NAS ``.pth`` files, torchvision
weights) are read with ``torch.load(..., weights_only=True)``, which refuses any pickle that
would import or call code, and are converted to safetensors on import.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import torch

__all__ = [
    "ChecksumMismatch",
    "StreamingSha256",
    "InvalidCheckpointError",
    "UnsafeCheckpointError",
    "atomic_write_bytes",
    "atomic_write_chunks",
    "fsync_dir",
    "start_writeback",
    "load_safetensors",
    "load_torch_weights",
    "save_safetensors",
    "sha256_bytes",
    "sha256_file",
    "validate_safetensors_header",
    "verify_file",
]

_READ_CHUNK = 1 << 20
# A safetensors header larger than this is not one of ours (the format's own limit is 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_SAFETENSORS_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class ChecksumMismatch(ValueError):
    """A checkpoint's bytes do not hash to the sha256 recorded for it (corrupt or truncated)."""


class InvalidCheckpointError(ValueError):
    """A checkpoint file is not a valid safetensors file, or does not fit its architecture."""


class UnsafeCheckpointError(ValueError):
    """A weights file would have to run code (a pickle with globals or reducers) to load."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's full content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class StreamingSha256:
    """sha256 of a stream, computed on a helper thread while the caller writes the same bytes.

    hashlib releases the GIL on large buffers, so hashing one chunk overlaps writing it; at
    most ``depth`` chunks wait.  ``hexdigest()`` waits for them; ``close()`` (also done by
    ``hexdigest``) stops the thread and may be called any number of times.
    """

    def __init__(self, depth: int = 4) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self._digest = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")  # one thread: updates stay in order
        self._pending: list[Future[None]] = []
        self._depth = depth

    @classmethod
    def of_prefix(cls, path: str | os.PathLike[str], size: int) -> StreamingSha256:
        """One already fed with the first ``size`` bytes of ``path`` (a partial file to resume)."""
        digest = cls()
        if size:
            with open(path, "rb") as f:
                while size > 0 and (block := f.read(min(_READ_CHUNK, size))):
                    digest.update(block)
                    size -= len(block)
        return digest

    def update(self, data: bytes) -> None:
        self._pending.append(self._pool.submit(self._digest.update, data))
        if len(self._pending) > self._depth:
            self._pending.pop(0).result()

    def hexdigest(self) -> str:
        for future in self._pending:
            future.result()
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _check_digest(data_len: int, digest: str, path: object, sha256: str, size: int | None) -> None:
    if size is not None and data_len != size:
        kind = "truncated" if data_len < size else "too long"
        raise ChecksumMismatch(
            f"checkpoint {path} is {kind}: {data_len} bytes, expected {size} "
            f"(sha256 {sha256[:12]}...); delete it and fetch it again"
        )
    if digest != sha256:
        raise ChecksumMismatch(
            f"checkpoint {path} is corrupt: sha256 {digest[:12]}... != expected {sha256[:12]}... "
            f"({data_len} bytes); delete it and fetch it again"
        )


def verify_file(path: str | os.PathLike[str], sha256: str, size: int | None = None) -> None:
    """Raise ``ChecksumMismatch`` unless the file's full sha256 (and size, if given) match."""
    p = Path(path)
    try:
        actual_size = p.stat().st_size
    except FileNotFoundError:
        raise ChecksumMismatch(f"checkpoint {p} is missing (expected sha256 {sha256[:12]}...)") from None
    if size is not None and actual_size != size:
        _check_digest(actual_size, "", p, sha256, size)
    _check_digest(actual_size, sha256_file(p), p, sha256, size)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.cache
def _sync_file_range() -> object:
    try:
        return ctypes.CDLL(None).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these bytes to disk now (Linux ``sync_file_range``), so that
    the final fsync of a file written in chunks has little left to wait for; no-op elsewhere."""
    sync_file_range = _sync_file_range()
    if sync_file_range is not None:
        sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(length), 2)  # type: ignore[operator]  # _WRITE


def atomic_write_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> tuple[str, int]:
    """Write chunks to ``path`` atomically (temp file, fsync, ``os.replace``).

    Returns the (sha256, size) of what was written.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; zoo files are meant to be shared read-only
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(dest.parent)
    return digest.hexdigest(), size


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> tuple[str, int]:
    """Write ``data`` to ``path`` atomically; returns its (sha256, size)."""
    return atomic_write_chunks(path, [data])


def _read_header(f: BinaryIO, file_size: int, where: object) -> dict[str, object]:
    raw_len = f.read(8)
    if len(raw_len) < 8:
        raise InvalidCheckpointError(f"{where} is not a safetensors file: shorter than 8 bytes")
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len <= 0 or header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
        raise InvalidCheckpointError(
            f"{where} is not a safetensors file: header length {header_len} does not fit in {file_size} bytes"
        )
    try:
        header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidCheckpointError(f"{where} is not a safetensors file: bad header ({exc})") from None
    if not isinstance(header, dict):
        raise InvalidCheckpointError(f"{where} is not a safetensors file: header is not an object")
    data_len = file_size - 8 - header_len
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
            raise InvalidCheckpointError(f"{where}: tensor {key!r} has a malformed header entry")
        itemsize = _SAFETENSORS_DTYPES.get(str(spec["dtype"]))
        if itemsize is None:
            raise InvalidCheckpointError(f"{where}: tensor {key!r} has unknown dtype {spec['dtype']!r}")
        begin, end = spec["data_offsets"]
        numel = 1
        for dim in spec["shape"]:
            numel *= int(dim)
        if not (0 <= begin <= end <= data_len) or end - begin != numel * itemsize:
            raise InvalidCheckpointError(
                f"{where}: tensor {key!r} has data offsets {begin}..{end} that do not match its "
                f"shape {spec['shape']} / dtype {spec['dtype']} within {data_len} data bytes"
            )
    return header


def validate_safetensors_header(path: str | os.PathLike[str]) -> dict[str, object]:
    """Check that a file is a well-formed safetensors file; return its JSON header.

    Raises ``InvalidCheckpointError`` naming the problem.
    """
    p = Path(path)
    with open(p, "rb") as f:
        return _read_header(f, p.stat().st_size, p)


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """Save a state dict as safetensors, atomically; returns the file's (sha256, size)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = save(tensors, metadata=dict(metadata) if metadata else None)
    return atomic_write_bytes(path, data)


def load_safetensors(path: str | os.PathLike[str], sha256: str, size: int | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors checkpoint after checking its full sha256 (and size).

    The bytes are read once, hashed, and parsed from that same buffer, so what is verified is
    exactly what is loaded. Raises ``ChecksumMismatch`` or ``InvalidCheckpointError``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ChecksumMismatch(f"checkpoint {p} is missing (expected sha256 {sha256[:12]}...)") from None
    _check_digest(len(data), sha256_bytes(data), p, sha256, size)
    import io

    _read_header(io.BytesIO(data), len(data), p)
    try:
        return load(data)
    except SafetensorError as exc:
        raise InvalidCheckpointError(f"{p} is not a loadable safetensors file: {exc}") from None


def load_torch_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.pt`` state dict with ``weights_only=True``; never runs pickled code.

    Accepts a bare state dict or one wrapped under ``state_dict``/``model``. A pickle that needs
    anything besides tensors and plain containers raises ``UnsafeCheckpointError``.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist")
    import warnings

    try:
        with warnings.catch_warnings():
            # Plain pickles (protocol > 2) are still read by the restricted unpickler.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"refused to load {p}: it is not a plain tensor state dict and loading it would run "
            f"pickled code or build arbitrary objects (weights_only=True said: {first}). "
            "Re-save it as a state dict of tensors or as safetensors."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise InvalidCheckpointError(f"{p} does not hold a state dict of tensors")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)
