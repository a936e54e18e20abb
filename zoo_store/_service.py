"""The gRPC ZooService: a thin servicer over a :class:`ZooStore`.

Domain errors map to status codes: an unknown model is NOT_FOUND (with the available names), a
bad offset or upload is INVALID_ARGUMENT, a corrupt blob on the server is DATA_LOSS. Admin
calls (RegisterModel) are guarded by :class:`AdminTokenInterceptor`: without a configured
token they are PERMISSION_DENIED; with one, a missing or wrong ``authorization: Bearer <token>``
is UNAUTHENTICATED.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc
from nasoa_contracts import abort_handler
from zoo_store._checkpoints import (
    ChecksumMismatch,
    InvalidCheckpointError,
    load_safetensors,
    validate_safetensors_header,
    verify_file,
)
from zoo_store._entries import ModelNotFound, ZooEntry, check_name
from zoo_store._store import ZooStore

__all__ = [
    "ADMIN_METHODS",
    "ENV_ADMIN_TOKEN",
    "MAX_CHUNK_BYTES",
    "MAX_MESSAGE_BYTES",
    "AdminTokenInterceptor",
    "ZooServicer",
    "make_zoo_server",
]

log = logging.getLogger("nasoa.zoo.service")

ENV_ADMIN_TOKEN = "NASOA_ZOO_ADMIN_TOKEN"
MAX_CHUNK_BYTES = 1 << 20
# A chunk plus its small header fields; a bit of slack over the chunk size.
MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + (1 << 16)
DEFAULT_MAX_UPLOAD_BYTES = 2 << 30
ADMIN_METHODS = frozenset({"/nasoa.v1.ZooService/RegisterModel"})
ARTIFACT_METHODS = frozenset(
    f"/nasoa.v1.ArtifactService/{m}"
    for m in ("GetUploadOffset", "UploadFile", "CommitArtifact", "GetArtifact", "DownloadFile")
)


def bearer_matches(handler_call_details: grpc.HandlerCallDetails, token: str) -> bool:
    """Whether the call carries ``authorization: Bearer <token>`` (compared in constant time)."""
    given = str(dict(handler_call_details.invocation_metadata or ()).get("authorization", ""))
    scheme, _, sent = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())


class AdminTokenInterceptor(grpc.ServerInterceptor):
    """Guards admin methods with ``authorization: Bearer <token>`` metadata.

    No token configured: admin methods are PERMISSION_DENIED (admin is off). A missing or wrong
    token: UNAUTHENTICATED. Tokens are compared in constant time. Other methods pass through.
    """

    def __init__(self, token: str | None, methods: frozenset[str] = ADMIN_METHODS) -> None:
        self._token = token or None
        self._methods = methods

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self._methods:
            return handler
        if self._token is None:
            return abort_handler(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"registering models is disabled on this zoo server: start it with ${ENV_ADMIN_TOKEN} set",
            )
        if not bearer_matches(handler_call_details, self._token):
            return abort_handler(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong admin token: send metadata 'authorization: Bearer <token>'",
            )
        return handler


class ZooServicer(zoo_pb2_grpc.ZooServiceServicer):
    """Serves a :class:`ZooStore`: list, describe, stream checkpoints, register (admin)."""

    def __init__(self, store: ZooStore, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        self.store = store
        self.max_upload_bytes = max_upload_bytes

    def _entry(self, name: str, context: grpc.ServicerContext) -> ZooEntry:
        try:
            return self.store.get_entry(name)
        except ModelNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # unreachable: abort raises

    def ListModels(
        self, request: zoo_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> zoo_pb2.ListModelsResponse:
        if len(request.pattern) > 256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pattern is longer than 256 characters")
        entries = self.store.list_entries(request.pattern or "*")
        return zoo_pb2.ListModelsResponse(models=[e.to_proto() for e in entries])

    def GetModel(self, request: zoo_pb2.GetModelRequest, context: grpc.ServicerContext) -> zoo_pb2.ZooEntry:
        return self._entry(request.name, context).to_proto()

    def FetchCheckpoint(
        self, request: zoo_pb2.FetchCheckpointRequest, context: grpc.ServicerContext
    ) -> Iterator[zoo_pb2.CheckpointChunk]:
        entry = self._entry(request.name, context)
        chunk_size = request.chunk_size or MAX_CHUNK_BYTES
        if chunk_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size must be positive, got {chunk_size}")
        chunk_size = min(chunk_size, MAX_CHUNK_BYTES)
        path = self.store.blob_path(entry.sha256)
        try:
            verify_file(path, entry.sha256, entry.size_bytes)
        except ChecksumMismatch as exc:
            log.error("corrupt blob for %s: %s", entry.name, exc)
            context.abort(
                grpc.StatusCode.DATA_LOSS,
                f"the server's checkpoint of {entry.name!r} is corrupt ({exc}); an admin must re-register it",
            )
        size = entry.size_bytes
        if request.offset < 0 or request.offset > size:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"offset {request.offset} is outside the checkpoint of {entry.name!r} (0..{size} bytes)",
            )
        with open(path, "rb") as f:
            f.seek(request.offset)
            offset = request.offset
            if offset == size:
                yield zoo_pb2.CheckpointChunk(offset=offset, data=b"", total_size=size, sha256=entry.sha256)
                return
            while offset < size:
                if not context.is_active():
                    return
                data = f.read(min(chunk_size, size - offset))
                if not data:
                    context.abort(grpc.StatusCode.DATA_LOSS, f"the checkpoint of {entry.name!r} shrank while streaming")
                yield zoo_pb2.CheckpointChunk(offset=offset, data=data, total_size=size, sha256=entry.sha256)
                offset += len(data)

    def RegisterModel(
        self, request_iterator: Iterator[zoo_pb2.RegisterModelRequest], context: grpc.ServicerContext
    ) -> zoo_pb2.ZooEntry:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "entry":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first RegisterModel message must be the ZooEntry header"
            )
        entry = ZooEntry.from_proto(first.entry)
        try:
            check_name(entry.name)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self.store.has(entry.name):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"zoo model {entry.name!r} already exists")
        if entry.input_size <= 0:
            entry = entry.replace(input_size=32)
        self.store.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=".safetensors", dir=self.store.blobs_dir)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for message in request_iterator:
                    if message.WhichOneof("part") != "data":
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only data chunks may follow the header")
                    size += len(message.data)
                    if size > self.max_upload_bytes:
                        context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"upload is larger than the {self.max_upload_bytes}-byte limit",
                        )
                    digest.update(message.data)
                    out.write(message.data)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            if size == 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no checkpoint data was sent")
            if entry.sha256 and entry.sha256 != sha:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the upload's sha256 {sha[:12]}... does not match the header's {entry.sha256[:12]}... "
                    "(corrupted in transit); send it again",
                )
            if entry.size_bytes and entry.size_bytes != size:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"received {size} bytes but the header says {entry.size_bytes}; send it again",
                )
            try:
                validate_safetensors_header(tmp)
                load_safetensors(tmp, sha, size)  # parses every tensor
                stored = self.store.register(entry.replace(sha256="", size_bytes=0), checkpoint_path=tmp)
            except (InvalidCheckpointError, ChecksumMismatch, ValueError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"rejected checkpoint for {entry.name!r}: {exc}")
            except FileExistsError as exc:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            log.info("registered %s (%s, %d bytes, sha256 %s)", stored.name, stored.architecture, size, sha)
            return stored.to_proto()
        finally:
            Path(tmp).unlink(missing_ok=True)


def make_zoo_server(
    store: ZooStore | str | os.PathLike[str],
    address: str = "127.0.0.1:0",
    admin_token: str | None = None,
    *,
    read_token: str | None = None,
    max_workers: int = 8,
    return_health: bool = False,
    artifacts: Any = None,
    artifact_token: str = "",
    guard_artifact_reads: bool = False,
) -> Any:
    """An unstarted gRPC server with ZooService and the health service (SERVING).

    ``admin_token`` defaults to ``$NASOA_ZOO_ADMIN_TOKEN``; without one, RegisterModel is
    refused. ``read_token`` defaults to ``$NASOA_TOKEN`` (the services' shared token): with
    one, every other ZooService call (ListModels, FetchCheckpoint...) needs it, health checks
    excepted. With ``artifacts`` (an ``ArtifactStore``) it serves ArtifactService too, uploads
    guarded by ``artifact_token`` (reads as well with ``guard_artifact_reads``).
    Returns ``(server, port)``, or ``(server, port, health_servicer)`` with
    ``return_health`` (to set NOT_SERVING on shutdown).
    """
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    if not isinstance(store, ZooStore):
        store = ZooStore(store)
    token = admin_token if admin_token is not None else (os.environ.get(ENV_ADMIN_TOKEN) or None)
    interceptors: list[grpc.ServerInterceptor] = [AdminTokenInterceptor(token)]
    message_bytes = MAX_MESSAGE_BYTES
    read = read_token if read_token is not None else os.environ.get("NASOA_TOKEN", "")
    if read:
        from nasoa_contracts import TokenAuthInterceptor

        # Admin calls have their own token, the artifact calls theirs (interceptors below).
        interceptors.insert(0, TokenAuthInterceptor(read, exempt=ADMIN_METHODS | ARTIFACT_METHODS))
    if artifacts is not None:
        from zoo_store._artifact_service import ARTIFACT_CHUNK_BYTES, ArtifactTokenInterceptor

        interceptors.append(ArtifactTokenInterceptor(artifact_token, guard_reads=guard_artifact_reads))
        message_bytes = max(message_bytes, ARTIFACT_CHUNK_BYTES + (1 << 16))
    options = [
        ("grpc.max_send_message_length", message_bytes),
        ("grpc.max_receive_message_length", message_bytes),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="zoo"),
        interceptors=interceptors,
        options=options,
    )
    zoo_pb2_grpc.add_ZooServiceServicer_to_server(ZooServicer(store), server)
    services = ["", "nasoa.v1.ZooService"]
    if artifacts is not None:
        from zoo_store._artifact_service import ArtifactServicer, add_artifact_service

        add_artifact_service(ArtifactServicer(artifacts), server)
        services.append("nasoa.v1.ArtifactService")
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in services:
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the zoo server to {address}")
    if return_health:
        return server, port, health_servicer
    return server, port
