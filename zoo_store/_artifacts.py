"""The artifact store: fine-tuned models of finished jobs, kept content-addressed on disk.

An artifact is two files, ``model.safetensors`` and ``manifest.json`` (which records the
weights' sha256), and a third, ``checkpoint.safetensors``, when the job stopped as planned
before the end of its schedule: the training checkpoint a later job continues the run from
(the manifest records its sha256 and size too).  The artifact's sha256 is the manifest's and
its id the first 16 hex digits of that.
There is one artifact per job id: committing a job's artifact again returns the stored one.
The gRPC face is :mod:`zoo_store._artifact_service`; this module is plain Python.

Layout under the artifact directory::

    blobs/<sha256>            file contents, content-addressed (shared between artifacts)
    records/<artifact_id>.json  job id, files, times, size
    uploads/<job key>/<name>.<sha256>.part   resumable partial uploads

Settings (environment, read by :meth:`ArtifactSettings.from_env`):

==================================  ===============================================================
``NASOA_ARTIFACT_DIR``              where artifacts live; default ``<zoo dir>/artifacts`` beside the
                                    zoo's checkpoints, or ``$NASOA_HOME/artifacts`` when the zoo is
                                    the packaged read-only default
``NASOA_ARTIFACT_TOKEN``            bearer token for uploads *and* reads (falls back to
                                    ``NASOA_TOKEN``); unset: the server makes one in
                                    ``$NASOA_HOME/artifact-token`` (mode 0600) guarding uploads only,
                                    and workers on the machine read it there
``NASOA_ARTIFACT_MAX_UPLOAD_BYTES``  largest file accepted (default 2 GiB)
``NASOA_ARTIFACT_MAX_COUNT``        retention: keep at most this many artifacts (0: no cap; default 0)
``NASOA_ARTIFACT_MAX_BYTES``        retention: keep at most this many bytes (0: no cap; default 20 GiB)
``NASOA_ARTIFACT_MIN_AGE``          retention never deletes the artifact of a job younger than this
                                    many seconds (default 86400)
``NASOA_ARTIFACT_MIN_FREE_BYTES``   refuse an upload that would leave less free disk (default 256 MiB)
==================================  ===============================================================

Retention runs after every commit and at start: oldest artifacts first, each deletion logged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoo_store._checkpoints import (
    StreamingSha256,
    atomic_write_bytes,
    fsync_dir,
    start_writeback,
    validate_safetensors_header,
)

ARTIFACT_FILES = ("model.safetensors", "manifest.json")
TRAINING_CHECKPOINT_FILE = "checkpoint.safetensors"

__all__ = [
    "ARTIFACT_FILES",
    "FILE_NAMES",
    "TRAINING_CHECKPOINT_FILE",
    "ArtifactError",
    "ArtifactFile",
    "ArtifactNotFound",
    "ArtifactRecord",
    "ArtifactSettings",
    "ArtifactStore",
    "OffsetMismatch",
    "StoreFull",
    "artifact_token",
]

log = logging.getLogger("nasoa.zoo.artifacts")

WEIGHTS, MANIFEST = ARTIFACT_FILES
FILE_NAMES = (*ARTIFACT_FILES, TRAINING_CHECKPOINT_FILE)
MAX_MANIFEST_BYTES = 1 << 20
TOKEN_FILE = "artifact-token"
STALE_UPLOAD_SECONDS = 86400.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class ArtifactError(ValueError):
    """A request the store refuses; the message says why (INVALID_ARGUMENT)."""


class ArtifactNotFound(LookupError):
    """No such artifact, or no artifact for that job (NOT_FOUND)."""


class OffsetMismatch(ArtifactError):
    """An upload resumed from the wrong offset (FAILED_PRECONDITION): ask for the offset again."""


class StoreFull(OSError):
    """The store's disk cannot take the upload (RESOURCE_EXHAUSTED)."""


def _nasoa_home() -> Path:
    return Path(os.environ.get("NASOA_HOME", Path.home() / ".nasoa")).expanduser()


@dataclass(frozen=True)
class ArtifactSettings:
    """The store's settings; :meth:`from_env` documents the variables (module docstring)."""

    directory: Path | None = None
    token: str = ""  # configured by the operator: guards reads as well as uploads
    max_upload_bytes: int = 2 << 30
    max_count: int = 0
    max_bytes: int = 20 << 30
    min_age_seconds: float = 86400.0
    min_free_bytes: int = 256 << 20

    @classmethod
    def from_env(cls) -> ArtifactSettings:
        """The store's part of the zoo's settings (``NASOA_ARTIFACT_*``, docs/SETTINGS.md)."""
        from nasoa_contracts import ZooSettings, load_settings

        zoo = load_settings(ZooSettings)
        return cls(
            directory=zoo.artifact_dir.expanduser() if zoo.artifact_dir else None,
            token=zoo.artifact_token or zoo.token,
            max_upload_bytes=zoo.artifact_max_upload_bytes,
            max_count=zoo.artifact_max_count,
            max_bytes=zoo.artifact_max_bytes,
            min_age_seconds=zoo.artifact_min_age,
            min_free_bytes=zoo.artifact_min_free_bytes,
        )

    def resolve_directory(self, zoo_root: Path) -> Path:
        if self.directory is not None:
            return self.directory
        from zoo_store._store import DEFAULT_ZOO_DIR

        if zoo_root.resolve() == DEFAULT_ZOO_DIR.resolve() or not os.access(zoo_root, os.W_OK):
            return _nasoa_home() / "artifacts"
        return zoo_root / "artifacts"


def artifact_token(create: bool = False) -> str:
    """The upload token: ``NASOA_ARTIFACT_TOKEN``, else ``NASOA_TOKEN``, else the machine's token
    file ``$NASOA_HOME/artifact-token`` (made, mode 0600, when ``create``); "" when none."""
    configured = os.environ.get("NASOA_ARTIFACT_TOKEN", "") or os.environ.get("NASOA_TOKEN", "")
    if configured:
        return configured
    path = _nasoa_home() / TOKEN_FILE
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    try:
        return path.read_text().strip()
    except (FileNotFoundError, PermissionError):
        return ""


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ArtifactRecord:
    artifact_id: str
    job_id: str
    sha256: str
    files: tuple[ArtifactFile, ...]
    created_at: float
    job_created_at: float = 0.0
    size_bytes: int = 0
    existed: bool = field(default=False, compare=False)

    def file(self, name: str) -> ArtifactFile:
        for f in self.files:
            if f.name == name:
                return f
        names = ", ".join(f.name for f in self.files)
        raise ArtifactNotFound(f"artifact {self.artifact_id} of job {self.job_id!r} has no file {name!r}; it has {names}")

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("existed")
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactRecord:
        data = json.loads(text)
        data["files"] = tuple(ArtifactFile(**f) for f in data["files"])
        return cls(**data)


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200 or not job_id.isprintable():
        raise ArtifactError(f"job id must be 1 to 200 printable characters, got {job_id!r}")
    return job_id


def check_file(file: ArtifactFile, max_upload_bytes: int) -> None:
    if file.name not in FILE_NAMES:
        raise ArtifactError(f"file name must be one of {', '.join(FILE_NAMES)}, got {file.name!r}")
    if not _SHA_RE.match(file.sha256):
        raise ArtifactError(f"sha256 of {file.name} must be 64 lowercase hex digits, got {file.sha256!r}")
    limit = MAX_MANIFEST_BYTES if file.name == MANIFEST else max_upload_bytes
    if file.size <= 0:
        raise ArtifactError(f"{file.name} must not be empty (size {file.size})")
    if file.size > limit:
        raise ArtifactError(f"upload of {file.name} ({file.size} bytes) is larger than the {limit}-byte limit")


class ArtifactStore:
    """Artifacts under ``root``, for one server process (writes hold a lock)."""

    def __init__(self, root: str | os.PathLike[str], settings: ArtifactSettings | None = None) -> None:
        self.root = Path(root)
        self.settings = settings or ArtifactSettings()
        self._lock = threading.Lock()
        for sub in ("blobs", "records", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._by_id: dict[str, ArtifactRecord] = {}
        for path in sorted((self.root / "records").glob("*.json")):
            record = ArtifactRecord.from_json(path.read_text())
            self._by_id[record.artifact_id] = record
        self._by_job = {r.job_id: r for r in self._by_id.values()}
        self._receiving: set[Path] = set()  # partial files an UploadFile call is appending to
        self._drop_stale_uploads()
        self.enforce_retention()

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r}, {len(self._by_id)} artifacts)"

    # ---- paths

    def blob_path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ArtifactError(f"invalid sha256 {sha256!r}")
        return self.root / "blobs" / sha256

    def _upload_dir(self, job_id: str) -> Path:
        return self.root / "uploads" / hashlib.sha256(job_id.encode()).hexdigest()[:32]

    def _partial(self, job_id: str, file: ArtifactFile) -> Path:
        return self._upload_dir(job_id) / f"{file.name}.{file.sha256}.part"

    # ---- reading

    def records(self) -> list[ArtifactRecord]:
        return sorted(self._by_id.values(), key=lambda r: (r.created_at, r.artifact_id))

    def total_bytes(self) -> int:
        return sum(r.size_bytes for r in self._by_id.values())

    def get(self, artifact_id: str = "", job_id: str = "") -> ArtifactRecord:
        if artifact_id:
            if not _ID_RE.match(artifact_id):
                raise ArtifactError(f"artifact id must be 16 lowercase hex digits, got {artifact_id!r}")
            record = self._by_id.get(artifact_id)
            if record is None:
                raise ArtifactNotFound(
                    f"no artifact {artifact_id} in the store (deleted by retention, or never stored)"
                )
            return record
        record = self._by_job.get(check_job_id(job_id))
        if record is None:
            raise ArtifactNotFound(f"no artifact stored for job {job_id!r}")
        return record

    def open_file(self, artifact_id: str, name: str) -> tuple[Path, ArtifactFile]:
        file = self.get(artifact_id=artifact_id).file(name)
        return self.blob_path(file.sha256), file

    # ---- uploading

    def upload_offset(self, job_id: str, file: ArtifactFile) -> int:
        """Bytes already held: the whole file when its blob exists, else the partial's size."""
        check_job_id(job_id)
        check_file(file, self.settings.max_upload_bytes)
        blob = self.blob_path(file.sha256)
        if blob.exists() and blob.stat().st_size == file.size:
            return file.size
        partial = self._partial(job_id, file)
        return partial.stat().st_size if partial.exists() else 0

    def receive(self, job_id: str, file: ArtifactFile, offset: int, chunks: Iterable[bytes]) -> ArtifactFile:
        """Append ``chunks`` at ``offset`` of the file's partial upload; on the last byte the
        sha256 is checked and the file becomes a blob.  A refused upload leaves nothing
        behind; a broken stream keeps the partial file, to resume from."""
        check_job_id(job_id)
        check_file(file, self.settings.max_upload_bytes)
        partial = self._partial(job_id, file)
        with self._lock:  # two deliveries of one job must not append to one partial file
            if partial in self._receiving:
                raise OffsetMismatch(f"{file.name} of job {job_id!r} is being uploaded by another call; retry")
            self._receiving.add(partial)
        try:
            return self._receive(job_id, file, offset, chunks, partial)
        finally:
            with self._lock:
                self._receiving.discard(partial)

    def _receive(
        self, job_id: str, file: ArtifactFile, offset: int, chunks: Iterable[bytes], partial: Path
    ) -> ArtifactFile:
        held = self.upload_offset(job_id, file)
        if held == file.size:
            for _ in chunks:  # the client may already be sending: drain it
                pass
            return file
        if offset != held:
            raise OffsetMismatch(f"{file.name} upload must resume at byte {held}, not {offset}: ask GetUploadOffset")
        self._check_space(file.size - offset)
        partial.parent.mkdir(parents=True, exist_ok=True)
        digest = StreamingSha256.of_prefix(partial, offset)  # then hashed as it arrives: one pass
        size = offset
        try:
            try:
                with open(partial, "ab") as out:
                    for data in chunks:
                        size += len(data)
                        if size > file.size:
                            raise ArtifactError(f"{file.name} upload sent more than the {file.size} bytes announced")
                        digest.update(data)  # on its thread, while this one writes
                        out.write(data)
                        start_writeback(out.fileno(), size - len(data), len(data))  # the fsync below waits less
                    out.flush()
                    os.fsync(out.fileno())
            except ArtifactError:
                self._discard(partial)
                raise
            except OSError as exc:
                self._discard(partial)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StoreFull(f"the artifact store's disk is full ({exc.strerror}); upload refused") from None
                raise
            if size < file.size:  # the stream ended early: keep the partial file to resume from
                raise ArtifactError(f"{file.name} upload ended at byte {size} of {file.size}; resume from there")
            actual = digest.hexdigest()
        finally:
            digest.close()
        if actual != file.sha256:
            self._discard(partial)
            raise ArtifactError(
                f"{file.name} upload has sha256 {actual[:12]}... but {file.sha256[:12]}... was announced "
                "(corrupted in transit); send it again"
            )
        os.replace(partial, self.blob_path(file.sha256))
        fsync_dir(self.root / "blobs")
        return file

    def _check_space(self, incoming: int) -> None:
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.settings.min_free_bytes:
            raise StoreFull(
                f"the artifact store's disk is full: {free} bytes free, the upload needs {incoming} "
                f"and {self.settings.min_free_bytes} must stay free (NASOA_ARTIFACT_MIN_FREE_BYTES)"
            )

    def _discard(self, partial: Path) -> None:
        partial.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            partial.parent.rmdir()  # only when empty

    def commit(self, job_id: str, manifest_sha256: str, job_created_at: float = 0.0) -> ArtifactRecord:
        """Seal the job's artifact from its uploaded manifest; idempotent by job id."""
        check_job_id(job_id)
        with self._lock:
            existing = self._by_job.get(job_id)
            if existing is not None:
                return ArtifactRecord(**{**asdict(existing), "files": existing.files, "existed": True})
            manifest_blob = self.blob_path(manifest_sha256)
            if not manifest_blob.exists():
                raise ArtifactError(f"manifest {manifest_sha256[:12]}... of job {job_id!r} was not uploaded")
            manifest = _read_manifest(manifest_blob, job_id)
            named = [self._named_file(job_id, name, manifest["files"][name])
                     for name in (WEIGHTS, TRAINING_CHECKPOINT_FILE) if name in manifest["files"]]  # fmt: skip
            files = (*named, ArtifactFile(MANIFEST, manifest_sha256, manifest_blob.stat().st_size))
            record = ArtifactRecord(
                artifact_id=manifest_sha256[:16], job_id=job_id, sha256=manifest_sha256, files=files,
                created_at=time.time(), job_created_at=float(job_created_at or 0.0),
                size_bytes=sum(f.size for f in files),
            )  # fmt: skip
            atomic_write_bytes(self.root / "records" / f"{record.artifact_id}.json", record.to_json().encode())
            self._by_id[record.artifact_id] = record
            self._by_job[job_id] = record
            shutil.rmtree(self._upload_dir(job_id), ignore_errors=True)
            log.info("stored artifact %s of job %s (%d bytes)", record.artifact_id, job_id, record.size_bytes)
            self._enforce_retention_locked(time.time())
            return record

    def _named_file(self, job_id: str, name: str, entry: object) -> ArtifactFile:
        """A safetensors file the manifest names, checked to be uploaded whole and readable."""
        if not isinstance(entry, dict):
            raise ArtifactError(f"the manifest of job {job_id!r} names {name} without its sha256 and size")
        file = ArtifactFile(name, str(entry.get("sha256", "")), int(entry.get("size", 0)))
        check_file(file, self.settings.max_upload_bytes)
        blob = self.blob_path(file.sha256)
        if not blob.exists() or blob.stat().st_size != file.size:
            raise ArtifactError(f"{name} named by the manifest of job {job_id!r} was not uploaded")
        try:
            validate_safetensors_header(blob)
        except ValueError as exc:
            raise ArtifactError(f"{name} of job {job_id!r} is not a safetensors file: {exc}") from None
        return file

    # ---- retention

    def enforce_retention(self, now: float | None = None) -> list[ArtifactRecord]:
        with self._lock:
            return self._enforce_retention_locked(time.time() if now is None else now)

    def _enforce_retention_locked(self, now: float) -> list[ArtifactRecord]:
        s = self.settings
        deleted: list[ArtifactRecord] = []

        def over() -> str:
            if s.max_count and len(self._by_id) > s.max_count:
                return f"{len(self._by_id)} artifacts, cap {s.max_count} (NASOA_ARTIFACT_MAX_COUNT)"
            total = self.total_bytes()
            if s.max_bytes and total > s.max_bytes:
                return f"{total} bytes, cap {s.max_bytes} (NASOA_ARTIFACT_MAX_BYTES)"
            return ""

        for record in self.records():  # oldest first
            reason = over()
            if not reason:
                break
            age = now - (record.job_created_at or record.created_at)
            if age < s.min_age_seconds:
                continue  # the job is too young to lose its model
            self._delete_locked(record)
            deleted.append(record)
            log.info(
                "retention deleted artifact %s of job %s (%d bytes, job %.0f s old): %s",
                record.artifact_id, record.job_id, record.size_bytes, age, reason,
            )  # fmt: skip
        if over():
            log.warning("artifact store over its cap (%s): every remaining artifact is younger than %.0f s",
                        over(), s.min_age_seconds)  # fmt: skip
        return deleted

    def _delete_locked(self, record: ArtifactRecord) -> None:
        (self.root / "records" / f"{record.artifact_id}.json").unlink(missing_ok=True)
        self._by_id.pop(record.artifact_id, None)
        self._by_job.pop(record.job_id, None)
        in_use = {f.sha256 for r in self._by_id.values() for f in r.files}
        for f in record.files:
            if f.sha256 not in in_use:
                self.blob_path(f.sha256).unlink(missing_ok=True)

    def _drop_stale_uploads(self) -> None:
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for folder in (self.root / "uploads").iterdir():
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("dropped stale partial upload %s", folder.name)


def _read_manifest(path: Path, job_id: str) -> dict:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"the manifest of job {job_id!r} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ArtifactError(f"the manifest of job {job_id!r} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("job_id") != job_id:
        raise ArtifactError(f"the manifest does not belong to job {job_id!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(WEIGHTS), dict):
        raise ArtifactError(f"the manifest of job {job_id!r} does not name its {WEIGHTS}")
    return manifest
