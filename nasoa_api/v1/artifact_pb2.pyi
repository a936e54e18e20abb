from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactFile(_message.Message):
    __slots__ = ("name", "sha256", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size: int
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("artifact_id", "job_id", "sha256", "files", "created_at", "job_created_at", "size_bytes", "existed")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    job_id: str
    sha256: str
    files: _containers.RepeatedCompositeFieldContainer[ArtifactFile]
    created_at: float
    job_created_at: float
    size_bytes: int
    existed: bool
    def __init__(self, artifact_id: _Optional[str] = ..., job_id: _Optional[str] = ..., sha256: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ArtifactFile, _Mapping]]] = ..., created_at: _Optional[float] = ..., job_created_at: _Optional[float] = ..., size_bytes: _Optional[int] = ..., existed: _Optional[bool] = ...) -> None: ...

class UploadOffsetRequest(_message.Message):
    __slots__ = ("job_id", "file")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    file: ArtifactFile
    def __init__(self, job_id: _Optional[str] = ..., file: _Optional[_Union[ArtifactFile, _Mapping]] = ...) -> None: ...

class UploadOffset(_message.Message):
    __slots__ = ("offset",)
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    def __init__(self, offset: _Optional[int] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("job_id", "file", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    file: ArtifactFile
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., file: _Optional[_Union[ArtifactFile, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...

class UploadFileRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadedFile(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: ArtifactFile
    def __init__(self, file: _Optional[_Union[ArtifactFile, _Mapping]] = ...) -> None: ...

class CommitArtifactRequest(_message.Message):
    __slots__ = ("job_id", "manifest_sha256", "job_created_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    JOB_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    manifest_sha256: str
    job_created_at: float
    def __init__(self, job_id: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., job_created_at: _Optional[float] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "job_id")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    job_id: str
    def __init__(self, artifact_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class DownloadFileRequest(_message.Message):
    __slots__ = ("artifact_id", "name", "offset", "chunk_size")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    name: str
    offset: int
    chunk_size: int
    def __init__(self, artifact_id: _Optional[str] = ..., name: _Optional[str] = ..., offset: _Optional[int] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("offset", "data", "total_size", "sha256")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
