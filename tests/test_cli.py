"""``nasoa-submit`` run as a user runs it (a subprocess) against a real adaptor gRPC server.

Jobs are moved along with the adaptor's own calls (what a worker's Observe messages do), so
every command's output, ``--json`` and exit status are checked without fine-tuning; the
integration tests (tests/test_user_api.py) run the same commands against a real worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from nasoa_contracts import CurvePoint, Observation

EXIT_OK, EXIT_USAGE, EXIT_JOB_FAILED, EXIT_UNREACHABLE = 0, 2, 3, 4


def nasoa_submit(*args: str, address: str, cwd: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, NASOA_ADAPTOR_ADDRESS=address, **(env or {}))
    return subprocess.run([sys.executable, "-m", "nasoa.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


def image_folder(root, classes=("cat", "dog"), per_class=6):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit", "builtin:digits", "--budget", "-5s"], "budget must be positive, got '-5s'"),
        (["submit", "builtin:digits", "--budget", "soon"], "budget 'soon' is not a duration"),
        (["submit", "/no/such/dataset", "--budget", "30s"], "/no/such/dataset"),
        (["submit", "no/such/relative", "--budget", "30s"], "does not exist (resolved to '/"),
        (["submit", "builtin:digits", "--budget", "30s", "--model", "resnet999"], "unknown model 'resnet999'"),
        (["submit", "builtin:nope", "--budget", "30s"], "builtin:nope"),
        (["submit", "builtin:digits", "--budget", "30s", "--device", "gpu"], "'gpu' is not one of 'cpu', 'cuda'"),
        (["submit", "builtin:digits"], "Missing option '--budget'"),
        (["plan", "builtin:digits", "--budget", "1 fortnight"], "not a duration"),
        (["submit", "builtin:digits", "--budget", "1ms"], "task.budget_seconds must be between 1 and 86400 s"),
    ],
)
def test_user_errors_get_one_line_exit_2_and_nothing_is_queued(served, home, args, message):
    adaptor, address = served
    proc = nasoa_submit(*args, address=address)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nasoa-submit: ") and message in lines[0]
    assert adaptor.list_jobs() == []


def test_a_relative_folder_is_sent_absolute_and_the_data_root_is_enforced(served, home, tmp_path):
    adaptor, address = served
    image_folder(tmp_path / "data" / "pets")
    proc = nasoa_submit("submit", "pets", "--budget", "30s", "--json", address=address, cwd=str(tmp_path / "data"))
    assert proc.returncode == EXIT_OK, proc.stderr
    sent = json.loads(proc.stdout)["dataset"]
    assert sent == str((tmp_path / "data" / "pets").resolve())
    assert [j.task.dataset_uri for j in adaptor.list_jobs()] == [sent]

    (tmp_path / "root").mkdir()
    proc = nasoa_submit("submit", str(tmp_path / "data" / "pets"), "--budget", "30s", address=address,
                        env={"NASOA_DATA_ROOT": str(tmp_path / "root")})
    assert proc.returncode == EXIT_USAGE
    assert "is outside the data root" in proc.stderr and len(adaptor.list_jobs()) == 1


def test_every_command_prints_parseable_json_with_plain_values(served, home):
    adaptor, address = served
    plan = json.loads(nasoa_submit("plan", "builtin:digits", "--budget", "30s", "--json", address=address).stdout)
    assert isinstance(plan["hparams"]["lr"], float) and isinstance(plan["predicted"]["accuracy"], float)
    assert plan["runners_up"] and all(r["reason"] for r in plan["runners_up"])

    proc = nasoa_submit("submit", "builtin:digits", "--budget", "45s", "--json", address=address)
    assert proc.returncode == EXIT_OK, proc.stderr
    job = json.loads(proc.stdout)
    assert job["state"] == "QUEUED" and job["budget_seconds"] == 45.0
    assert job["created_at"].endswith("+00:00") and "T" in job["created_at"]  # ISO 8601, UTC
    assert isinstance(job["plan"]["hparams"]["batch_size"], int)  # not {"number": 64.0}
    assert "no worker consumes the cpu queue on the embedded broker" in proc.stderr  # the warning, on stderr

    status = json.loads(nasoa_submit("status", job["job_id"], "--json", address=address).stdout)
    assert status["job_id"] == job["job_id"] and status["state"] == "QUEUED"
    listing = json.loads(nasoa_submit("status", "--json", address=address).stdout)
    assert [j["job_id"] for j in listing] == [job["job_id"]]

    stats = json.loads(nasoa_submit("stats", "--json", address=address).stdout)
    assert stats["jobs"] == 1 and stats["jobs_by_state"] == {"QUEUED": 1} and isinstance(stats["observations"], int)
    text = nasoa_submit("stats", address=address).stdout
    assert "jobs 1 (QUEUED 1)" in text and "observations learned 0" in text and "{" not in text

    cancelled = json.loads(nasoa_submit("cancel", job["job_id"], "--json", address=address).stdout)
    assert cancelled["state"] == "CANCELLED"
    proc = nasoa_submit("cancel", job["job_id"], address=address)  # cancelling twice is refused
    assert proc.returncode == 1 and "already CANCELLED" in proc.stderr

    assert json.loads(nasoa_submit("report", "--json", address=address).stdout) == []


def _finish(adaptor, job_id, status="ok", accuracy=80.0, message="", delay=0.0):
    job = adaptor.get_job(job_id)
    time.sleep(delay)
    adaptor.job_started(job_id, "worker@test")
    adaptor.job_progress(job_id, CurvePoint(1, accuracy / 2, 1.0))
    adaptor.observe(Observation(job_id, job.task, job.plan.candidate, accuracy, 2.0,
                                (CurvePoint(1, accuracy / 2, 1.0), CurvePoint(2, accuracy, 2.0)), status, message))


def test_failed_job_shows_its_error_and_exits_3(served, home):
    adaptor, address = served
    job_id = json.loads(nasoa_submit("submit", "builtin:digits", "--budget", "30s", "--json", address=address).stdout)["job_id"]
    ok_id = json.loads(nasoa_submit("submit", "builtin:shapes", "--budget", "30s", "--json", address=address).stdout)["job_id"]
    _finish(adaptor, job_id, status="failed", accuracy=0.0, message="DatasetError: the folder is gone")
    _finish(adaptor, ok_id, accuracy=91.0)

    proc = nasoa_submit("watch", job_id, address=address)
    assert proc.returncode == EXIT_JOB_FAILED
    assert "result: FAILED" in proc.stdout and "the folder is gone" in proc.stdout
    proc = nasoa_submit("status", job_id, address=address)
    assert proc.returncode == EXIT_OK and "error: DatasetError: the folder is gone" in proc.stdout
    table = nasoa_submit("status", address=address).stdout
    assert "FAILED" in table and "DatasetError" in table

    rows = json.loads(nasoa_submit("report", "--json", address=address).stdout)
    assert [(r["job_id"], r["state"]) for r in rows] == [(ok_id, "DONE"), (job_id, "FAILED")]
    assert rows[1]["error"] == "DatasetError: the folder is gone" and rows[0]["accuracy"] == 91.0
    report = nasoa_submit("report", address=address).stdout
    assert "FAILED" in report and "DONE" in report


def test_wait_follows_queued_running_and_epochs_to_done(served, home):
    adaptor, address = served
    job = adaptor.submit(adaptor_task())
    threading.Thread(target=_finish, args=(adaptor, job.job_id), kwargs={"delay": 1.0}, daemon=True).start()
    proc = nasoa_submit("watch", job.job_id, address=address)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "[RUNNING] running on worker@test" in proc.stderr  # the state lines of the live display
    assert "result: DONE accuracy 80.0% in 2.0s" in proc.stdout
    done = json.loads(nasoa_submit("watch", job.job_id, "--json", address=address).stdout)
    assert done["state"] == "DONE" and [p["epoch"] for p in done["result"]["curve"]] == [1, 2]


def adaptor_task():
    from nasoa_contracts import TaskSpec

    return TaskSpec("builtin:digits", 30.0, {"num_samples": 1347.0, "num_classes": 10.0})


def test_wait_without_any_worker_fails_after_the_grace_period(served, home):
    adaptor, address = served
    started = time.monotonic()
    proc = nasoa_submit("submit", "builtin:digits", "--budget", "30s", "--wait", "--worker-grace", "2",
                        address=address)
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert "no worker consumes the cpu queue" in proc.stderr.splitlines()[-1]
    assert "nasoa-worker --device cpu" in proc.stderr.splitlines()[-1]
    assert time.monotonic() - started < 60
    assert [j.state.value for j in adaptor.list_jobs()] == ["QUEUED"]  # kept for a worker to come


@pytest.mark.parametrize("command", [["status"], ["stats", "--json"], ["report"], ["plan", "builtin:digits", "-b", "1m"]])
def test_unreachable_service_is_one_line_naming_the_address_exit_4(home, command):
    proc = nasoa_submit(*command, "--timeout", "2", address="127.0.0.1:1")
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == ""
    assert "no adaptor service answers at 127.0.0.1:1" in lines[0] and "nasoa-adaptor" in lines[0]


def test_unreachable_zoo_is_one_line_exit_4(home):
    proc = nasoa_submit("models", "--zoo-address", "127.0.0.1:1", "--timeout", "2", address="127.0.0.1:1")
    assert proc.returncode == EXIT_UNREACHABLE
    assert proc.stderr.strip() == ("nasoa-submit: no zoo service answers at 127.0.0.1:1: start one with "
                                   "`nasoa-zoo serve`, or point --zoo-address / NASOA_ZOO_ADDRESS at a running one")


def test_help_lists_exit_codes_and_every_command(home):
    proc = nasoa_submit("--help", address="127.0.0.1:1")
    assert proc.returncode == EXIT_OK
    for command in ("submit", "plan", "watch", "status", "cancel", "models", "stats", "report"):
        assert command in proc.stdout
    assert "3 job failed" in " ".join(proc.stdout.split())


def test_doctests_of_the_user_modules():
    import doctest
    import importlib

    for name in ("nasoa._client", "nasoa._records", "nasoa_contracts._channels", "adaptor_service._schedulers"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, name
