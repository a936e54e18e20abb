"""The fine-tuned model comes back: real zoo store, adaptor, worker and RabbitMQ processes.

Submit -> the worker fine-tunes, saves and uploads the model, then reports -> the user
downloads it (CLI), loads it in a fresh process and predicts; and the ways that can go wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.local_cluster import LocalCluster
from nasoa_contracts import JobState, TaskSpec
from nasoa_data import compute_meta_features

pytestmark = pytest.mark.integration

DIGITS = "builtin:digits"
ROOT = Path(__file__).resolve().parents[1]


def _cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "nasoa.cli", *args, "--address", cluster.adaptor_address],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def _finished_job(cluster: LocalCluster, budget: str = "20s") -> object:
    """A job submitted the way the README does it, ``--wait`` ending with where the model is."""
    submitted = _cli(cluster, "submit", DIGITS, "--budget", budget, "--wait")
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr,
                                       (cluster.log_dir / "worker0.log").read_text()[-3000:])  # fmt: skip
    job_id = submitted.stdout.split()[1]
    done = cluster.client(timeout=30).get_job(job_id)
    assert done.state == JobState.DONE
    assert f"model: artifact {done.result.artifact_id} in the artifact store" in submitted.stdout
    assert f"nasoa-submit download {job_id} -o ./{job_id}" in submitted.stdout
    return done


def _artifact_records(cluster: LocalCluster) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cluster.home / "artifacts" / "records").glob("*.json"))]


_FRESH_PROCESS_SCORE = """
import json, sys
from clients import load_finetuned
from nasoa_data import load_splits
model = load_finetuned(sys.argv[1])
x, y = load_splits("builtin:digits").test
predicted = model.predict(list(x))
correct = sum(cls == model.classes[int(label)] for (cls, _), label in zip(predicted, y))
copy = load_finetuned(model.save(sys.argv[2]))  # save() writes a folder that loads the same
assert copy.predict(list(x[:32])) == predicted[:32] and copy.manifest == model.manifest
print(json.dumps({"accuracy": 100.0 * correct / len(y), "reported": model.accuracy,
                  "training": model.model.training, "classes": model.classes}))
"""


def test_model_is_downloaded_loaded_elsewhere_and_predicts(tmp_path, rabbitmq_url, queue_prefix):
    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url) as cluster:
        done = _finished_job(cluster)
        result = done.result
        assert len(result.artifact_id) == 16 and result.artifact_sha256.startswith(result.artifact_id)
        # The run whose model the job returns: the job itself, or the winning run of a staged job
        # (whose probes stored their models and training checkpoints too).
        client = cluster.client(timeout=30)
        runs = [client.get_job(job_id) for job_id in done.child_job_ids] or [done]
        winner = next(run for run in runs if run.result is not None and run.result.artifact_id == result.artifact_id)
        records = _artifact_records(cluster)
        assert winner.job_id in [r["job_id"] for r in records]
        assert {r["job_id"] for r in records} <= {run.job_id for run in runs}

        out = tmp_path / "model"
        dl = _cli(cluster, "download", done.job_id, "-o", str(out), "--zoo-address", cluster.zoo_address)
        assert dl.returncode == 0, dl.stderr
        assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "manifest.json", "model.safetensors"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["job_id"] == winner.job_id and manifest["test_accuracy"] == result.accuracy
        assert manifest["dataset"]["splits"] == {"train": 1078, "validation": 269, "test": 450}
        assert [p["accuracy"] for p in manifest["curve"]] == [p.accuracy for p in result.curve]  # validation
        assert manifest["base_model"]["name"] == winner.plan.candidate.model

        # A fresh process, nothing but the folder: the test split scores what the job reported.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        scored = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_SCORE, str(out), str(tmp_path / "saved")], env=env,
                                capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
        fresh = json.loads(scored.stdout)
        assert fresh["accuracy"] == pytest.approx(result.accuracy, abs=0.1), fresh
        assert fresh["reported"] == result.accuracy and fresh["training"] is False

        # predict on a folder of PNGs in ImageFolder layout: one line per image.
        from PIL import Image

        from nasoa_data import load_splits

        x, y = load_splits(DIGITS).test
        images = tmp_path / "pngs"
        for i in range(12):
            (images / str(int(y[i]))).mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i].squeeze(-1)).save(images / str(int(y[i])) / f"{i}.png")
        pred = _cli(cluster, "predict", done.job_id, str(images), "--zoo-address", cluster.zoo_address)
        assert pred.returncode == 0, pred.stderr
        lines = pred.stdout.strip().splitlines()
        assert len(lines) == 12
        for line in lines:
            path, cls, prob = line.split("\t")
            assert Path(path).is_file() and cls in fresh["classes"] and 0.0 < float(prob) <= 1.0
        as_json = _cli(cluster, "predict", str(out), str(images / "3"), "--json")
        assert as_json.returncode == 0 and len(json.loads(as_json.stdout)) == len(list((images / "3").iterdir()))

        # A truncated download is refused and fetched again; a tampered file fails its sha256.
        weights = out / "model.safetensors"
        good = weights.read_bytes()
        weights.write_bytes(good[: len(good) // 2])
        again = _cli(cluster, "download", done.job_id, "-o", str(out), "--zoo-address", cluster.zoo_address)
        assert again.returncode == 0 and "fetching it again" in again.stderr, again.stderr
        assert weights.read_bytes() == good
        tampered = bytearray(good)
        tampered[-1] ^= 0xFF
        weights.write_bytes(bytes(tampered))
        bad = _cli(cluster, "predict", str(out), str(images))
        assert bad.returncode == 2 and "corrupt" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

        # Uploads need the store's token.
        from clients import ArtifactClient

        for token in ("", "wrong"):
            with (
                ArtifactClient(cluster.zoo_address, token=token) as anonymous,
                pytest.raises(PermissionError, match="artifact token"),
            ):
                anonymous.upload("intruder", weights, out / "manifest.json")
        assert len(_artifact_records(cluster)) == len(records)  # nothing stored

        # Errors, each on one line: an unknown job, a job without a model.
        unknown = _cli(cluster, "download", "no-such-job", "--zoo-address", cluster.zoo_address)
        assert unknown.returncode == 2 and unknown.stderr.strip() == "nasoa-submit: unknown job 'no-such-job'"
        client = cluster.client(timeout=30)
        waiting = client.submit(TaskSpec(DIGITS, 600.0, compute_meta_features(DIGITS).as_dict()))
        early = _cli(cluster, "download", waiting.job_id, "--zoo-address", cluster.zoo_address)
        assert early.returncode == 2 and "is still" in early.stderr and "not ready" in early.stderr, early.stderr
        client.cancel_job(waiting.job_id)
        cancelled = _cli(cluster, "download", waiting.job_id, "--zoo-address", cluster.zoo_address)
        assert cancelled.returncode == 2 and "is CANCELLED: it has no model" in cancelled.stderr
        assert not (ROOT / waiting.job_id).exists()


def test_worker_killed_after_upload_stores_one_artifact_and_one_observation(tmp_path, rabbitmq_url, queue_prefix):
    from clients import ArtifactClient
    from zoo_store import ArtifactNotFound

    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url, policy="one-shot",  # one run, one worker task
                      env={"NASOA_TEST_PAUSE_AFTER_UPLOAD": "600"}) as cluster:  # fmt: skip
        client = cluster.client(timeout=30)
        job = client.submit(TaskSpec(DIGITS, 15.0, compute_meta_features(DIGITS).as_dict()))
        deadline = time.monotonic() + 240
        with ArtifactClient(cluster.zoo_address) as store:
            while True:
                try:
                    uploaded = store.get(job_id=job.job_id)
                    break
                except ArtifactNotFound:
                    assert time.monotonic() < deadline, (cluster.log_dir / "worker0.log").read_text()[-3000:]
                    time.sleep(0.2)
        log = cluster.log_dir / "worker0.log"
        while "pausing" not in log.read_text():  # uploaded, committed, result not yet reported
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get_job(job.job_id).state == JobState.RUNNING
        cluster.stop_process("worker0", signal.SIGKILL)  # before the result and the Celery ack
        del cluster.extra_env["NASOA_TEST_PAUSE_AFTER_UPLOAD"]
        cluster.start_worker(1)  # RabbitMQ redelivers the unacknowledged message to it
        list(client.watch_job(job.job_id, timeout=240))
        done = client.get_job(job.job_id)
        assert done.state == JobState.DONE, done.message
        assert (done.result.artifact_id, done.result.artifact_sha256) == (uploaded.artifact_id, uploaded.sha256)
        assert "earlier delivery" in done.result.message
        assert [r["job_id"] for r in _artifact_records(cluster)] == [job.job_id]
        assert client.get_stats().observations == 1


def test_full_store_fails_the_job_in_one_line_and_keeps_nothing(tmp_path, rabbitmq_url, queue_prefix):
    # No disk has an exabyte free: the store refuses every upload as a full disk would.
    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url, policy="one-shot",
                      env={"NASOA_ARTIFACT_MIN_FREE_BYTES": str(1 << 60)}) as cluster:  # fmt: skip
        client = cluster.client(timeout=30)
        job = client.submit(TaskSpec(DIGITS, 10.0, compute_meta_features(DIGITS).as_dict()))
        list(client.watch_job(job.job_id, timeout=240))
        failed = client.get_job(job.job_id)
        assert failed.state == JobState.FAILED and failed.result.artifact_id == ""
        assert failed.message.startswith("ArtifactStoreFull: the artifact store's disk is full: ")
        assert "\n" not in failed.message
        dl = _cli(cluster, "download", job.job_id, "--zoo-address", cluster.zoo_address)
        assert dl.returncode == 2 and f"job {job.job_id} is FAILED: it has no model" in dl.stderr
        store = cluster.home / "artifacts"
        assert [p for p in store.rglob("*") if p.is_file()] == []
        assert not (ROOT / job.job_id).exists()
