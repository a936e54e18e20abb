"""The artifact store through a real gRPC server on a free port, with real files on disk."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import grpc
import pytest

from clients._artifacts import ArtifactClient, ArtifactStoreFull, ModelNotReady, stored_artifact_of
from nasoa_api.v1 import artifact_pb2 as apb
from zoo_store import ArtifactNotFound, ArtifactSettings, ArtifactStore, ZooStore, make_zoo_server
from zoo_store._checkpoints import save_safetensors, sha256_file

TOKEN = "s3cret"


def _artifact(folder: Path, job_id: str, numel: int = 300_000) -> tuple[Path, Path]:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    sha, size = save_safetensors({"w": torch.arange(numel, dtype=torch.float32) * len(job_id)}, weights)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"format": "nasoa-finetuned/1", "job_id": job_id,
                                    "files": {"model.safetensors": {"sha256": sha, "size": size}}}))  # fmt: skip
    return weights, manifest


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(guard_reads: bool = False, **settings: object) -> tuple[str, ArtifactStore]:
        store = ArtifactStore(tmp_path / "artifacts", ArtifactSettings(**settings))  # type: ignore[arg-type]
        server, port = make_zoo_server(ZooStore(tmp_path / "zoo"), artifacts=store, artifact_token=TOKEN,
                                       guard_artifact_reads=guard_reads)  # fmt: skip
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", store

    yield start
    for server in servers:
        server.stop(0).wait()


def _left_behind(store: ArtifactStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def test_upload_commit_download_round_trip(tmp_path, serve):
    address, store = serve(min_free_bytes=0)
    weights, manifest = _artifact(tmp_path / "out", "job-1")
    with ArtifactClient(address, token=TOKEN) as client:
        stored = client.upload("job-1", weights, manifest, job_created_at=1.0)
        assert stored.sha256 == sha256_file(manifest) and stored.artifact_id == stored.sha256[:16]
        assert not stored.existed and stored.files["model.safetensors"] == (
            sha256_file(weights),
            weights.stat().st_size,
        )
        # Idempotent by job id: a redelivered job gets the stored artifact back.
        again = client.upload("job-1", weights, manifest)
        assert again.existed and again.artifact_id == stored.artifact_id
        assert client.get(job_id="job-1") == client.get(artifact_id=stored.artifact_id)
        folder = client.download(stored, tmp_path / "down", progress=False)
    assert (folder / "model.safetensors").read_bytes() == weights.read_bytes()
    assert (folder / "SHA256SUMS").read_text().count("  ") == 2
    assert len(store.records()) == 1 and not list((store.root / "uploads").iterdir())


def test_a_training_checkpoint_travels_as_a_third_file_and_counts_for_retention(tmp_path, serve):
    import torch

    address, store = serve(min_free_bytes=0, max_bytes=1, min_age_seconds=1e12)  # over the cap, but young
    out = tmp_path / "out"
    weights, manifest = _artifact(out, "probe")
    checkpoint = out / "checkpoint.safetensors"
    sha, size = save_safetensors({"model/w": torch.ones(50_000)}, checkpoint)
    with ArtifactClient(address, token=TOKEN) as client:
        with pytest.raises(ValueError, match="checkpoint.safetensors named by the manifest of job 'probe' was not"):
            # The manifest must name it to upload it, and must not name one that was not uploaded.
            body = json.loads(manifest.read_text())
            body["files"]["checkpoint.safetensors"] = {"sha256": "0" * 64, "size": 10}
            manifest.write_text(json.dumps(body))
            client.upload("probe", weights, manifest)
        body["files"]["checkpoint.safetensors"] = {"sha256": sha, "size": size}
        manifest.write_text(json.dumps(body))
        stored = client.upload("probe", weights, manifest, checkpoint=checkpoint)
        assert stored.files["checkpoint.safetensors"] == (sha, size)
        assert stored.size_bytes == size + weights.stat().st_size + manifest.stat().st_size
        path = client.download_training_checkpoint("probe", tmp_path / "resume")
        assert path.read_bytes() == checkpoint.read_bytes() and not (path.parent / "model.safetensors").exists()
        plain_weights, plain_manifest = _artifact(tmp_path / "plain", "plain")
        client.upload("plain", plain_weights, plain_manifest)
        with pytest.raises(ArtifactNotFound, match="of job 'plain' has no checkpoint.safetensors"):
            client.download_training_checkpoint("plain", tmp_path / "none")
    assert store.total_bytes() == stored.size_bytes + plain_weights.stat().st_size + plain_manifest.stat().st_size
    # Retention deletes the checkpoint's blob with its artifact.
    old = ArtifactStore(store.root, ArtifactSettings(max_count=1, min_age_seconds=0.0, min_free_bytes=0))
    assert [r.job_id for r in old.records()] == ["plain"] and not old.blob_path(sha).exists()


def test_broken_upload_and_download_resume_from_their_offset(tmp_path, serve):
    address, store = serve(min_free_bytes=0)
    weights, manifest = _artifact(tmp_path / "out", "job-r", numel=3_000_000)  # 12 MB: three chunks
    data = weights.read_bytes()
    file = apb.ArtifactFile(name="model.safetensors", sha256=sha256_file(weights), size=len(data))
    # A stream that breaks after 5 MB: the store keeps those bytes.
    from zoo_store._artifacts import ArtifactError, ArtifactFile

    with pytest.raises(ArtifactError, match="resume from there"):
        store.receive("job-r", ArtifactFile(file.name, file.sha256, file.size), 0, iter([data[: 5 << 20]]))
    with ArtifactClient(address, token=TOKEN) as client:
        assert client._stub.GetUploadOffset(apb.UploadOffsetRequest(job_id="job-r", file=file),
                                            metadata=client._metadata).offset == 5 << 20  # fmt: skip
        with pytest.raises(grpc.RpcError, match="resume at byte 5242880"):
            client._stub.UploadFile(iter([apb.UploadFileRequest(header=apb.UploadHeader(job_id="job-r", file=file))]),
                                    metadata=client._metadata)  # fmt: skip
        stored = client.upload("job-r", weights, manifest)
        # A download that stopped half-way continues from the partial file.
        down = tmp_path / "down"
        down.mkdir()
        (down / "model.safetensors.part").write_bytes(data[: len(data) // 2])
        client.download(stored, down, progress=False)
    assert (down / "model.safetensors").read_bytes() == data and not list(down.glob("*.part"))


def test_two_uploads_of_one_file_do_not_interleave(tmp_path):
    from zoo_store._artifacts import ArtifactFile, OffsetMismatch

    store = ArtifactStore(tmp_path / "a", ArtifactSettings(min_free_bytes=0))
    weights, _ = _artifact(tmp_path / "out", "job-2x")
    data = weights.read_bytes()
    file = ArtifactFile(weights.name, sha256_file(weights), len(data))
    refused = []

    def first_stream():
        yield data[:1000]
        try:  # a second delivery of the job arrives while the first is still sending
            store.receive("job-2x", file, 1000, iter([data[1000:]]))
        except OffsetMismatch as exc:
            refused.append(str(exc))
        yield data[1000:]

    assert store.receive("job-2x", file, 0, first_stream()) == file
    assert refused == ["model.safetensors of job 'job-2x' is being uploaded by another call; retry"]
    assert store.blob_path(file.sha256).read_bytes() == data


def test_upload_over_the_size_limit_and_full_disk_leave_nothing(tmp_path, serve):
    weights, manifest = _artifact(tmp_path / "out", "job-big")
    address, store = serve(max_upload_bytes=1000, min_free_bytes=0)
    with ArtifactClient(address, token=TOKEN) as client, pytest.raises(ValueError) as info:
        client.upload("job-big", weights, manifest)
    assert (
        str(info.value)
        == f"upload of model.safetensors ({weights.stat().st_size} bytes) is larger than the 1000-byte limit"
    )
    assert _left_behind(store) == []

    address, store = serve(min_free_bytes=1 << 60)  # no disk has that much free: the store is full
    with ArtifactClient(address, token=TOKEN) as client, pytest.raises(ArtifactStoreFull, match="disk is full"):
        client.upload("job-big", weights, manifest)
    assert _left_behind(store) == [] and "\n" not in str(info.value)


def test_tokens_guard_uploads_always_and_reads_when_configured(tmp_path, serve):
    weights, manifest = _artifact(tmp_path / "out", "job-t")
    open_address, _ = serve(min_free_bytes=0)
    with ArtifactClient(open_address, token="") as anonymous:
        with pytest.raises(PermissionError, match="missing artifact token for this upload"):
            anonymous.upload("job-t", weights, manifest)
        with pytest.raises(ArtifactNotFound, match="no artifact stored for job 'job-t'"):
            anonymous.get(job_id="job-t")  # reads are open without a configured token
    guarded_address, _ = serve(guard_reads=True, min_free_bytes=0)
    with (
        ArtifactClient(guarded_address, token="wrong") as stranger,
        pytest.raises(PermissionError, match="wrong artifact token for this read"),
    ):
        stranger.get(job_id="job-t")


def test_commit_checks_the_manifest(tmp_path, serve):
    address, store = serve(min_free_bytes=0)
    weights, manifest = _artifact(tmp_path / "out", "job-a")
    with (
        ArtifactClient(address, token=TOKEN) as client,
        pytest.raises(ValueError, match="does not belong to job 'job-b'"),
    ):
        client.upload("job-b", weights, manifest)
    assert store.records() == []


def test_retention_deletes_oldest_eligible_first_and_logs_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nasoa.zoo.artifacts")
    store = ArtifactStore(tmp_path / "a", ArtifactSettings(max_count=2, min_age_seconds=100.0, min_free_bytes=0))
    now = 1_000_000.0
    ids = []
    for i, created in enumerate((now - 500, now - 400, now - 10)):
        job = f"job-{i}"
        weights, manifest = _artifact(tmp_path / job, job)
        for path in (weights, manifest):
            sha = sha256_file(path)
            from zoo_store._artifacts import ArtifactFile

            store.receive(job, ArtifactFile(path.name, sha, path.stat().st_size), 0, [path.read_bytes()])
        ids.append(store.commit(job, sha256_file(manifest), job_created_at=created).artifact_id)
    # commit enforces retention at wall-clock time, by which all three jobs are old: the first went
    assert [r.job_id for r in store.records()] == ["job-1", "job-2"]
    assert f"retention deleted artifact {ids[0]} of job job-0" in caplog.text
    assert not store.blob_path(sha256_file(tmp_path / "job-0" / "manifest.json")).exists()
    # A young job's artifact is never deleted, whatever the cap.
    young = ArtifactStore(tmp_path / "a", ArtifactSettings(max_count=1, min_age_seconds=1e12, min_free_bytes=0))
    assert young.enforce_retention() == [] and len(young.records()) == 2
    assert "younger than" in caplog.text
    older = ArtifactStore(tmp_path / "a", ArtifactSettings(max_count=1, min_age_seconds=100.0, min_free_bytes=0))
    assert [r.job_id for r in older.records()] == ["job-2"]


def test_jobs_without_a_model_say_why():
    from nasoa_contracts import JobState

    class _Job:
        job_id, message, result = "j1", "ValueError: boom", None

    for state, words in ((JobState.RUNNING, "still RUNNING"), (JobState.FAILED, "is FAILED: it has no model"),
                         (JobState.CANCELLED, "is CANCELLED"), (JobState.DONE, "stored no model")):  # fmt: skip
        job = _Job()
        job.state = state  # type: ignore[attr-defined]
        with pytest.raises(ModelNotReady, match=words):
            stored_artifact_of(job)


def test_artifact_token_file_is_private(tmp_path, monkeypatch):
    from zoo_store import artifact_token

    monkeypatch.delenv("NASOA_ARTIFACT_TOKEN", raising=False)
    monkeypatch.delenv("NASOA_TOKEN", raising=False)
    monkeypatch.setenv("NASOA_HOME", str(tmp_path))
    assert artifact_token() == ""
    made = artifact_token(create=True)
    assert len(made) > 20 and artifact_token() == made
    assert os.stat(tmp_path / "artifact-token").st_mode & 0o777 == 0o600
    monkeypatch.setenv("NASOA_ARTIFACT_TOKEN", "configured")
    assert artifact_token() == "configured"
