"""Delivery promises with real processes and the real RabbitMQ broker."""

from __future__ import annotations

import signal

import pytest

from adaptor_service import JobState, TaskSpec
from clients.local_cluster import LocalCluster
from nasoa_data import compute_meta_features

pytestmark = pytest.mark.integration


def test_worker_killed_mid_job_loses_nothing(tmp_path, rabbitmq_url, queue_prefix):
    dataset = "builtin:fashion-mnist?train=2000&test=500"
    task = TaskSpec(dataset, 40.0, compute_meta_features(dataset).as_dict())
    # The fixed policy plans the most epochs of etnas-z7 that fit: a job long enough to kill
    # mid-way whatever the learned models prefer.
    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url, policy="fixed",
                      env={"NASOA_FIXED_MODEL": "etnas-z7"}) as cluster:
        client = cluster.client(timeout=30)
        job = client.submit(task, models=["etnas-z7"])
        assert job.plan.candidate.epochs >= 3, job.plan.candidate
        events = client.watch_job(job.job_id, timeout=120)
        for event in events:
            if event.kind == "progress":
                break  # the worker is halfway through a real fine-tuning
        else:
            pytest.fail(f"no progress before the end: {client.get_job(job.job_id)}")
        cluster.stop_process("worker0", signal.SIGKILL)  # parent and child, no goodbye
        running = client.get_job(job.job_id)
        assert running.state == JobState.RUNNING, (running.plan.candidate, event)
        cluster.start_worker(1)  # RabbitMQ redelivers the unacknowledged message to it
        rest = list(client.watch_job(job.job_id, after_seq=event.seq, timeout=180))
        done = client.get_job(job.job_id)
        assert done.state == JobState.DONE, done.message
        assert any(e.kind == "state" and "running again on nasoa1" in e.message for e in rest)
        assert client.get_stats().observations == 1
        assert [j.job_id for j in client.list_jobs()] == [job.job_id]
