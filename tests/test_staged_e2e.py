"""A staged plan end to end with real processes: zoo store, adaptor, two workers, RabbitMQ.

The probes run as child jobs on the workers, stop after their first epoch with a training
checkpoint in the artifact store, and the run that continues is resumed from it by a worker
(no shared disk: the checkpoint travels through the zoo service). The user follows the parent
job and downloads the winner's model by the parent's id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients.local_cluster import LocalCluster
from nasoa_contracts import JobState

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def _cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nasoa.cli", *args, "--address", cluster.adaptor_address], env=env,
                          capture_output=True, text=True, timeout=400, cwd=ROOT)  # fmt: skip


def test_probes_run_on_workers_and_the_winner_continues_from_its_checkpoint(tmp_path, rabbitmq_url, queue_prefix):
    budget = 60.0
    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url, workers=2, policy="nasoa") as cluster:
        submitted = _cli(cluster, "submit", "builtin:digits", "--budget", f"{budget:g}s", "--wait", "--json")
        logs = [(cluster.log_dir / f"worker{i}.log").read_text()[-2000:] for i in range(2)]
        assert submitted.returncode == 0, (submitted.stdout[-3000:], submitted.stderr[-3000:], logs)
        record, _ = json.JSONDecoder().raw_decode(submitted.stdout.strip())  # the submitted job, then the finished one
        client = cluster.client(timeout=30)
        parent = client.get_job(record["job_id"])
        assert parent.state == JobState.DONE and parent.plan.staged
        children = [client.get_job(job_id) for job_id in parent.child_job_ids]
        probes = [c for c in children if c.stage == 0]
        # Probes still queued when the stage was decided are cancelled, unrun; on a loaded
        # machine a probe may also reach its deadline before its last epoch.
        ran = [c for c in probes if c.state != JobState.CANCELLED]
        assert all("was decided without it" in c.message for c in probes if c not in ran)
        assert len(probes) >= 2 and ran and all(c.result.status in ("stopped", "deadline", "incomplete") for c in ran)
        stopped = [c for c in ran if c.result.status == "stopped"]
        assert stopped and all(c.result.curve[-1].epoch == c.stop_after_epochs for c in stopped), [
            (c.job_id[-4:], c.task.budget_seconds, c.result.status, c.result.message) for c in ran]
        last = [c for c in children if c.stage == max(c.stage for c in children)]
        winner = next(c for c in last if c.state == JobState.DONE)
        resumed_from = client.get_job(winner.resume_from_job_id)
        assert resumed_from.parent_job_id == parent.job_id and resumed_from.stage == winner.stage - 1
        # One curve, no gap: the continued run reports every epoch from the first, and its
        # earlier epochs are those of the run it continued.
        epochs = [p.epoch for p in winner.result.curve]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > resumed_from.result.curve[-1].epoch
        assert winner.result.curve[: len(resumed_from.result.curve)] == resumed_from.result.curve
        # The budget is the worker-seconds of all runs.
        used = sum(c.result.seconds for c in children if c.result is not None)
        assert parent.result.seconds == pytest.approx(used) and used <= budget * 1.05
        assert parent.result.artifact_id == winner.result.artifact_id != ""

        out = tmp_path / "model"
        downloaded = _cli(cluster, "download", parent.job_id, "-o", str(out), "--zoo-address", cluster.zoo_address)
        assert downloaded.returncode == 0, downloaded.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["job_id"] == winner.job_id and manifest["test_accuracy"] == parent.result.accuracy
