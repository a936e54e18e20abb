"""The gRPC ArtifactService: a thin servicer over an :class:`~zoo_store._artifacts.ArtifactStore`.

Errors map to status codes: a bad request or a refused upload is INVALID_ARGUMENT (over the
size limit included), an unknown artifact or job NOT_FOUND, a resume from the wrong offset
FAILED_PRECONDITION, a full disk RESOURCE_EXHAUSTED.  :class:`ArtifactTokenInterceptor`
guards uploads always and reads when the operator configured a token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import message_factory

from nasoa_api.v1 import artifact_pb2 as apb
from nasoa_api.v1 import artifact_pb2_grpc
from nasoa_contracts import abort_handler
from zoo_store._artifact_wire import (
    FileChunkData,
    UploadData,
    decode_upload_request,
    encode_file_chunk,
    keep_freed_memory,
)
from zoo_store._artifacts import (
    ArtifactError,
    ArtifactFile,
    ArtifactNotFound,
    ArtifactRecord,
    ArtifactStore,
    OffsetMismatch,
    StoreFull,
)
from zoo_store._service import bearer_matches

__all__ = [
    "ARTIFACT_CHUNK_BYTES",
    "ArtifactServicer",
    "ArtifactTokenInterceptor",
    "add_artifact_service",
    "record_to_pb",
]

# Measured on loopback (docs/BENCHMARKS.md): larger chunks cost fewer per-message overheads.
ARTIFACT_CHUNK_BYTES = 4 << 20
_SERVICE = "/nasoa.v1.ArtifactService/"
UPLOAD_METHODS = frozenset(_SERVICE + m for m in ("GetUploadOffset", "UploadFile", "CommitArtifact"))
READ_METHODS = frozenset(_SERVICE + m for m in ("GetArtifact", "DownloadFile"))


class ArtifactTokenInterceptor(grpc.ServerInterceptor):
    """``authorization: Bearer <token>`` for uploads (always) and reads (``guard_reads``)."""

    def __init__(self, token: str, guard_reads: bool) -> None:
        if not token:
            raise ValueError("the artifact service needs a token: uploads are never open")
        self._token = token
        self._guarded = UPLOAD_METHODS | (READ_METHODS if guard_reads else frozenset())

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self._guarded:
            return handler
        if bearer_matches(handler_call_details, self._token):
            return handler
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        what = "upload" if handler_call_details.method in UPLOAD_METHODS else "read"
        return abort_handler(
            handler,
            grpc.StatusCode.UNAUTHENTICATED,
            f"{'missing' if not given else 'wrong'} artifact token for this {what}: set NASOA_ARTIFACT_TOKEN "
            "(or NASOA_TOKEN) to the store's token",
        )


def record_to_pb(record: ArtifactRecord) -> apb.Artifact:
    return apb.Artifact(
        artifact_id=record.artifact_id, job_id=record.job_id, sha256=record.sha256,
        files=[apb.ArtifactFile(name=f.name, sha256=f.sha256, size=f.size) for f in record.files],
        created_at=record.created_at, job_created_at=record.job_created_at, size_bytes=record.size_bytes,
        existed=record.existed,
    )  # fmt: skip


def _file(msg: apb.ArtifactFile) -> ArtifactFile:
    return ArtifactFile(msg.name, msg.sha256, msg.size)


class ArtifactServicer(artifact_pb2_grpc.ArtifactServiceServicer):
    """Register it with :func:`add_artifact_service`: DownloadFile yields :class:`FileChunkData`,
    which the generated registration's serializer does not take."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _call(self, context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except OffsetMismatch as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ArtifactError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ArtifactNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except StoreFull as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    def GetUploadOffset(self, request: apb.UploadOffsetRequest, context: grpc.ServicerContext) -> apb.UploadOffset:
        offset = self._call(context, lambda: self.store.upload_offset(request.job_id, _file(request.file)))
        return apb.UploadOffset(offset=offset)

    def UploadFile(
        self, request_iterator: Iterator[apb.UploadFileRequest], context: grpc.ServicerContext
    ) -> apb.UploadedFile:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first UploadFile message must be the header")
        header = first.header

        def chunks() -> Iterator[memoryview | bytes]:
            for message in request_iterator:
                if isinstance(message, UploadData) or message.WhichOneof("part") == "data":
                    yield message.data
                else:
                    raise ArtifactError("only data chunks may follow the UploadFile header")

        stored = self._call(
            context, lambda: self.store.receive(header.job_id, _file(header.file), header.offset, chunks())
        )
        return apb.UploadedFile(file=apb.ArtifactFile(name=stored.name, sha256=stored.sha256, size=stored.size))

    def CommitArtifact(self, request: apb.CommitArtifactRequest, context: grpc.ServicerContext) -> apb.Artifact:
        record = self._call(
            context, lambda: self.store.commit(request.job_id, request.manifest_sha256, request.job_created_at)
        )
        return record_to_pb(record)

    def GetArtifact(self, request: apb.GetArtifactRequest, context: grpc.ServicerContext) -> apb.Artifact:
        if request.WhichOneof("key") is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give an artifact_id or a job_id")
        record = self._call(context, lambda: self.store.get(request.artifact_id, request.job_id))
        return record_to_pb(record)

    def DownloadFile(
        self, request: apb.DownloadFileRequest, context: grpc.ServicerContext
    ) -> Iterator[FileChunkData]:
        path, file = self._call(context, lambda: self.store.open_file(request.artifact_id, request.name))
        if request.chunk_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size must be positive, got {request.chunk_size}")
        chunk_size = min(request.chunk_size or ARTIFACT_CHUNK_BYTES, ARTIFACT_CHUNK_BYTES)
        if not 0 <= request.offset <= file.size:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"offset {request.offset} is outside {file.name} of artifact {request.artifact_id} (0..{file.size})",
            )
        offset = request.offset
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, also when the client goes away
        except FileNotFoundError:
            context.abort(
                grpc.StatusCode.DATA_LOSS, f"{file.name} of artifact {request.artifact_id} is missing on the store"
            )
        with f:
            f.seek(offset)
            if offset == file.size:
                yield FileChunkData(offset, b"", file.size, file.sha256)
                return
            while offset < file.size:
                data = f.read(min(chunk_size, file.size - offset))
                if not data:
                    context.abort(grpc.StatusCode.DATA_LOSS, f"{file.name} of artifact {request.artifact_id} shrank")
                yield FileChunkData(offset, data, file.size, file.sha256)
                offset += len(data)


def add_artifact_service(servicer: ArtifactServicer, server: grpc.Server) -> None:
    """Serve ``servicer`` on ``server``: the proto's methods, with the data messages
    (UploadFile's requests, DownloadFile's chunks) coded by :mod:`zoo_store._artifact_wire`,
    and malloc told to keep the memory of those chunks for the next ones."""
    keep_freed_memory()
    coded = {"UploadFile": (decode_upload_request, None), "DownloadFile": (None, encode_file_chunk)}
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    service = apb.DESCRIPTOR.services_by_name["ArtifactService"]
    handlers = {}
    for method in service.methods:  # the proto's, so a method added there is served as generated
        decode, encode = coded.get(method.name, (None, None))
        handlers[method.name] = kinds[(method.client_streaming, method.server_streaming)](
            getattr(servicer, method.name),
            decode or message_factory.GetMessageClass(method.input_type).FromString,
            encode or message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
