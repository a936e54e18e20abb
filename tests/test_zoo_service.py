"""ZooService against a real in-process gRPC server on port 0, with real files in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

import zoo_store
from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc
from zoo_store import (
    CheckpointCache,
    ChecksumMismatch,
    ModelNotFound,
    ZooClient,
    ZooEntry,
    ZooStore,
    fetch_checkpoint,
    make_zoo_server,
)

TOKEN = "s3cret-admin-token"
ENCODING = "031-_16_1-2-2"


def _entry(name: str) -> ZooEntry:
    return ZooEntry(
        name=name,
        family="etnas",
        architecture=ENCODING,
        num_params=0,
        macs=0,
        input_size=32,
        step_time_ms={"cpu": 2.5},
        source_accuracy=70.0,
        provenance={"search_run": "test"},
    )


@pytest.fixture()
def store(tmp_path: Path) -> ZooStore:
    s = ZooStore(tmp_path / "server-zoo")
    torch.manual_seed(0)
    for name in ("etnas-a", "etnas-b"):
        s.register(_entry(name), state_dict=zoo_store.ETNAS(ENCODING, num_classes=20).state_dict())
    return s


@pytest.fixture()
def server(store: ZooStore) -> Iterator[str]:
    srv, port = make_zoo_server(store, admin_token=TOKEN)
    srv.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.stop(None)


@pytest.fixture()
def channel(server: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server) as ch:
        yield ch


def test_health_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "nasoa.v1.ZooService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_list_get_fetch_round_trip(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    client = ZooClient(channel, timeout=10)
    assert [e.name for e in client.list_models()] == ["etnas-a", "etnas-b"]
    assert [e.name for e in client.list_models("*-b")] == ["etnas-b"]
    remote = client.get_entry("etnas-a")
    assert remote == store.get_entry("etnas-a")
    cache = CheckpointCache(tmp_path / "cache")
    path = fetch_checkpoint(channel, "etnas-a", cache, timeout=10)
    assert path == cache.path_for(remote.sha256)
    assert path.read_bytes() == store.blob_path(remote.sha256).read_bytes()
    model = client.create_model("etnas-a", cache, num_classes=4)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert list((tmp_path / "cache" / "partial").iterdir()) == []


def test_unknown_model_not_found_lists_names(channel: grpc.Channel) -> None:
    stub = zoo_pb2_grpc.ZooServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModel(zoo_pb2.GetModelRequest(name="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "etnas-a" in info.value.details() and "etnas-b" in info.value.details()
    with pytest.raises(ModelNotFound, match="etnas-a"):
        ZooClient(channel, timeout=5).get_entry("nope")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cached_copy_is_refused_and_fetched_again(
    channel: grpc.Channel, store: ZooStore, tmp_path: Path, damage: str
) -> None:
    cache = CheckpointCache(tmp_path / "cache")
    path = fetch_checkpoint(channel, "etnas-a", cache, timeout=10)
    good = path.read_bytes()
    data = bytearray(good)
    if damage == "flip":
        data[len(data) // 3] ^= 0x40
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    entry = store.get_entry("etnas-a")
    with pytest.raises(ChecksumMismatch):  # the bad copy never loads
        zoo_store.create_model_from_entry(entry, checkpoint_path=path)
    assert cache.get(entry.sha256, entry.size_bytes) is None  # refused and removed
    again = fetch_checkpoint(channel, "etnas-a", cache, timeout=10)
    assert again.read_bytes() == good
    zoo_store.create_model_from_entry(entry, checkpoint_path=again)


def test_corrupt_partial_download_is_refetched(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    entry = store.get_entry("etnas-b")
    cache = CheckpointCache(tmp_path / "cache")
    partial = cache.partial_path(entry.sha256)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\x00" * 1000)  # garbage prefix: resume completes, sha fails, refetch
    path = fetch_checkpoint(channel, "etnas-b", cache, timeout=10)
    assert path.read_bytes() == store.blob_path(entry.sha256).read_bytes()


def test_resumable_fetch_from_offset(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    entry = store.get_entry("etnas-a")
    blob = store.blob_path(entry.sha256).read_bytes()
    stub = zoo_pb2_grpc.ZooServiceStub(channel)
    offset = len(blob) // 2 + 7
    chunks = list(
        stub.FetchCheckpoint(zoo_pb2.FetchCheckpointRequest(name="etnas-a", offset=offset, chunk_size=4096), timeout=10)
    )
    assert chunks[0].offset == offset and all(len(c.data) <= 4096 for c in chunks)
    assert b"".join(c.data for c in chunks) == blob[offset:]
    assert {c.sha256 for c in chunks} == {entry.sha256} and chunks[0].total_size == len(blob)
    # The worker-side fetch resumes from a partial file's size.
    cache = CheckpointCache(tmp_path / "cache")
    partial = cache.partial_path(entry.sha256)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(blob[:offset])
    path = fetch_checkpoint(channel, "etnas-a", cache, timeout=10, chunk_size=4096)
    assert path.read_bytes() == blob
    for bad in (-1, len(blob) + 1):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.FetchCheckpoint(zoo_pb2.FetchCheckpointRequest(name="etnas-a", offset=bad), timeout=5))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    big = list(stub.FetchCheckpoint(zoo_pb2.FetchCheckpointRequest(name="etnas-a", chunk_size=1 << 30), timeout=10))
    assert all(len(c.data) <= 1 << 20 for c in big)


class _BreakingStub:
    """A stub whose stream breaks after a few chunks (UNAVAILABLE), like a dropped connection."""

    def __init__(self, channel: grpc.Channel, break_after: int) -> None:
        self._stub = zoo_pb2_grpc.ZooServiceStub(channel)
        self.GetModel = self._stub.GetModel
        self.break_after = break_after
        self.offsets: list[int] = []

    def FetchCheckpoint(
        self, request: zoo_pb2.FetchCheckpointRequest, timeout: float
    ) -> Iterator[zoo_pb2.CheckpointChunk]:
        assert timeout is not None
        self.offsets.append(request.offset)
        for i, chunk in enumerate(self._stub.FetchCheckpoint(request, timeout=timeout)):
            if len(self.offsets) == 1 and i == self.break_after:
                raise _Unavailable()
            yield chunk


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection dropped"


def test_broken_stream_resumes(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    entry = store.get_entry("etnas-b")
    stub = _BreakingStub(channel, break_after=3)
    path = fetch_checkpoint(stub, "etnas-b", CheckpointCache(tmp_path / "cache"), timeout=10, chunk_size=8192)
    assert path.read_bytes() == store.blob_path(entry.sha256).read_bytes()
    assert stub.offsets == [0, 3 * 8192]


def test_corrupt_blob_on_server_gives_clear_error(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    entry = store.get_entry("etnas-a")
    blob = store.blob_path(entry.sha256)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    stub = zoo_pb2_grpc.ZooServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.FetchCheckpoint(zoo_pb2.FetchCheckpointRequest(name="etnas-a"), timeout=5))
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert "corrupt" in info.value.details() and "etnas-a" in info.value.details()
    cache = CheckpointCache(tmp_path / "cache")
    with pytest.raises(ChecksumMismatch, match="corrupt"):
        fetch_checkpoint(channel, "etnas-a", cache, timeout=5)
    assert not cache.path_for(entry.sha256).exists()


def _upload_file(tmp_path: Path, encoding: str = ENCODING, num_classes: int = 20) -> Path:
    path = tmp_path / "upload.safetensors"
    zoo_store.save_safetensors(zoo_store.ETNAS(encoding, num_classes=num_classes).state_dict(), path)
    return path


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_register_without_or_with_wrong_token_unauthenticated(
    channel: grpc.Channel, store: ZooStore, tmp_path: Path, token: str | None
) -> None:
    path = _upload_file(tmp_path)
    stub = zoo_pb2_grpc.ZooServiceStub(channel)
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    requests = iter(
        [
            zoo_pb2.RegisterModelRequest(entry=_entry("new").to_proto()),
            zoo_pb2.RegisterModelRequest(data=path.read_bytes()),
        ]
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.RegisterModel(requests, timeout=10, metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not store.has("new")


def test_register_with_token(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    path = _upload_file(tmp_path)
    client = ZooClient(channel, timeout=20)
    stored = client.register(_entry("etnas-new"), path, token=TOKEN, chunk_size=10_000)
    assert stored.sha256 == zoo_store.sha256_file(path) and store.has("etnas-new")
    assert stored.num_params > 0 and stored.provenance["num_classes"] == "20"
    assert client.get_entry("etnas-new") == stored
    fetched = fetch_checkpoint(channel, "etnas-new", tmp_path / "cache", timeout=10)
    assert fetched.read_bytes() == path.read_bytes()
    # Taken names, weights of another architecture, and non-safetensors bytes are refused.
    with pytest.raises(grpc.RpcError) as info:
        client.register(_entry("etnas-new"), path, token=TOKEN)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    other = _upload_file(tmp_path, encoding="031-_8_1-2")
    with pytest.raises(grpc.RpcError) as info:
        client.register(_entry("etnas-other"), other, token=TOKEN)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not fit" in info.value.details()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\x00" * 64)
    with pytest.raises(grpc.RpcError) as info:
        client.register(_entry("etnas-junk"), junk, token=TOKEN)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "safetensors" in info.value.details()
    assert not store.has("etnas-other") and not store.has("etnas-junk")


def test_register_sha_mismatch_in_transit(channel: grpc.Channel, store: ZooStore, tmp_path: Path) -> None:
    path = _upload_file(tmp_path)
    stub = zoo_pb2_grpc.ZooServiceStub(channel)
    header = _entry("etnas-x").replace(sha256="0" * 64).to_proto()
    with pytest.raises(grpc.RpcError) as info:
        stub.RegisterModel(
            iter([zoo_pb2.RegisterModelRequest(entry=header), zoo_pb2.RegisterModelRequest(data=path.read_bytes())]),
            timeout=10,
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in info.value.details()


def test_register_disabled_without_admin_token(
    store: ZooStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NASOA_ZOO_ADMIN_TOKEN", raising=False)
    srv, port = make_zoo_server(store)
    srv.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError) as info:
                ZooClient(ch, timeout=10).register(_entry("etnas-z"), _upload_file(tmp_path), token="anything")
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert len(ZooClient(ch, timeout=5).list_models()) == 2  # reads still work
    finally:
        srv.stop(None)
