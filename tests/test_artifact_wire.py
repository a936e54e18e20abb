"""The ArtifactService's data codecs read and write exactly what the generated protobuf classes do."""

from __future__ import annotations

import platform
import random

import pytest
from google.protobuf.message import DecodeError

from nasoa_api.v1 import artifact_pb2 as apb
from zoo_store import (
    ArtifactSettings,
    ArtifactStore,
    FileChunkData,
    UploadData,
    ZooStore,
    decode_file_chunk,
    encode_upload_request,
    keep_freed_memory,
    make_zoo_server,
)
from zoo_store._artifact_wire import decode_upload_request, encode_file_chunk

SHA = "ab" * 32
CHUNKS = [
    FileChunkData(0, b"", 0, ""),
    FileChunkData(0, b"x", 1, SHA),
    FileChunkData(5 << 20, bytes(range(256)) * 300, 12 << 30, SHA),
    FileChunkData(127, b"\x00" * 128, 128, ""),
    FileChunkData(-1, b"neg", -5, "é"),  # int64 negatives: ten-byte varints
]


def _pb(chunk: FileChunkData) -> apb.FileChunk:
    return apb.FileChunk(offset=chunk.offset, data=bytes(chunk.data), total_size=chunk.total_size, sha256=chunk.sha256)


def _same(decoded: FileChunkData, message: apb.FileChunk) -> bool:
    return (decoded.offset, bytes(decoded.data), decoded.total_size, decoded.sha256) == (
        message.offset, message.data, message.total_size, message.sha256,
    )  # fmt: skip


@pytest.mark.parametrize("chunk", CHUNKS)
def test_file_chunks_encode_as_protobuf_does_and_decode_back(chunk):
    wire = encode_file_chunk(chunk)
    assert wire == _pb(chunk).SerializeToString()
    assert encode_file_chunk(_pb(chunk)) == wire
    assert _same(decode_file_chunk(wire), _pb(chunk))


def test_a_plain_chunk_decodes_without_copying_its_data():
    wire = encode_file_chunk(FileChunkData(4, b"abcdef" * 1000, 6000, SHA))
    data = decode_file_chunk(wire).data
    assert isinstance(data, memoryview) and data.obj is wire


def test_any_valid_encoding_decodes_as_protobuf_does():
    cases = [
        b"\x18\x07\x12\x03abc\x08\x02",  # fields out of order
        b"\x12\x01a\x12\x02bc",  # a repeated field: the last one wins
        b"\x08\x01\x28\x09\x12\x01z",  # an unknown varint field
        b"\x08\x01\x3a\x02hi\x12\x01z",  # an unknown length-delimited field
        b"\x08\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00",  # an overlong varint
        b"",
    ]
    for wire in cases:
        assert _same(decode_file_chunk(wire), apb.FileChunk.FromString(wire)), wire


def test_garbage_is_refused_or_read_as_protobuf_reads_it():
    rng = random.Random(14)
    valid = [encode_file_chunk(c) for c in CHUNKS]
    for _ in range(3000):
        wire = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            if wire and rng.random() < 0.7:
                wire[rng.randrange(len(wire))] = rng.randrange(256)
            else:
                del wire[rng.randrange(len(wire) + 1) :]
        wire = bytes(wire)
        try:
            expected = apb.FileChunk.FromString(wire)
        except DecodeError:
            with pytest.raises(DecodeError):
                decode_file_chunk(wire)
            continue
        assert _same(decode_file_chunk(wire), expected), wire


def test_upload_requests_encode_as_protobuf_does():
    data = b"\x01\x02" * 70_000
    assert encode_upload_request(UploadData(data)) == apb.UploadFileRequest(data=data).SerializeToString()
    header = apb.UploadFileRequest(header=apb.UploadHeader(job_id="j", offset=3))
    assert encode_upload_request(header) == header.SerializeToString()
    decoded = decode_upload_request(encode_upload_request(UploadData(data)))
    assert isinstance(decoded, UploadData) and bytes(decoded.data) == data
    assert decode_upload_request(header.SerializeToString()) == header
    # Data then a header: protobuf's oneof keeps the last, so this is a header, not data.
    mixed = apb.UploadFileRequest(data=b"ab").SerializeToString() + header.SerializeToString()
    assert decode_upload_request(mixed).WhichOneof("part") == "header"
    with pytest.raises(DecodeError):
        decode_upload_request(b"\x12\x05ab")


def test_malloc_keeps_freed_memory_on_glibc():
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_a_client_with_the_generated_stubs_uploads_and_downloads(tmp_path):
    """Peers that use the generated classes (in any language) see the same wire API."""
    import grpc
    import torch

    from clients import ArtifactClient
    from nasoa_api.v1 import artifact_pb2_grpc
    from zoo_store import save_safetensors, sha256_file

    weights, manifest = tmp_path / "model.safetensors", tmp_path / "manifest.json"
    sha, size = save_safetensors({"w": torch.rand(1_500_000, generator=torch.Generator().manual_seed(3))}, weights)
    manifest.write_bytes(b'{"job_id": "j", "files": {"model.safetensors": {"sha256": "%s", "size": %d}}}' % (
        sha.encode(), size))  # fmt: skip
    store = ArtifactStore(tmp_path / "artifacts", ArtifactSettings(min_free_bytes=0))
    server, port = make_zoo_server(ZooStore(tmp_path / "zoo"), artifacts=store, artifact_token="t")
    server.start()
    auth = (("authorization", "Bearer t"),)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.max_receive_message_length", 16 << 20)]) as ch:
            stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
            for path in (weights, manifest):
                data = path.read_bytes()
                file = apb.ArtifactFile(name=path.name, sha256=sha256_file(path), size=len(data))
                parts = [apb.UploadFileRequest(header=apb.UploadHeader(job_id="j", file=file))]
                parts += [apb.UploadFileRequest(data=data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
                assert stub.UploadFile(iter(parts), metadata=auth).file == file
            artifact = stub.CommitArtifact(apb.CommitArtifactRequest(job_id="j", manifest_sha256=sha256_file(manifest)),
                                           metadata=auth)  # fmt: skip
            request = apb.DownloadFileRequest(artifact_id=artifact.artifact_id, name=weights.name, offset=1000)
            chunks = list(stub.DownloadFile(request, metadata=auth))
            assert [c.offset for c in chunks] == list(range(1000, size, 4 << 20))
            assert {(c.total_size, c.sha256) for c in chunks} == {(size, sha)}
            assert b"".join(c.data for c in chunks) == weights.read_bytes()[1000:]
        with ArtifactClient(f"127.0.0.1:{port}", token="t") as client:
            folder = client.download(client.get(job_id="j"), tmp_path / "down", progress=False)
        assert (folder / weights.name).read_bytes() == weights.read_bytes()
    finally:
        server.stop(0).wait()
