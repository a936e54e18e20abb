"""Crashes, outages and hostile callers against real processes: nothing stranded, lost or doubled.

The adaptor, the zoo and the workers run as the commands a user starts; RabbitMQ is the
shared test broker, so a broker fault is a dropped connection of this test's worker only
(restarting the broker would break the other suites that share it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import psutil
import pytest

from adaptor_service._stores import SQLStore
from clients import AdaptorClient
from clients.local_cluster import LocalCluster, free_port, wait_serving
from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc
from nasoa_contracts import JobState, Observation, TaskSpec
from nasoa_data import compute_meta_features

pytestmark = pytest.mark.integration


def _start_adaptor(home, zoo_address: str, address: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NASOA_HOME=str(home), NASOA_ZOO_ADDRESS=zoo_address, NASOA_DISPATCH="none",
               NASOA_WARM_START="none")
    with open(home / "adaptor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "adaptor_service.server", "--address", address],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_serving(address, 60, proc)
    return proc


DIGITS = TaskSpec("builtin:digits", 30.0, {"num_samples": 1347.0, "num_classes": 10.0, "image_size": 8.0})


def test_adaptor_killed_between_recording_a_result_and_finishing_its_job(tmp_path, zoo_address):
    address = f"127.0.0.1:{free_port()}"
    proc = _start_adaptor(tmp_path, zoo_address, address)
    try:
        with AdaptorClient(address, timeout=10) as client:
            job = client.submit(DIGITS, job_id="between")
            proc.kill()  # -9
            proc.wait(10)
            # What the adaptor had done when it died: the result recorded, the job not finished.
            store = SQLStore(f"sqlite:///{tmp_path / 'adaptor.db'}")
            store.record_observations([Observation(job.job_id, job.task, job.plan.candidate, 77.0, 12.0)])
            store.close()
            proc = _start_adaptor(tmp_path, zoo_address, address)
            assert client.get_job(job.job_id).state == JobState.QUEUED
            # The worker never heard back, so it sends the result again.
            summary = client.observe([Observation(job.job_id, job.task, job.plan.candidate, 77.0, 12.0)])
            assert (summary.learned, summary.duplicates) == (0, 1)
            done = client.get_job(job.job_id)
            assert done.state == JobState.DONE and done.result.accuracy == 77.0
            assert client.get_stats().observations == 1
    finally:
        proc.kill()
        proc.wait(10)


def _rss_mb(proc: subprocess.Popen[bytes]) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def test_adaptor_memory_stays_bounded_under_hostile_requests(tmp_path, zoo_address):
    address = f"127.0.0.1:{free_port()}"
    proc = _start_adaptor(tmp_path, zoo_address, address)
    options = [("grpc.max_send_message_length", 64 << 20)]
    try:
        with grpc.insecure_channel(address, options=options) as channel:
            stub = pb_grpc.AdaptorServiceStub(channel)
            meta = {"num_samples": 1347.0, "num_classes": 10.0}

            def recommend(task: pb.Task, candidates=()) -> grpc.StatusCode:
                try:
                    stub.Recommend(pb.RecommendRequest(task=task, candidates=list(candidates)), timeout=60)
                    return grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    return exc.code()

            assert recommend(pb.Task(dataset_uri="builtin:digits", budget_seconds=30, meta_features=meta)) == grpc.StatusCode.OK
            before = _rss_mb(proc)
            codes = {
                "2000 meta keys": recommend(pb.Task(dataset_uri="builtin:digits", budget_seconds=30,
                                                    meta_features={f"k{i}": 1.0 for i in range(2000)})),
                "400k meta keys (12 MB)": recommend(pb.Task(dataset_uri="builtin:digits", budget_seconds=30,
                                                            meta_features={f"key{i}": 1.0 for i in range(400_000)})),
                "100k candidates": recommend(pb.Task(dataset_uri="builtin:digits", budget_seconds=30, meta_features=meta),
                                             [pb.Candidate(model="etnas-z1", epochs=2**31 - 1)] * 100_000),
            }
            curve = [pb.CurvePoint(epoch=e, accuracy=50.0, seconds=float(e)) for e in range(1, 100_001)]
            refused = 0
            for i in range(20):  # 20 results of 100k curve points
                request = pb.ObserveRequest(
                    job_id=f"huge-{i}", task=pb.Task(dataset_uri="builtin:digits", budget_seconds=30, meta_features=meta),
                    candidate=pb.Candidate(model="etnas-z1", epochs=3), result=pb.Result(accuracy=50, seconds=9, curve=curve))
                try:
                    stub.Observe(iter([request]), timeout=60)
                except grpc.RpcError as exc:
                    refused += exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            # The largest well-formed tasks, all different: the feature cache fills to its bound.
            for i in range(40):
                wide = {f"m{k}": float(i * 64 + k) for k in range(64)}
                assert recommend(pb.Task(dataset_uri="builtin:digits", budget_seconds=30, meta_features=wide)) == grpc.StatusCode.OK
            after = _rss_mb(proc)
            print(f"adaptor RSS: {before:.0f} MB before, {after:.0f} MB after the hostile requests")
            assert codes == {"2000 meta keys": grpc.StatusCode.INVALID_ARGUMENT,
                             "400k meta keys (12 MB)": grpc.StatusCode.RESOURCE_EXHAUSTED,
                             "100k candidates": grpc.StatusCode.INVALID_ARGUMENT}
            assert refused == 20
            assert after < 1024, after
            assert after - before < 400, (before, after)
            stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
            assert stats.observations == 0
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_worker_waits_out_an_adaptor_outage_and_the_job_is_not_stranded(tmp_path, rabbitmq_url, queue_prefix):
    task = TaskSpec("builtin:digits", 20.0, compute_meta_features("builtin:digits").as_dict())
    # A short retry window, so the outage outlasts it: the task is rejected back to the queue.
    env = {"NASOA_ADAPTOR_RETRY_SECONDS": "3", "NASOA_MAX_DELIVERIES": "20"}
    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url, workers=0, env=env, policy="one-shot") as cluster:
        client = cluster.client(timeout=30)
        job = client.submit(task)
        cluster.stop_process("adaptor", signal.SIGKILL)
        cluster.start_worker(0)  # takes the job while the adaptor is down
        log = cluster.log_dir / "worker0.log"
        deadline = time.monotonic() + 120
        while "job back to the queue" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(4)  # and down a while longer
        cluster.start_adaptor()
        events = list(client.watch_job(job.job_id, timeout=180))
        done = client.get_job(job.job_id)
        assert done.state == JobState.DONE, (done.message, log.read_text()[-3000:])
        assert events[-1].kind == "result"
        assert client.get_stats().observations == 1


def _close_amqp_connections_of(pid: int) -> int:
    """Close (broker side) every AMQP connection of process ``pid`` and its children."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    ports = {c.laddr.port for p in processes for c in p.net_connections(kind="tcp") if c.raddr and c.raddr.port == 5672}
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "peer_port"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    closed = 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in ports:
            subprocess.run(["rabbitmqctl", "-q", "close_connection", parts[0], "fault test"], timeout=60, check=True)
            closed += 1
    return closed


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=True)


def _restart_broker() -> None:
    """A real restart of the local broker: stop the app, wait, start it again."""
    try:
        _rabbitmqctl("stop_app")
        time.sleep(3)
    finally:
        _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup")


@pytest.mark.parametrize("fault", ["connection closed", "broker restart"])
def test_a_broker_fault_mid_job_finishes_the_job_once(fault, tmp_path, rabbitmq_url, queue_prefix):
    """The worker's broker connection is closed, or the broker restarts (rabbitmqctl stop_app /
    start_app), during a job: it ends once, with one observation, and the next job runs."""
    dataset = "builtin:fashion-mnist?train=2000&test=500"
    task = TaskSpec(dataset, 30.0, compute_meta_features(dataset).as_dict())
    with LocalCluster(tmp_path / "home", broker_url=rabbitmq_url, policy="fixed",
                      env={"NASOA_FIXED_MODEL": "etnas-z7"}) as cluster:
        client = cluster.client(timeout=30)
        job = client.submit(task, models=["etnas-z7"])
        for event in client.watch_job(job.job_id, timeout=120):
            if event.kind == "progress":
                break  # mid-job
        if fault == "connection closed":
            assert _close_amqp_connections_of(cluster.processes["worker0"].pid) >= 1
        else:
            _restart_broker()
        rest = list(client.watch_job(job.job_id, after_seq=event.seq, timeout=240))
        done = client.get_job(job.job_id)
        assert done.state == JobState.DONE, done.message
        assert [e.kind for e in rest].count("result") == 1
        time.sleep(5)  # a redelivered message reaches the worker, which finds the job settled
        assert client.get_stats().observations == 1
        assert client.get_job(job.job_id).result == done.result
        assert [e for e in client.watch_job(job.job_id, timeout=10) if e.kind == "result"] == [rest[-1]]
        # The broker is usable again: the next job runs.
        second = client.submit(task, models=["etnas-z7"])
        list(client.watch_job(second.job_id, timeout=240))
        assert client.get_job(second.job_id).state == JobState.DONE
        assert client.get_stats().observations == 2
