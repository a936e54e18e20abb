"""Wire codecs of the ArtifactService's data messages (``FileChunk``, ``UploadFileRequest``).

The bytes on the wire are exactly the protobuf encoding of proto/nasoa/v1/artifact.proto;
only the Python side differs.  The generated classes copy a chunk's data into and out of a
message object on both ends: through them a loopback stream of 4 MiB chunks ran at about 60%
of the speed of the same stream of plain bytes (docs/BENCHMARKS.md).  These codecs copy it
once to send and hand the receiver a ``memoryview`` of the received bytes.  Anything but the
plain shapes they write (an unknown field, a repeated field, a header message) is decoded by
the generated classes, so every valid encoding reads the same as with them.

:func:`keep_freed_memory` sets malloc up for streaming such chunks.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from typing import NamedTuple

from nasoa_api.v1 import artifact_pb2 as apb

__all__ = [
    "FileChunkData",
    "UploadData",
    "decode_file_chunk",
    "decode_upload_request",
    "encode_file_chunk",
    "encode_upload_request",
    "keep_freed_memory",
]

_VARINT, _LEN = 0, 2


class FileChunkData(NamedTuple):
    """A decoded ``FileChunk``; ``data`` is a view of the received message (no copy)."""

    offset: int
    data: memoryview | bytes
    total_size: int
    sha256: str


class UploadData(NamedTuple):
    """The ``data`` part of an ``UploadFileRequest`` (a view of the received message)."""

    data: memoryview | bytes


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: negatives are ten bytes of two's complement, as protobuf writes them
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """``(value, next position)``; ValueError past the end or beyond ten bytes."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _int64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def encode_file_chunk(chunk: FileChunkData | apb.FileChunk) -> bytes:
    """``FileChunk`` as protobuf writes it (fields in number order, zero values left out)."""
    if isinstance(chunk, apb.FileChunk):
        return chunk.SerializeToString()
    offset, data, total_size, sha256 = chunk
    head = b"\x08" + _varint(offset) if offset else b""
    if data:
        head += b"\x12" + _varint(len(data))
    tail = b"\x18" + _varint(total_size) if total_size else b""
    if sha256:
        text = sha256.encode()
        tail += b"\x22" + _varint(len(text)) + text
    return b"".join((head, data, tail))  # the one copy of the data


def decode_file_chunk(message: bytes) -> FileChunkData:
    """The inverse of :func:`encode_file_chunk`, for any valid encoding of a ``FileChunk``."""
    fields: dict[int, int | memoryview] = {}
    view = memoryview(message)
    pos = 0
    try:
        while pos < len(message):
            key, pos = _read_varint(message, pos)
            number, kind = key >> 3, key & 7
            if number in fields or (number, kind) not in ((1, _VARINT), (2, _LEN), (3, _VARINT), (4, _LEN)):
                raise ValueError("not the plain shape")
            value, pos = _read_varint(message, pos)
            if kind == _LEN:
                if pos + value > len(message):
                    raise ValueError("truncated field")
                fields[number] = view[pos : pos + value]
                pos += value
            else:
                fields[number] = value
        sha = fields.get(4, b"")
        return FileChunkData(
            _int64(fields.get(1, 0)), fields.get(2, b""), _int64(fields.get(3, 0)), bytes(sha).decode()  # type: ignore[arg-type]
        )
    except ValueError:  # UnicodeDecodeError included: protobuf decides what the message is
        full = apb.FileChunk.FromString(message)
        return FileChunkData(full.offset, full.data, full.total_size, full.sha256)


def encode_upload_request(request: UploadData | apb.UploadFileRequest) -> bytes:
    """An ``UploadFileRequest``: a data part written with one copy, the header by protobuf."""
    if isinstance(request, UploadData):
        return b"".join((b"\x12", _varint(len(request.data)), request.data))
    return request.SerializeToString()


def decode_upload_request(message: bytes) -> UploadData | apb.UploadFileRequest:
    """A message that is only a data part as :class:`UploadData`; any other as the
    generated ``UploadFileRequest``."""
    if message[:1] == b"\x12":
        try:
            size, pos = _read_varint(message, 1)
        except ValueError:
            size, pos = -1, 0
        if pos + size == len(message):
            return UploadData(memoryview(message)[pos:])
    return apb.UploadFileRequest.FromString(message)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 8 << 20  # twice the chunk size: chunks come from (and go back to) the heap
_TRIM_THRESHOLD = 64 << 20  # the most glibc's own dynamic setting would keep


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse the memory of freed chunks rather than hand it back to the
    kernel (``mallopt``).  With its default, dynamic thresholds the memory of freed 4 MiB
    buffers was at times returned (unmapped or trimmed), so the next chunks faulted their
    pages in again, zero-filled: up to 25,000 page faults for a 64 MB download, a third of
    the server's CPU time.  Now buffers under 8 MiB come from the heap, which keeps up to
    64 MiB of freed memory.  Process-wide; False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
