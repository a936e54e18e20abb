"""The whole loop with real processes: zoo service, adaptor, Celery worker, broker, fine-tuning.

Submit -> the adaptor plans (the default policy, probe-then-commit) and publishes -> a worker
fetches the checkpoint, fine-tunes and streams the result back with Observe -> the adaptor's
observation count and predictions change.
"""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection

from clients.local_cluster import LocalCluster
from nasoa_contracts import JobState, TaskSpec
from nasoa_data import compute_meta_features

pytestmark = pytest.mark.integration


def _run_one_job(cluster: LocalCluster) -> None:
    client = cluster.client(timeout=30)
    meta = compute_meta_features("builtin:digits").as_dict()
    task = TaskSpec("builtin:digits", 20.0, meta)
    before_stats = client.get_stats()
    before_plan = client.recommend(task, top_k=3)
    job = client.submit(task)
    kinds = [e.kind for e in client.watch_job(job.job_id, timeout=180)]
    done = client.get_job(job.job_id)
    assert done.state == JobState.DONE, (done.message, (cluster.log_dir / "worker0.log").read_text()[-3000:])
    assert "progress" in kinds and kinds[-1] == "result"
    assert done.result.accuracy > 20.0  # well above chance (10 classes) after real fine-tuning
    assert 0 < done.result.seconds <= task.budget_seconds + 2.0
    after_stats = client.get_stats()
    # A staged plan records one observation per run that ran: a probe still queued when the
    # stage was decided is cancelled and records none.
    children = [client.get_job(child) for child in done.child_job_ids]
    runs = sum(child.state != JobState.CANCELLED for child in children) if children else 1
    assert after_stats.observations == before_stats.observations + runs
    after_plan = client.recommend(task, top_k=3)
    assert after_plan.prediction != before_plan.prediction


def test_end_to_end_through_rabbitmq(tmp_path, rabbitmq_url, monkeypatch):
    prefix = f"nasoa-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("NASOA_QUEUE_PREFIX", prefix)
    try:
        with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url) as cluster:
            _run_one_job(cluster)
    finally:
        with Connection(rabbitmq_url) as conn:
            channel = conn.channel()
            for device in ("cpu", "cuda"):
                channel.queue_delete(f"{prefix}.{device}")


def test_end_to_end_with_embedded_broker(tmp_path):
    with LocalCluster(tmp_path / "home", broker_url="") as cluster:
        _run_one_job(cluster)
