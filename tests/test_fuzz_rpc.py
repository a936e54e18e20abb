"""Hypothesis fuzzing of every adaptor RPC against a real server: clear errors, no state change."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptor_service import Adaptor
from adaptor_service.server import make_server
from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308, -0.0]))
texts = st.one_of(st.text(max_size=50), st.text(min_size=4000, max_size=6000), st.sampled_from(["", "../../etc/passwd", "builtin:digits"]))
tasks = st.builds(
    pb.Task,
    dataset_uri=texts,
    budget_seconds=floats,
    meta_features=st.dictionaries(st.text(max_size=20), floats, max_size=4),
    task_id=st.text(max_size=30),
    device_class=st.sampled_from(["", "cpu", "cuda", "x" * 300]),
)
hparams = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(st.builds(pb.HParamValue, number=floats), st.builds(pb.HParamValue, text=st.text(max_size=10)), st.just(pb.HParamValue())),
    max_size=3,
)
candidates = st.builds(pb.Candidate, model=texts, hparams=hparams, epochs=st.integers(-5, 2**31 - 1))
results = st.builds(pb.Result, accuracy=floats, seconds=floats, status=st.sampled_from(["ok", "failed", "", "weird"]),
                    curve=st.lists(st.builds(pb.CurvePoint, epoch=st.integers(-3, 100), accuracy=floats, seconds=floats), max_size=3))
job_ids = st.one_of(st.text(max_size=200), st.just(""), st.uuids().map(str))


@pytest.fixture(scope="module")
def server(request):
    space = request.getfixturevalue("tiny_space_module")
    adaptor = Adaptor.in_memory(candidate_space=space)
    srv, port, _ = make_server(adaptor, "127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield adaptor, pb_grpc.AdaptorServiceStub(channel)
    channel.close()
    srv.stop(0).wait()


@pytest.fixture(scope="module")
def tiny_space_module():
    from adaptor_service import CandidateSpace, ModelInfo, RegimeGrid

    return CandidateSpace([ModelInfo("m", {"cpu": 5.0}, num_stages=2)], RegimeGrid(epochs=(1, 2), learning_rates=(0.01,), batch_sizes=(64,), frozen_stages=(0,), optimizers=("sgd",)))


def _state(adaptor: Adaptor) -> tuple[int, int]:
    return len(adaptor.list_jobs(limit=10_000)), adaptor.stats().observations


def _call(fn, *args):
    try:
        return fn(*args, timeout=10), None
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())
        assert exc.details(), "an error must say what is wrong"
        return None, exc


fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(task=tasks, models=st.lists(st.text(max_size=20), max_size=2), top_k=st.integers(-10, 5000))
def test_recommend_and_submit(server, task, models, top_k):
    adaptor, stub = server
    before = _state(adaptor)
    _, err = _call(stub.Recommend, pb.RecommendRequest(task=task, models=models, top_k=top_k))
    assert _state(adaptor) == before
    reply, err = _call(stub.Submit, pb.SubmitRequest(task=task, models=models))
    if err is not None:
        assert _state(adaptor) == before


@fuzz
@given(job_id=job_ids, after=st.integers(-(2**62), 2**62))
def test_job_reads_and_cancel(server, job_id, after):
    adaptor, stub = server
    before = _state(adaptor)
    _call(stub.GetJob, pb.GetJobRequest(job_id=job_id))
    _call(stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
    try:
        list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after), timeout=2))
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED | {grpc.StatusCode.DEADLINE_EXCEEDED}, exc.details()
    _call(stub.ListJobs, pb.ListJobsRequest(limit=after % 20000 - 5000, state=after % 7))
    assert _state(adaptor) == before


@fuzz
@given(job_id=job_ids, task=tasks, candidate=candidates, result=results)
def test_observe(server, job_id, task, candidate, result):
    adaptor, stub = server
    before = _state(adaptor)
    request = pb.ObserveRequest(job_id=job_id, task=task, candidate=candidate, result=result)
    reply, err = _call(stub.Observe, iter([request]))
    if err is not None:
        assert _state(adaptor) == before
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)  # the server is still up
    assert stats.observations >= before[1]
