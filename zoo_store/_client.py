"""Worker side of the zoo: a sha256-verified checkpoint cache and a resumable fetch.

``fetch_checkpoint`` streams ``FetchCheckpoint`` into ``<cache>/partial/<sha>.part``; when the
stream breaks it resumes from the partial file's size. The finished file's full sha256 is
checked; on a mismatch it is fetched once more from scratch and checked again; only then is it
renamed (atomically) into ``<cache>/<sha>.safetensors``. Every cache hit is verified again, so a
flipped byte or a truncated cached copy is refused and fetched again. Every gRPC call carries a
deadline. Processes sharing a cache directory serialise on a per-checkpoint file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc
from nasoa_contracts import list_zoo_models
from zoo_store._checkpoints import ChecksumMismatch, fsync_dir, verify_file
from zoo_store._entries import ModelNotFound, ZooEntry
from zoo_store._store import create_model_from_entry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CheckpointCache", "ZooClient", "fetch_checkpoint"]

log = logging.getLogger("nasoa.zoo.client")

DEFAULT_TIMEOUT_S = 60.0
_RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
_MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", (1 << 20) + (1 << 16)),
    ("grpc.max_send_message_length", (1 << 20) + (1 << 16)),
]


class CheckpointCache:
    """A directory of verified checkpoints: ``<sha256>.safetensors`` plus ``partial/`` downloads."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.root = Path(cache_dir)

    def __repr__(self) -> str:
        return f"CheckpointCache({str(self.root)!r})"

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"invalid sha256 {sha256!r}")
        return self.root / f"{sha256}.safetensors"

    def partial_path(self, sha256: str) -> Path:
        return self.root / "partial" / f"{self.path_for(sha256).stem}.part"

    @contextlib.contextmanager
    def lock(self, sha256: str) -> Iterator[None]:
        """An exclusive inter-process lock on one checkpoint of the cache."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{sha256}.lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def get(self, sha256: str, size: int | None = None) -> Path | None:
        """The cached file if present and its full sha256 checks out; a bad copy is deleted."""
        path = self.path_for(sha256)
        if not path.exists():
            return None
        try:
            verify_file(path, sha256, size)
        except ChecksumMismatch as exc:
            log.warning("refusing cached checkpoint: %s", exc)
            path.unlink(missing_ok=True)
            return None
        return path

    def commit(self, partial: Path, sha256: str, size: int | None = None) -> Path:
        """Verify a finished download and rename it into the cache (atomic, durable)."""
        verify_file(partial, sha256, size)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        dest = self.path_for(sha256)
        os.replace(partial, dest)
        fsync_dir(self.root)
        return dest


def _stub(channel_or_stub: Any) -> zoo_pb2_grpc.ZooServiceStub:
    if isinstance(channel_or_stub, zoo_pb2_grpc.ZooServiceStub) or hasattr(channel_or_stub, "FetchCheckpoint"):
        return channel_or_stub
    return zoo_pb2_grpc.ZooServiceStub(channel_or_stub)


def _map_error(exc: grpc.RpcError, name: str) -> Exception:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.NOT_FOUND:
        err = ModelNotFound(name, [])
        err.args = (details,)
        return err
    if code == grpc.StatusCode.DATA_LOSS:
        return ChecksumMismatch(details)
    return exc


def _download(
    stub: zoo_pb2_grpc.ZooServiceStub,
    entry: ZooEntry,
    partial: Path,
    *,
    timeout: float,
    chunk_size: int,
    max_resumes: int,
) -> None:
    """Append the checkpoint's missing bytes to ``partial``, resuming after broken streams."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    resumes = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > entry.size_bytes:  # longer than the checkpoint: certainly wrong, start over
            partial.unlink()
            offset = 0
        if offset == entry.size_bytes:
            return
        try:
            with open(partial, "ab") as out:
                request = zoo_pb2.FetchCheckpointRequest(name=entry.name, offset=offset, chunk_size=chunk_size)
                for chunk in stub.FetchCheckpoint(request, timeout=timeout):
                    if chunk.sha256 != entry.sha256 or chunk.total_size != entry.size_bytes:
                        raise ChecksumMismatch(
                            f"the server changed checkpoint {entry.name!r} during the download "
                            f"(now sha256 {chunk.sha256[:12]}...)"
                        )
                    if chunk.offset != offset:
                        raise ChecksumMismatch(
                            f"server sent offset {chunk.offset} for {entry.name!r}, expected {offset}"
                        )
                    out.write(chunk.data)
                    offset += len(chunk.data)
                out.flush()
                os.fsync(out.fileno())
            return
        except grpc.RpcError as exc:
            if exc.code() not in _RESUMABLE or resumes >= max_resumes:
                raise _map_error(exc, entry.name) from None
            resumes += 1
            log.warning(
                "fetch of %s broke at byte %d (%s); resuming (%d/%d)",
                entry.name,
                partial.stat().st_size if partial.exists() else 0,
                exc.code().name,
                resumes,
                max_resumes,
            )


def get_remote_entry(channel_or_stub: Any, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> ZooEntry:
    """GetModel as a :class:`ZooEntry`; NOT_FOUND becomes ``ModelNotFound``."""
    try:
        return ZooEntry.from_proto(_stub(channel_or_stub).GetModel(zoo_pb2.GetModelRequest(name=name), timeout=timeout))
    except grpc.RpcError as exc:
        raise _map_error(exc, name) from None


def fetch_checkpoint(
    channel_or_stub: Any,
    name: str,
    cache: CheckpointCache | str | os.PathLike[str],
    *,
    entry: ZooEntry | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_size: int = 1 << 20,
    max_resumes: int = 5,
) -> Path:
    """The verified local path of a zoo checkpoint, fetched through ZooService if not cached.

    Resumes broken streams from the partial file's size, verifies the full sha256, fetches once
    more from scratch on a mismatch, and raises ``ChecksumMismatch`` if that copy is bad too.
    ``timeout`` is the deadline of each gRPC call.
    """
    if not isinstance(cache, CheckpointCache):
        cache = CheckpointCache(cache)
    stub = _stub(channel_or_stub)
    if entry is None:
        entry = get_remote_entry(stub, name, timeout)
    cache.root.mkdir(parents=True, exist_ok=True)
    with cache.lock(entry.sha256):
        hit = cache.get(entry.sha256, entry.size_bytes)
        if hit is not None:
            return hit
        partial = cache.partial_path(entry.sha256)
        for attempt in (1, 2):
            _download(stub, entry, partial, timeout=timeout, chunk_size=chunk_size, max_resumes=max_resumes)
            try:
                return cache.commit(partial, entry.sha256, entry.size_bytes)
            except ChecksumMismatch as exc:
                partial.unlink(missing_ok=True)
                if attempt == 2:
                    raise ChecksumMismatch(
                        f"checkpoint {entry.name!r} failed its sha256 check twice; refusing it ({exc})"
                    ) from None
                log.warning("downloaded %s is corrupt (%s); fetching it again", entry.name, exc)
    raise AssertionError("unreachable")


class ZooClient:
    """A typed client of ZooService; status codes map back to the zoo's exceptions.

    >>> client = ZooClient("127.0.0.1:1", timeout=0.1)
    >>> client.close()
    """

    def __init__(self, target: str | grpc.Channel, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if isinstance(target, str):
            self._channel = grpc.insecure_channel(target, options=_MESSAGE_OPTIONS)
            self._owns = True
        else:
            self._channel = target
            self._owns = False
        self.stub = zoo_pb2_grpc.ZooServiceStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        if self._owns:
            self._channel.close()

    def __enter__(self) -> ZooClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_models(self, pattern: str = "*") -> list[ZooEntry]:
        return [ZooEntry.from_proto(m) for m in list_zoo_models(self.stub, pattern, timeout=self.timeout)]

    def get_entry(self, name: str) -> ZooEntry:
        return get_remote_entry(self.stub, name, self.timeout)

    def fetch_checkpoint(self, name: str, cache: CheckpointCache | str | os.PathLike[str]) -> Path:
        return fetch_checkpoint(self.stub, name, cache, timeout=self.timeout)

    def create_model(
        self, name: str, cache: CheckpointCache | str | os.PathLike[str], num_classes: int | None = None
    ) -> nn.Module:
        """Fetch (or reuse the verified cached copy of) the checkpoint and build the model."""
        entry = self.get_entry(name)
        path = fetch_checkpoint(self.stub, name, cache, entry=entry, timeout=self.timeout)
        return create_model_from_entry(entry, num_classes=num_classes, checkpoint_path=path)

    def register(
        self, entry: ZooEntry, checkpoint_path: str | os.PathLike[str], token: str, chunk_size: int = 1 << 20
    ) -> ZooEntry:
        """Upload a safetensors checkpoint with its entry (admin token required)."""
        from zoo_store._checkpoints import sha256_file

        path = Path(checkpoint_path)
        header = entry.replace(sha256=sha256_file(path), size_bytes=path.stat().st_size)

        def requests() -> Iterator[zoo_pb2.RegisterModelRequest]:
            yield zoo_pb2.RegisterModelRequest(entry=header.to_proto())
            with open(path, "rb") as f:
                while block := f.read(chunk_size):
                    yield zoo_pb2.RegisterModelRequest(data=block)

        try:
            stored = self.stub.RegisterModel(
                requests(), timeout=self.timeout, metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.RpcError as exc:
            raise _map_error(exc, entry.name) from None
        return ZooEntry.from_proto(stored)
