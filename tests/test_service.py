"""The adaptor's real gRPC server, started in-process on port 0, through the typed client."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adaptor_service import Adaptor
from adaptor_service.server import make_server
from clients import AdaptorClient
from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc
from nasoa_contracts import (
    AuthenticationError,
    CurvePoint,
    InvalidArgument,
    JobState,
    NotFound,
    Observation,
    ServiceUnavailable,
)


def _finish(client: AdaptorClient, job, accuracy: float = 88.0, seconds: float = 5.0) -> None:
    c = job.plan.candidate
    client.observe([Observation(job.job_id, job.task, c, accuracy, seconds, (CurvePoint(c.epochs, accuracy, seconds),))])


def test_submit_watch_observe_round_trip(served, digits_task):
    adaptor, address = served
    with AdaptorClient(address, timeout=10) as client:
        job = client.submit(digits_task)
        assert job.state == JobState.QUEUED
        events = []

        def watch() -> None:
            events.extend(client.watch_job(job.job_id, timeout=30))

        watcher = threading.Thread(target=watch)
        watcher.start()
        client.report_started(job.job_id, "w1")
        client.report_progress(job.job_id, CurvePoint(1, 60.0, 2.0))
        before = client.recommend(digits_task, top_k=2)
        _finish(client, job)
        watcher.join(30)
        assert [e.kind for e in events] == ["state", "state", "progress", "result"]
        assert events[-1].state == JobState.DONE
        done = client.get_job(job.job_id)
        assert done.result.accuracy == 88.0
        assert client.get_stats().observations == 1
        after = client.recommend(digits_task, top_k=2)
        assert after.prediction != before.prediction
        assert [j.job_id for j in client.list_jobs(state=JobState.DONE)] == [job.job_id]


def test_duplicate_observe_changes_nothing(served, digits_task):
    adaptor, address = served
    with AdaptorClient(address) as client:
        job = client.submit(digits_task)
        _finish(client, job)
        plan = client.recommend(digits_task)
        c = job.plan.candidate
        summary = client.observe([Observation(job.job_id, job.task, c, 10.0, 99.0)])
        assert (summary.learned, summary.duplicates) == (0, 1)
        assert client.recommend(digits_task) == plan
        assert client.get_stats().observations == 1


def _external(i: int, digits_task) -> pb.ObserveRequest:
    from nasoa_contracts import Candidate, convert

    c = Candidate("small", {"lr": 0.01, "optimizer": "sgd"}, epochs=1)
    return convert.observation_to_pb(Observation(f"ext-{i}", digits_task, c, 50.0 + i % 40, 2.0))


def test_a_result_on_a_long_lived_stream_is_recorded_while_the_stream_stays_open(served, digits_task):
    adaptor, address = served
    seen = threading.Event()

    def stream():
        yield _external(0, digits_task)
        # The stream stays open: the result must not wait for its end (nor for 63 more).
        for _ in range(200):
            if adaptor.stats().observations == 1:
                seen.set()
                break
            threading.Event().wait(0.025)

    with AdaptorClient(address, timeout=30) as client:
        summary = client.observe_requests(stream())
    assert seen.is_set() and (summary.received, summary.learned) == (1, 1)


def test_many_results_in_one_stream_are_recorded_in_order_and_once(served, digits_task):
    adaptor, address = served
    requests = [_external(i, digits_task) for i in range(150)] + [_external(7, digits_task)]
    with AdaptorClient(address, timeout=30) as client:
        summary = client.observe_requests(requests)
    assert (summary.received, summary.learned, summary.duplicates) == (151, 150, 1)
    assert [o.job_id for _, o in adaptor.store.observations_after(0)] == [f"ext-{i}" for i in range(150)]


def test_results_before_a_bad_message_are_kept(served, digits_task):
    adaptor, address = served
    requests = [_external(i, digits_task) for i in range(3)] + [pb.ObserveRequest(job_id="", result=pb.Result())]
    with AdaptorClient(address, timeout=30) as client, pytest.raises(InvalidArgument, match="message 4: job_id"):
        client.observe_requests(requests)
    assert adaptor.stats().observations == 3


def test_external_result_needs_task_and_candidate(served, digits_task):
    _, address = served
    with AdaptorClient(address) as client, pytest.raises(NotFound, match="must carry its task and candidate"):
        client.observe_requests([pb.ObserveRequest(job_id="ext-1", result=pb.Result(accuracy=50, seconds=3))])


@pytest.mark.parametrize(
    "task, message",
    [
        (pb.Task(dataset_uri="builtin:digits", budget_seconds=-1), "budget_seconds must be a positive number"),
        (pb.Task(dataset_uri="builtin:digits", budget_seconds=float("nan")), "finite"),
        (pb.Task(dataset_uri="", budget_seconds=10), "dataset_uri is required"),
        (pb.Task(dataset_uri="x" * 5000, budget_seconds=10), "at most 4096"),
        (pb.Task(dataset_uri="builtin:digits", budget_seconds=10, meta_features={"n": float("inf")}), "finite"),
        (pb.Task(dataset_uri="builtin:digits", budget_seconds=10, meta_features={"n": 1e300}), "at most 1e+12"),
    ],
)
def test_bad_input_is_invalid_argument_and_changes_nothing(served, task, message):
    adaptor, address = served
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AdaptorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Submit(pb.SubmitRequest(task=task), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
    assert adaptor.list_jobs() == [] and adaptor.stats().observations == 0


def test_unknown_job_and_model(served, digits_task):
    _, address = served
    with AdaptorClient(address) as client:
        with pytest.raises(NotFound, match="no job with id 'missing'"):
            client.get_job("missing")
        with pytest.raises(NotFound, match="unknown model 'nope'"):
            client.submit(digits_task, models=["nope"])
        with pytest.raises(InvalidArgument, match="job id must be"):
            client.get_job("../../etc")


def test_token_auth(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    server, port, _ = make_server(adaptor, "127.0.0.1:0", token="s3cret")
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        for token in ("", "wrong"):
            with AdaptorClient(address, token=token) as client, pytest.raises(AuthenticationError, match="token"):
                client.recommend(digits_task)
        with AdaptorClient(address, token="s3cret") as client:
            assert client.recommend(digits_task).candidate.model
        with grpc.insecure_channel(address) as channel:  # health stays public for load balancers
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0).wait()


def test_watch_stream_ends_with_deadline(served, digits_task):
    _, address = served
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AdaptorServiceStub(channel)
        job = stub.Submit(pb.SubmitRequest(task=pb.Task(dataset_uri="builtin:digits", budget_seconds=10)), timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=0.5))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_tls_when_certificates_are_given(tmp_path, tiny_space, digits_task):
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    server, port, _ = make_server(adaptor, "127.0.0.1:0", tls=(cert.read_bytes(), key.read_bytes()))
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        from nasoa_contracts import make_channel

        with AdaptorClient(address, channel=make_channel(address, root_certificates=cert.read_bytes())) as client:
            assert client.recommend(digits_task).candidate.model
        with AdaptorClient(address, timeout=3, retries=0) as plaintext, pytest.raises(ServiceUnavailable):
            plaintext.recommend(digits_task)
    finally:
        server.stop(0).wait()


def test_reflection_only_when_asked(tiny_space):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for enabled in (False, True):
        server, port, _ = make_server(Adaptor.in_memory(candidate_space=tiny_space), "127.0.0.1:0", reflection=enabled)
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                if enabled:
                    reply = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
                    names = {s.name for s in reply.list_services_response.service}
                    assert "nasoa.v1.AdaptorService" in names
                else:
                    with pytest.raises(grpc.RpcError) as err:
                        next(stub.ServerReflectionInfo(iter([request]), timeout=5))
                    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            server.stop(0).wait()
