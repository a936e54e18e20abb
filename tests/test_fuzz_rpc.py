"""Hypothesis fuzzing of every adaptor RPC against a real server: the state after every call.

Every call is either accepted, and then the state changed exactly as the call says (one
more job, one more observation, nothing else), or refused with a clear code and message,
and then nothing changed at all.
"""

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

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308, -0.0, 30.0, 5e-324]))
texts = st.one_of(
    st.text(max_size=50),
    st.text(min_size=4000, max_size=6000),
    st.sampled_from(["", "../../etc/passwd", "builtin:digits", "builtin:nope", "s3://b/k", "/data/x", "file:///tmp/x"]),
)
meta_keys = st.one_of(st.text(max_size=20), st.sampled_from(["num_samples", "num_classes", "a b", "k" * 80]))
# Half of the inputs are well formed, so that accepted calls are checked as often as refused ones.
good_keys = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
good_tasks = st.builds(
    pb.Task,
    dataset_uri=st.sampled_from(["builtin:digits", "builtin:shapes?seed=3", "/data/flowers", "file:///data/cars"]),
    budget_seconds=st.floats(1.0, 86_400.0),
    meta_features=st.dictionaries(good_keys, st.floats(-1e6, 1e6), max_size=70),
    task_id=st.from_regex(r"[a-z0-9-]{0,20}", fullmatch=True),
    device_class=st.sampled_from(["", "cpu", "cuda"]),
)
bad_tasks = st.builds(
    pb.Task,
    dataset_uri=texts,
    budget_seconds=floats,
    # Up to 300 keys: past NASOA_MAX_META_FEATURES (64) as often as under it.
    meta_features=st.one_of(
        st.dictionaries(meta_keys, floats, max_size=4),
        st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.floats(-1e6, 1e6), min_size=50, max_size=300),
    ),
    task_id=st.text(max_size=30),
    device_class=st.sampled_from(["", "cpu", "cuda", "gpu", "x" * 300]),
)
tasks = st.one_of(good_tasks, bad_tasks)
hparam_values = st.one_of(
    st.builds(pb.HParamValue, number=floats),
    st.builds(pb.HParamValue, text=st.sampled_from(["sgd", "adam", "rmsprop", ""])),
    st.just(pb.HParamValue()),
)
hparams = st.dictionaries(
    st.one_of(st.sampled_from(["lr", "batch_size", "frozen_stages", "optimizer", "weight_decay"]), st.text(min_size=1, max_size=10)),
    hparam_values,
    max_size=4,
)
good_candidates = st.builds(
    pb.Candidate,
    model=st.just("m"),
    hparams=st.fixed_dictionaries({}, optional={
        "lr": st.builds(pb.HParamValue, number=st.floats(1e-5, 1.0)),
        "batch_size": st.builds(pb.HParamValue, number=st.integers(1, 512).map(float)),
        "optimizer": st.builds(pb.HParamValue, text=st.sampled_from(["sgd", "adam", "adamw"])),
    }),
    epochs=st.integers(1, 50),
)
bad_candidates = st.builds(
    pb.Candidate,
    model=st.one_of(st.sampled_from(["m", "unknown-model", ""]), texts),
    hparams=hparams,
    epochs=st.one_of(st.integers(-5, 3), st.integers(-5, 2**31 - 1)),
)
candidates = st.one_of(good_candidates, bad_candidates)
good_results = st.builds(
    pb.Result,
    accuracy=st.floats(0.0, 100.0),
    seconds=st.floats(0.0, 1e4),
    status=st.sampled_from(["ok", "", "deadline", "failed", "incomplete"]),
    curve=st.lists(st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 1e4)), max_size=5).map(
        lambda points: [pb.CurvePoint(epoch=e, accuracy=a, seconds=t) for e, (a, t) in enumerate(points, start=1)]
    ),
)
bad_results = st.builds(pb.Result, accuracy=floats, seconds=floats, status=st.sampled_from(["ok", "failed", "", "weird", "incomplete"]),
                    curve=st.lists(st.builds(pb.CurvePoint, epoch=st.integers(-3, 100), accuracy=floats, seconds=floats), max_size=3))
results = st.one_of(good_results, bad_results)
job_ids = st.one_of(st.text(max_size=200), st.just(""), st.uuids().map(str), st.uuids().map(str))


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


def _state(adaptor: Adaptor) -> tuple[int, int, int]:
    stats = adaptor.stats()
    return stats.jobs, stats.observations, adaptor.state.n_learned


def _call(fn, *args):
    try:
        return fn(*args, timeout=10), None
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())
        assert exc.details(), "an error must say what is wrong"
        assert "\n" not in exc.details(), "one line"
        return None, exc


fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(task=tasks, models=st.lists(st.text(max_size=20), max_size=2), top_k=st.integers(-10, 5000),
       given_candidates=st.lists(candidates, max_size=4))
def test_recommend_and_submit(server, task, models, top_k, given_candidates):
    adaptor, stub = server
    before = _state(adaptor)
    plan, err = _call(stub.Recommend, pb.RecommendRequest(task=task, candidates=given_candidates, models=models, top_k=top_k))
    assert _state(adaptor) == before  # a plan never changes anything
    if err is None:
        offered = {c.model for c in given_candidates} or {"m"}
        assert plan.candidate.model in offered  # never a model the caller did not offer, or unknown
        assert plan.candidate.epochs >= 1
    job, err = _call(stub.Submit, pb.SubmitRequest(task=task, models=models))
    if err is not None:
        assert _state(adaptor) == before
        return
    assert _state(adaptor) == (before[0] + 1, before[1], before[2])  # exactly one job, nothing learned
    stored = adaptor.get_job(job.job_id)
    assert stored.state.value == "QUEUED" and stored.plan.candidate.model == "m"
    assert stored.task.dataset_uri == task.dataset_uri and stored.task.budget_seconds == task.budget_seconds


@fuzz
@given(job_id=job_ids, after=st.integers(-(2**62), 2**62))
def test_job_reads_and_cancel(server, job_id, after):
    adaptor, stub = server
    before = _state(adaptor)
    known = adaptor.store.list_jobs(limit=1)
    _call(stub.GetJob, pb.GetJobRequest(job_id=job_id))
    _call(stub.CancelJob, pb.CancelJobRequest(job_id=job_id))  # random ids: never one that exists
    try:
        list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after), timeout=2))
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED | {grpc.StatusCode.DEADLINE_EXCEEDED}, exc.details()
    _call(stub.ListJobs, pb.ListJobsRequest(limit=after % 20000 - 5000, state=after % 7))
    assert _state(adaptor) == before
    assert adaptor.store.list_jobs(limit=1) == known


@fuzz
@given(job_id=job_ids, task=tasks, candidate=candidates, result=results)
def test_observe(server, job_id, task, candidate, result):
    adaptor, stub = server
    before = _state(adaptor)
    adaptor.flush()
    request = pb.ObserveRequest(job_id=job_id, task=task, candidate=candidate, result=result)
    reply, err = _call(stub.Observe, iter([request]))
    adaptor.flush()
    if err is not None:
        assert _state(adaptor) == before
        return
    assert reply.received == 1 and reply.learned + reply.duplicates == 1
    jobs, observations, learned = _state(adaptor)
    assert jobs == before[0]
    assert observations == before[1] + reply.learned
    measured = result.status in ("ok", "") or (result.status == "deadline" and len(result.curve) > 0)
    assert learned == before[2] + (reply.learned if measured else 0)  # unmeasured runs are kept, not learned
