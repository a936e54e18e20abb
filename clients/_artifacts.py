"""The artifact store's client: upload (workers), download (users), both resumable.

Downloads land in a folder as ``model.safetensors``, ``manifest.json`` (with
``checkpoint.safetensors``, the training checkpoint of a job that stopped as planned) and
``SHA256SUMS`` (``sha256sum -c`` format); ``names`` picks some of the files only.  Each file streams into ``<name>.part`` from where a broken
transfer stopped, is sha256-verified, then renamed into place; a bad copy is fetched once more
from scratch before the download is refused.  An existing file that fails its sha256 (a
truncated or tampered earlier download) is refused and fetched again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from nasoa_api.v1 import artifact_pb2 as apb
from nasoa_api.v1 import artifact_pb2_grpc

__all__ = [
    "ArtifactClient",
    "ArtifactStoreFull",
    "ModelNotReady",
    "StoredArtifact",
    "download_job",
]

log = logging.getLogger("nasoa.artifacts")

CHUNK_BYTES = 4 << 20  # the server's chunk size (zoo_store._artifact_service.ARTIFACT_CHUNK_BYTES)
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION,
              grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)  # fmt: skip
SUMS = "SHA256SUMS"


class ArtifactStoreFull(RuntimeError):
    """The store's disk cannot take the upload."""


class ModelNotReady(LookupError):
    """The job has no stored model (unknown, still running, failed or cancelled)."""


@dataclass(frozen=True)
class StoredArtifact:
    artifact_id: str
    job_id: str
    sha256: str
    files: dict[str, tuple[str, int]]  # name -> (sha256, size)
    size_bytes: int
    existed: bool = False

    @classmethod
    def from_pb(cls, msg: apb.Artifact) -> StoredArtifact:
        files = {f.name: (f.sha256, f.size) for f in msg.files}
        return cls(msg.artifact_id, msg.job_id, msg.sha256, files, msg.size_bytes, msg.existed)


def _map_error(exc: grpc.RpcError) -> Exception:
    from zoo_store import ArtifactNotFound, ChecksumMismatch

    code, details = exc.code(), exc.details() or str(exc.code())  # type: ignore[attr-defined]
    if code == grpc.StatusCode.NOT_FOUND:
        return ArtifactNotFound(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ValueError(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return PermissionError(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ArtifactStoreFull(details)
    if code == grpc.StatusCode.DATA_LOSS:
        return ChecksumMismatch(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectionError(f"artifact store unreachable: {details}")
    return RuntimeError(f"artifact store: {code.name}: {details}")


def _sha256_file(path: Path) -> str:
    from zoo_store import sha256_file

    return sha256_file(path)


class ArtifactClient:
    """Typed client of ``nasoa.v1.ArtifactService`` (served by ``nasoa-zoo serve``).

    ``token`` defaults to :func:`zoo_store.artifact_token` (``NASOA_ARTIFACT_TOKEN``,
    ``NASOA_TOKEN``, then this machine's ``$NASOA_HOME/artifact-token``).
    """

    def __init__(self, address: str | None = None, token: str | None = None, timeout: float = 60.0,
                 attempts: int = 5) -> None:  # fmt: skip
        from nasoa_contracts import ClientSettings, load_settings, make_channel
        from zoo_store import artifact_token, decode_file_chunk, encode_upload_request, keep_freed_memory

        self.address = address or load_settings(ClientSettings).zoo_address
        token = artifact_token() if token is None else token
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.attempts = attempts
        self._channel = make_channel(self.address)  # its 16 MiB message limit fits our chunks
        self._stub = artifact_pb2_grpc.ArtifactServiceStub(self._channel)
        keep_freed_memory()  # each chunk reuses the memory of the last (zoo_store._artifact_wire)
        # The data-carrying calls, the same wire messages coded without extra copies.
        self._upload_call = self._channel.stream_unary(
            "/nasoa.v1.ArtifactService/UploadFile", request_serializer=encode_upload_request,
            response_deserializer=apb.UploadedFile.FromString, _registered_method=True,
        )  # fmt: skip
        self._download_call = self._channel.unary_stream(
            "/nasoa.v1.ArtifactService/DownloadFile", request_serializer=apb.DownloadFileRequest.SerializeToString,
            response_deserializer=decode_file_chunk, _registered_method=True,
        )  # fmt: skip

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self, what: str, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` again after transient failures (each resumes from the store's offset)."""
        import tenacity

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, grpc.RpcError) and exc.code() in _TRANSIENT  # type: ignore[attr-defined]

        try:
            for tried in tenacity.Retrying(
                retry=tenacity.retry_if_exception(transient), stop=tenacity.stop_after_attempt(self.attempts),
                wait=tenacity.wait_exponential(multiplier=0.2, max=5.0), reraise=True,
                before_sleep=lambda s: log.warning("%s interrupted (%s); resuming", what, s.outcome.exception()),
            ):  # fmt: skip
                with tried:
                    return attempt()
        except grpc.RpcError as exc:
            raise _map_error(exc) from None
        raise AssertionError("unreachable")

    # ---- reading

    def get(self, job_id: str = "", artifact_id: str = "") -> StoredArtifact:
        request = (
            apb.GetArtifactRequest(artifact_id=artifact_id) if artifact_id else apb.GetArtifactRequest(job_id=job_id)
        )
        msg = self._retrying("GetArtifact", lambda: self._stub.GetArtifact(request, timeout=self.timeout,
                                                                            metadata=self._metadata))  # fmt: skip
        return StoredArtifact.from_pb(msg)

    def read_bytes(self, artifact: StoredArtifact, name: str) -> bytes:
        """A small file (the manifest) in memory, sha256-verified."""
        from zoo_store import ChecksumMismatch

        sha, size = artifact.files[name]
        request = apb.DownloadFileRequest(artifact_id=artifact.artifact_id, name=name)
        data = self._retrying("download", lambda: b"".join(
            c.data for c in self._download_call(request, timeout=self.timeout, metadata=self._metadata)))  # fmt: skip
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise ChecksumMismatch(f"{name} of artifact {artifact.artifact_id} failed its sha256 check")
        return data

    def download(self, artifact: StoredArtifact, directory: str | os.PathLike[str], progress: bool = True,
                 names: tuple[str, ...] = ()) -> Path:  # fmt: skip
        """Every file of ``artifact`` (or those in ``names``) into ``directory``, verified;
        returns the folder."""
        from zoo_store import ArtifactNotFound, ChecksumMismatch

        missing = sorted(set(names) - set(artifact.files))
        if missing:
            raise ArtifactNotFound(f"artifact {artifact.artifact_id} of job {artifact.job_id!r} has no "
                                   f"{', '.join(missing)}; it has {', '.join(sorted(artifact.files))}")  # fmt: skip
        wanted = {name: f for name, f in artifact.files.items() if not names or name in names}
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        total = sum(size for _, size in wanted.values())
        with _progress_bar(total, f"artifact {artifact.artifact_id}", progress) as bar:
            for name, (sha, size) in sorted(wanted.items()):
                dest = folder / name
                if dest.exists():
                    if dest.stat().st_size == size and _sha256_file(dest) == sha:
                        bar.update(size)
                        continue
                    log.warning("refusing %s: it fails its sha256 (truncated or modified); fetching it again", dest)
                    dest.unlink()
                for attempt in (1, 2):
                    partial = folder / f"{name}.part"
                    if self._fetch_into(artifact.artifact_id, name, size, partial, bar) == sha:
                        os.replace(partial, dest)
                        break
                    partial.unlink()
                    if attempt == 2:
                        raise ChecksumMismatch(f"{name} of artifact {artifact.artifact_id} failed its sha256 check twice; "
                                               "the store's copy may be corrupt")  # fmt: skip
                    log.warning(
                        "%s of artifact %s failed its sha256 check; fetching it again", name, artifact.artifact_id
                    )
                    bar.update(-size)
        sums = "".join(f"{sha}  {name}\n" for name, (sha, _) in sorted(wanted.items()))
        (folder / SUMS).write_text(sums)
        return folder

    def download_training_checkpoint(self, job_id: str, directory: str | os.PathLike[str]) -> Path:
        """The training checkpoint stored by job ``job_id`` (stopped as planned), downloaded into
        ``directory`` (resumable, sha256-verified); returns its path.  ArtifactNotFound when the
        job stored no artifact, or one without a checkpoint."""
        from zoo_store import TRAINING_CHECKPOINT_FILE

        artifact = self.get(job_id=job_id)
        return self.download(artifact, directory, progress=False, names=(TRAINING_CHECKPOINT_FILE,)) / (
            TRAINING_CHECKPOINT_FILE
        )

    def _fetch_into(self, artifact_id: str, name: str, size: int, partial: Path, bar: Any) -> str:
        """Complete ``partial`` from its size on; returns the sha256 of the whole file."""
        from zoo_store import StreamingSha256

        def attempt() -> str:
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > size:  # longer than the file: certainly wrong
                partial.unlink()
                offset = 0
            digest = StreamingSha256.of_prefix(partial, offset)  # then hashed as it arrives: one pass
            if offset == size:
                return digest.hexdigest()
            request = apb.DownloadFileRequest(artifact_id=artifact_id, name=name, offset=offset, chunk_size=CHUNK_BYTES)
            try:
                with open(partial, "ab") as out:
                    for chunk in self._download_call(request, timeout=self.timeout, metadata=self._metadata):
                        if chunk.offset != out.tell():
                            raise ValueError(f"the store sent offset {chunk.offset} of {name}, expected {out.tell()}")
                        data = chunk.data
                        digest.update(data)
                        out.write(data)
                        bar.update(len(data))
                return digest.hexdigest()
            finally:
                digest.close()

        already = partial.stat().st_size if partial.exists() else 0
        bar.update(min(already, size))
        return self._retrying(f"download of {name}", attempt)

    # ---- uploading

    def upload(self, job_id: str, weights: Path, manifest: Path, job_created_at: float = 0.0,
               sha256: dict[str, str] | None = None, checkpoint: Path | None = None) -> StoredArtifact:  # fmt: skip
        """Upload the files (resuming where the store stopped) and commit the job's artifact.

        ``checkpoint`` is the training checkpoint of a run stopped as planned (the manifest must
        name it).  ``sha256`` may give the files' digests by name when the caller has them.
        """
        known = dict(sha256 or {})
        for path in (weights, *([checkpoint] if checkpoint else []), manifest):  # the manifest last: it names the rest
            known[path.name] = known.get(path.name) or _sha256_file(path)
            self._upload_file(job_id, path, known[path.name])
        request = apb.CommitArtifactRequest(job_id=job_id, manifest_sha256=known[manifest.name],
                                            job_created_at=job_created_at)  # fmt: skip
        msg = self._retrying("commit", lambda: self._stub.CommitArtifact(request, timeout=self.timeout,
                                                                          metadata=self._metadata))  # fmt: skip
        return StoredArtifact.from_pb(msg)

    def _upload_file(self, job_id: str, path: Path, sha256: str) -> None:
        file = apb.ArtifactFile(name=path.name, sha256=sha256, size=path.stat().st_size)

        def requests(offset: int) -> Iterator[Any]:
            from zoo_store import UploadData

            yield apb.UploadFileRequest(header=apb.UploadHeader(job_id=job_id, file=file, offset=offset))
            with open(path, "rb") as f:
                f.seek(offset)
                while block := f.read(CHUNK_BYTES):
                    yield UploadData(block)

        def attempt() -> None:
            held = self._stub.GetUploadOffset(apb.UploadOffsetRequest(job_id=job_id, file=file),
                                              timeout=self.timeout, metadata=self._metadata).offset  # fmt: skip
            if held < file.size:
                self._upload_call(requests(held), timeout=self.timeout, metadata=self._metadata)

        self._retrying(f"upload of {path.name}", attempt)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(total: int, what: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    # disable=None: a bar on a terminal, silence when stderr is a pipe or a file
    return tqdm(total=total, desc=what, unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=None)


def _safe_folder_name(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", job_id)[:100] or "model"


def stored_artifact_of(job: Any) -> tuple[str, str]:
    """``(artifact_id, sha256)`` of a finished job, or :class:`ModelNotReady` saying why not."""
    state = job.state.value
    if state in ("QUEUED", "RUNNING"):
        raise ModelNotReady(f"job {job.job_id} is still {state}: its model is not ready yet "
                            f"(wait with: nasoa-submit watch {job.job_id})")  # fmt: skip
    if state in ("FAILED", "CANCELLED"):
        raise ModelNotReady(f"job {job.job_id} is {state}: it has no model ({job.message or 'no message'})")
    result = job.result
    if result is None or not result.artifact_id:
        raise ModelNotReady(f"job {job.job_id} is {state} but stored no model")
    return result.artifact_id, result.artifact_sha256


def download_job(job_id: str, directory: str | os.PathLike[str] | None = None, *, adaptor_address: str | None = None,
                 zoo_address: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:  # fmt: skip
    """Download a finished job's model (``directory`` defaults to ``./<job id>``); returns the folder."""
    from clients import AdaptorClient
    from nasoa_contracts import NotFound
    from zoo_store import ChecksumMismatch

    with AdaptorClient(adaptor_address, timeout=timeout) as client:
        try:
            job = client.get_job(job_id)
        except NotFound:
            raise ModelNotReady(f"unknown job {job_id!r}") from None
    artifact_id, sha = stored_artifact_of(job)
    with ArtifactClient(zoo_address, timeout=timeout) as store:
        artifact = store.get(artifact_id=artifact_id)
        if artifact.sha256 != sha:
            raise ChecksumMismatch(f"the store's artifact {artifact_id} has sha256 {artifact.sha256[:12]}..., "
                                   f"the job recorded {sha[:12]}...")  # fmt: skip
        return store.download(artifact, directory or _safe_folder_name(job_id), progress=progress)
