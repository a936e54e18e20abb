"""``nasoa-submit`` run as a user runs it (a subprocess) against a real adaptor server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def nasoa_submit(*args: str, address: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NASOA_ADAPTOR_ADDRESS=address)
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit", "builtin:digits", "--budget", "-5s"], "budget must be positive, got '-5s'"),
        (["submit", "builtin:digits", "--budget", "soon"], "budget 'soon' is not a duration"),
        (["submit", "/no/such/dataset", "--budget", "30s"], "/no/such/dataset"),
        (["submit", "builtin:digits", "--budget", "30s", "--model", "resnet999"], "unknown model 'resnet999'"),
        (["submit", "builtin:nope", "--budget", "30s"], "builtin:nope"),
    ],
)
def test_user_errors_get_one_line_and_nothing_is_queued(served, args, message):
    adaptor, address = served
    proc = nasoa_submit(*args, address=address)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nasoa-submit: ") and message in lines[0]
    assert adaptor.list_jobs() == []


def test_plan_and_status(served):
    adaptor, address = served
    proc = nasoa_submit("plan", "builtin:digits", "--budget", "30s", address=address)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plan (nasoa): ")
    proc = nasoa_submit("submit", "builtin:digits", "--budget", "45s", address=address)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split()[1]
    proc = nasoa_submit("status", job_id, address=address)
    assert proc.returncode == 0 and "QUEUED" in proc.stdout
    assert [j.job_id for j in adaptor.list_jobs()] == [job_id]


def test_unreachable_service_is_one_line(tmp_path):
    proc = nasoa_submit("status", "--limit", "1", "--timeout", "2", address="127.0.0.1:1")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
