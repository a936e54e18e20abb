"""A bare ``nasoa-adaptor`` as a user starts it: warm from the shipped table, JSON logs, reflection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import grpc
import pytest

from clients import AdaptorClient
from clients.local_cluster import free_port, wait_serving
from nasoa_contracts import TaskSpec
from nasoa_data import compute_meta_features
from zoo_store import DEFAULT_ZOO_DIR
from zoo_store._service import make_zoo_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def zoo_address():
    server, port = make_zoo_server(DEFAULT_ZOO_DIR, "127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0).wait()


def _run_adaptor(home, zoo_address, **env):
    address = f"127.0.0.1:{free_port()}"
    full_env = dict(os.environ, NASOA_HOME=str(home), NASOA_ZOO_ADDRESS=zoo_address, NASOA_DISPATCH="none",
                    NASOA_LOG_FORMAT="json", **env)
    full_env.pop("NASOA_WARM_START", None)
    full_env.update(env)
    log = open(home / "adaptor.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "adaptor_service.server", "--address", address],
                            env=full_env, stdout=subprocess.DEVNULL, stderr=log)
    wait_serving(address, 90, proc)
    return proc, address, log


def _stop(proc, log):
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log.close()


def _log_lines(home):
    return [json.loads(line) for line in (home / "adaptor.log").read_text().splitlines() if line.strip()]


def test_bare_adaptor_learns_the_shipped_table_and_says_so(tmp_path, zoo_address):
    (tmp_path / "warm").mkdir()
    proc, address, log = _run_adaptor(tmp_path / "warm", zoo_address, NASOA_REFLECTION="1")
    try:
        task = TaskSpec("builtin:digits", 30.0, compute_meta_features("builtin:digits").as_dict())
        with AdaptorClient(address, timeout=30) as client:
            assert client.get_stats().observations == 48
            plan = client.recommend(task)
            job = client.submit(task)
        # Informed from the first request: not the cold prior of 50% +/- 25 at one epoch.
        assert plan.prediction.accuracy_std < 20 and plan.prediction.accuracy > 60
        assert plan.prediction.seconds <= 30
        # Reflection is on (NASOA_REFLECTION=1): grpcurl can list the services.
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        with grpc.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in reply.list_services_response.service}
        assert "nasoa.v1.AdaptorService" in names
    finally:
        _stop(proc, log)
    lines = _log_lines(tmp_path / "warm")  # every line is JSON
    warm = [line for line in lines if line["message"].startswith("warm start from")]
    assert warm and warm[0]["runs"] == 48 and warm[0]["new"] == 48 and warm[0]["level"] == "INFO"
    assert warm[0]["warm_start"].endswith("experience-builtin.jsonl")
    submits = [line for line in lines if line.get("event") == "submit"]
    assert [s["job_id"] for s in submits] == [job.job_id] and submits[0]["budget_seconds"] == 30.0


def test_warm_start_none_starts_cold_and_says_so(tmp_path, zoo_address):
    (tmp_path / "cold").mkdir()
    proc, address, log = _run_adaptor(tmp_path / "cold", zoo_address, NASOA_WARM_START="none")
    try:
        with AdaptorClient(address, timeout=30) as client:
            assert client.get_stats().observations == 0
    finally:
        _stop(proc, log)
    assert any(line["message"].startswith("cold start") for line in _log_lines(tmp_path / "cold"))


def test_server_help_lists_options_and_settings():
    for module in ("adaptor_service.server", "worker.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0
        assert "--address" in out.stdout or "--device" in out.stdout
        assert "NASOA_" in out.stdout and "python -c" not in out.stdout
    out = subprocess.run([sys.executable, "-m", "zoo_store.cli", "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert "NASOA_ZOO_ADDRESS" in out.stdout and "NASOA_REFLECTION" in out.stdout


def test_zoo_serves_reflection_behind_the_same_setting(tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    port = free_port()
    env = dict(os.environ, NASOA_REFLECTION="1", NASOA_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "zoo_store.cli", "serve", "--address", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(f"127.0.0.1:{port}", 60, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert "nasoa.v1.ZooService" in {s.name for s in reply.list_services_response.service}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_training_window_setting_bounds_the_predictors_buffers(zoo_address, tmp_path, monkeypatch):
    from adaptor_service.server import adaptor_from_settings
    from nasoa_contracts import AdaptorSettings, CurvePoint, Observation, load_settings

    monkeypatch.setenv("NASOA_HOME", str(tmp_path))
    monkeypatch.setenv("NASOA_ZOO_ADDRESS", zoo_address)
    monkeypatch.setenv("NASOA_DISPATCH", "none")
    monkeypatch.setenv("NASOA_TRAINING_WINDOW", "40")
    adaptor = adaptor_from_settings(load_settings(AdaptorSettings))
    task = TaskSpec("builtin:digits", 30, {"num_samples": 1347.0, "num_classes": 10.0})
    candidate = adaptor.recommend(task).candidate
    for i in range(30):  # 30 results of 3 curve points: 90 samples, more than the window
        curve = tuple(CurvePoint(e, 50.0 + e, 2.0 * e) for e in (1, 2, 3))
        adaptor.observe(Observation(f"w{i}", task, candidate, 53.0, 6.0, curve))
    for predictor in (adaptor.state.accuracy, adaptor.state.time):
        assert predictor.window == 40
        assert predictor.buffered_samples() <= 40 + 40 // 16
