"""Staged runs through the worker's runner: a job that stops as planned stores a training
checkpoint in the real zoo service's artifact store, and a later job resumes it from there.

The zoo service runs as its own process (``nasoa-zoo serve``), the adaptor in this process on a
free port; the runner trains a tiny zoo model for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

from adaptor_service import Adaptor  # noqa: E402
from adaptor_service.server import make_server  # noqa: E402
from clients import ArtifactClient  # noqa: E402
from clients.local_cluster import free_port, wait_serving  # noqa: E402
from nasoa_contracts import Candidate, Job, Plan, Prediction, TaskSpec, WorkerSettings  # noqa: E402
from worker import JobRunner  # noqa: E402

TOKEN = "staged-token"
URI = "builtin:digits?train=256&test=64"
CANDIDATE = Candidate("etnas-nas-074", {"lr": 0.05, "batch_size": 32, "frozen_stages": 0, "optimizer": "sgd",
                                        "weight_decay": 1e-4}, epochs=3)  # fmt: skip


@pytest.fixture
def services(tmp_path, monkeypatch):
    """(adaptor, worker settings, artifact directory): a zoo process and an in-process adaptor."""
    monkeypatch.setenv("NASOA_ARTIFACT_TOKEN", TOKEN)
    monkeypatch.setenv("NASOA_HOME", str(tmp_path / "home"))
    zoo_address = f"127.0.0.1:{free_port()}"
    env = {"NASOA_ARTIFACT_DIR": str(tmp_path / "artifacts"), "NASOA_ARTIFACT_MIN_FREE_BYTES": "0"}
    log = open(tmp_path / "zoo.log", "wb")  # noqa: SIM115 - closed after the process ends
    zoo = subprocess.Popen([sys.executable, "-m", "zoo_store.cli", "serve", "--address", zoo_address],
                           env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    adaptor = Adaptor.in_memory()
    server, port, _ = make_server(adaptor, "127.0.0.1:0")
    server.start()
    try:
        wait_serving(zoo_address, 60, zoo)
        settings = WorkerSettings(adaptor_address=f"127.0.0.1:{port}", zoo_address=zoo_address,
                                  home=tmp_path / "worker", device="cpu", torch_threads=1)  # fmt: skip
        yield adaptor, settings, tmp_path / "artifacts"
    finally:
        server.stop(0).wait()
        zoo.send_signal(signal.SIGTERM)
        zoo.wait(30)
        log.close()


def _job(adaptor: Adaptor, job_id: str, **staging: object) -> Job:
    """A job of CANDIDATE's run, stored in the adaptor as a planned job would be."""
    prediction = Prediction(80.0, 5.0, 5.0, 1.0)
    plan = Plan(CANDIDATE, prediction, policy="staged-test", time_margin=1.0)
    now = time.time()
    job = Job(job_id=job_id, task=TaskSpec(URI, 60.0), plan=plan, created_at=now, updated_at=now, **staging)  # type: ignore[arg-type]
    adaptor.store.create_job(job)
    return job


def _run(adaptor: Adaptor, settings: WorkerSettings, job: Job) -> object:
    outcome = JobRunner(settings).run(job, "test-worker")
    result = adaptor.get_job(job.job_id).result
    assert result is not None and result.status == outcome.status, outcome.describe()
    return result


def test_a_stopped_job_is_resumed_by_another_job_as_one_run(services):
    adaptor, settings, artifacts = services
    straight = _run(adaptor, settings, _job(adaptor, "straight"))
    assert straight.status == "ok" and [p.epoch for p in straight.curve] == [1, 2, 3]

    probe = _run(adaptor, settings, _job(adaptor, "probe", stop_after_epochs=1))
    assert probe.status == "stopped" and "stopped as planned after epoch 1 of 3" in probe.message
    assert [p.epoch for p in probe.curve] == [1] and probe.artifact_id
    with ArtifactClient(settings.zoo_address) as store:
        stored = store.get(job_id="probe")
        manifest = json.loads(store.read_bytes(stored, "manifest.json"))
    assert manifest["status"] == "stopped" and manifest["plan"]["stop_after_epochs"] == 1
    sha, size = stored.files["checkpoint.safetensors"]
    assert manifest["files"]["checkpoint.safetensors"] == {"sha256": sha, "size": size}
    assert stored.size_bytes == sum(s for _, s in stored.files.values())  # retention counts the checkpoint

    resumed = _run(adaptor, settings, _job(adaptor, "commit", resume_from_job_id="probe"))
    assert resumed.status == "ok" and "resumed at epoch 1 from job probe" in resumed.message
    # One curve from epoch 1, the probe's epoch as it was reported, then this job's epochs.
    assert [p.epoch for p in resumed.curve] == [1, 2, 3] and resumed.curve[0] == probe.curve[0]
    assert [p.accuracy for p in resumed.curve] == pytest.approx([p.accuracy for p in straight.curve], abs=1e-9)
    assert resumed.accuracy == pytest.approx(straight.accuracy)
    # The curve's seconds continue from the probe's point; the job's seconds are its own only.
    seconds = [p.seconds for p in resumed.curve]
    assert seconds[0] < seconds[1] < seconds[2] and seconds[2] - seconds[0] < resumed.seconds
    with ArtifactClient(settings.zoo_address) as store:
        assert "checkpoint.safetensors" not in store.get(job_id="commit").files

    # No checkpoint to resume from, none stored, a damaged one: the job fails, in one line.
    for job_id, source, reason in [
        ("no-checkpoint", "straight", "has no checkpoint.safetensors"),
        ("no-artifact", "never-ran", "no artifact stored for job 'never-ran'"),
    ]:
        failed = _run(adaptor, settings, _job(adaptor, job_id, resume_from_job_id=source))
        assert failed.status == "failed" and "\n" not in failed.message, failed.message
        assert f"CheckpointUnavailable: cannot resume the run of job '{source}'" in failed.message
        assert reason in failed.message
    blob = artifacts / "blobs" / sha
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    failed = _run(adaptor, settings, _job(adaptor, "damaged", resume_from_job_id="probe"))
    assert failed.status == "failed" and "sha256" in failed.message and "\n" not in failed.message
