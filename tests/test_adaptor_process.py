"""``nasoa-adaptor`` as a real process: crash recovery and graceful shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adaptor_service import Adaptor
from clients import AdaptorClient
from clients.local_cluster import free_port, wait_serving
from nasoa_contracts import Candidate, CurvePoint, Observation, TaskSpec

pytestmark = pytest.mark.integration


def _start_adaptor(home, zoo_address: str, address: str, snapshot_every: int = 10) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NASOA_HOME=str(home), NASOA_ZOO_ADDRESS=zoo_address, NASOA_DISPATCH="none", NASOA_WARM_START="none",
               NASOA_SNAPSHOT_EVERY=str(snapshot_every), NASOA_GRACE_SECONDS="5",
               NASOA_POLICY="one-shot")  # a plan of one given candidate is its prediction: comparable
    with open(home / "adaptor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "adaptor_service.server", "--address", address],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_serving(address, 60, proc)
    return proc


def _stream(n: int) -> list[Observation]:
    out = []
    for i in range(n):
        task = TaskSpec("builtin:digits", 30.0, {"num_samples": 500.0 + 40 * i, "num_classes": 10.0})
        cand = Candidate(f"etnas-z{1 + i % 3}", {"lr": [0.01, 0.1][i % 2], "batch_size": 64, "optimizer": "sgd"},
                         epochs=1 + i % 4, prior_seconds=2.0 + i % 5)
        acc = 40.0 + (i * 11) % 55
        out.append(Observation(f"ext-{i}", task, cand, acc, 3.0 + i % 7,
                               tuple(CurvePoint(e, acc * e / cand.epochs, 1.0 * e) for e in range(1, cand.epochs + 1))))
    return out


PROBE_TASK = TaskSpec("builtin:digits", 30.0, {"num_samples": 900.0, "num_classes": 10.0})
PROBES = [Candidate(f"etnas-z{k}", {"lr": 0.01, "batch_size": 64, "optimizer": "sgd"}, epochs=e, prior_seconds=3.0)
          for k in (1, 2, 3) for e in (1, 3)]


def _predictions(client: AdaptorClient) -> list[tuple[float, float]]:
    return [(p.prediction.accuracy, p.prediction.seconds)
            for p in (client.recommend(PROBE_TASK, candidates=[c]) for c in PROBES)]


def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path, zoo_address):
    observations = _stream(60)
    reference = Adaptor.in_memory()
    for observation in observations:  # what the service sees: a stream, no warm start's final refit
        reference.observe(observation)
    expected = [(p.accuracy, p.seconds) for p in reference.predict(PROBE_TASK, PROBES)]

    address = f"127.0.0.1:{free_port()}"
    proc = _start_adaptor(tmp_path, zoo_address, address)
    with AdaptorClient(address, timeout=10) as client:
        client.observe(observations[:25])  # snapshots at 10 and 20; 21-25 only in the log
        proc.kill()  # SIGKILL: no chance to flush anything
        proc.wait(10)
        proc = _start_adaptor(tmp_path, zoo_address, address)
        assert client.get_stats().observations == 25
        # The sender did not know how far it got: it resends everything; duplicates are ignored.
        summary = client.observe(observations)
        assert (summary.learned, summary.duplicates) == (35, 25)
        assert client.get_stats().observations == 60
        # The server learns in the background, in log order: it reaches the very same state.
        deadline = time.monotonic() + 60
        while _predictions(client) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _predictions(client) == expected
    proc.terminate()
    proc.wait(30)


def test_sigterm_drains_flushes_snapshot_and_reports_not_serving(tmp_path, zoo_address):
    address = f"127.0.0.1:{free_port()}"
    proc = _start_adaptor(tmp_path, zoo_address, address, snapshot_every=1000)
    with AdaptorClient(address, timeout=10) as client, grpc.insecure_channel(address) as channel:
        client.observe(_stream(7))
        snapshot = tmp_path / "adaptor.snapshot"
        assert not snapshot.exists()  # 7 < snapshot_every: only the log has them
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 5 + 10
        assert snapshot.exists()
    restarted = _start_adaptor(tmp_path, zoo_address, address)
    with AdaptorClient(address, timeout=10) as client:
        assert client.get_stats().observations == 7
    restarted.terminate()
    restarted.wait(30)
