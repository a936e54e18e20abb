"""Faults and hostile input against the real broker and a real gRPC server: nothing stranded, clear errors.

Each test sets up the state a crash, an outage or a hostile caller leaves, then checks that
every job still reaches a worker or a final state with a reason, and that refused input
changes nothing.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import time

import grpc
import pytest
import river
from kombu import Connection

from adaptor_service import (
    Adaptor,
    CeleryDispatcher,
    DispatchError,
    Limits,
    Reconciler,
    SQLStore,
    make_server,
    warm_start_from_file,
)
from adaptor_service._jobs import NOT_QUEUED
from adaptor_service._snapshots import SNAPSHOT_FORMAT
from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc
from nasoa_contracts import Job, JobState, Observation, TaskSpec

pytestmark = pytest.mark.integration

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1//"


def _app(url: str):
    """The workers' Celery app on ``url``, configured from this test's environment."""
    from nasoa_contracts import WorkerSettings
    from worker.celery import make_app

    app = make_app(WorkerSettings(broker_url=url))
    app.conf.broker_connection_timeout = 2
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
    return app


def _dispatcher(tmp_path, app) -> CeleryDispatcher:
    """The adaptor's publisher on the broker of ``app``, declaring the queues as the workers do."""
    from nasoa_contracts import AdaptorSettings

    url = app.conf.broker_url
    return CeleryDispatcher(url, tmp_path, AdaptorSettings(broker_url=url).topology(), app=app)


def _rabbit_adaptor(tmp_path, tiny_space, app) -> Adaptor:
    return Adaptor(SQLStore(f"sqlite:///{tmp_path / 'jobs.db'}"), candidate_space=tiny_space,
                   dispatcher=_dispatcher(tmp_path, app))


def _ready(dispatcher: CeleryDispatcher) -> int:
    count = dispatcher.waiting("cpu")
    assert count is not None
    return count


def test_submit_with_the_broker_down_keeps_the_job_says_why_and_a_retry_by_id_queues_it(
    tmp_path, tiny_space, digits_task, rabbitmq_url, queue_prefix
):
    adaptor = _rabbit_adaptor(tmp_path, tiny_space, _app(DEAD_BROKER))
    with pytest.raises(DispatchError, match=r"could not queue job job-x: .*submit again with the same job id"):
        adaptor.submit(digits_task, job_id="job-x")
    job = adaptor.get_job("job-x")
    assert job.state == JobState.QUEUED and job.message.startswith(NOT_QUEUED), job
    assert "the broker refused it" in job.message
    # The same call again, still down: the same clear error, the job unchanged and not doubled.
    with pytest.raises(DispatchError):
        adaptor.submit(digits_task, job_id="job-x")
    assert adaptor.stats().jobs == 1
    adaptor.dispatcher = _dispatcher(tmp_path, _app(rabbitmq_url))  # the broker is back
    job = adaptor.submit(digits_task, job_id="job-x")
    assert (job.state, job.message) == (JobState.QUEUED, "queued")
    assert _ready(adaptor.dispatcher) == 1
    assert adaptor.submit(digits_task, job_id="job-x").message == "queued"  # idempotent: not queued twice
    assert _ready(adaptor.dispatcher) == 1


def test_the_reconciler_queues_again_jobs_whose_message_is_gone(tmp_path, tiny_space, digits_task, rabbitmq_url,
                                                                 queue_prefix):
    app = _app(rabbitmq_url)
    adaptor = _rabbit_adaptor(tmp_path, tiny_space, app)
    reconciler = Reconciler(adaptor, lease_seconds=60)
    waiting = adaptor.submit(digits_task, job_id="still-queued")
    lost = adaptor.submit(digits_task, job_id="message-lost")
    assert _ready(adaptor.dispatcher) == 2
    # Both messages vanish (a purge, a broker that lost them); one job's message is then sent again.
    with Connection(rabbitmq_url) as conn:
        conn.default_channel.queue_purge(f"{queue_prefix}.cpu")
    adaptor.dispatcher.dispatch(waiting)
    # The adaptor died between storing a job and publishing it: the job exists, no message does.
    now = time.time()
    never, _ = adaptor.store.create_job(Job("never-sent", digits_task, lost.plan, created_at=now, updated_at=now))
    assert reconciler.run_once().requeued == []  # within the lease: nothing is assumed lost
    later = time.time() + 61
    # A message waits in the queue, so no QUEUED job is taken for lost yet.
    assert reconciler.run_once(now=later).requeued == []
    with Connection(rabbitmq_url) as conn:
        conn.default_channel.queue_purge(f"{queue_prefix}.cpu")
    report = reconciler.run_once(now=later)
    assert sorted(report.requeued) == sorted(["still-queued", "message-lost", never.job_id])
    assert _ready(adaptor.dispatcher) == 3
    assert adaptor.get_job("message-lost").message == "queued again: its message was lost"
    assert reconciler.run_once().requeued == []  # the lease starts again from the new message


def test_a_job_delivered_too_often_is_dead_lettered_and_failed_with_the_reason(
    tmp_path, tiny_space, digits_task, rabbitmq_url, queue_prefix, monkeypatch
):
    monkeypatch.setenv("NASOA_MAX_DELIVERIES", "2")
    adaptor = _rabbit_adaptor(tmp_path, tiny_space, _app(rabbitmq_url))
    job = adaptor.submit(digits_task, job_id="poison")
    # Workers took it and died without an ack, again and again (a requeueing reject, to the broker).
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        deadline = time.monotonic() + 30
        while _dead(conn, queue_prefix) == 0:
            assert time.monotonic() < deadline, "the broker never dead-lettered the job"
            message = channel.basic_get(f"{queue_prefix}.cpu", no_ack=False)
            if message is None:
                time.sleep(0.05)
                continue
            channel.basic_reject(message.delivery_tag, requeue=True)
    report = Reconciler(adaptor).run_once()
    assert report.failed == [job.job_id]
    failed = adaptor.get_job(job.job_id)
    assert failed.state == JobState.FAILED
    assert "dead-lettered by the broker" in failed.message and "NASOA_MAX_DELIVERIES" in failed.message
    assert Reconciler(adaptor).run_once().failed == []  # acknowledged: handled once


def _dead(conn: Connection, prefix: str) -> int:
    _name, count, _consumers = conn.default_channel.queue_declare(f"{prefix}.dead", passive=True)
    return count


def test_job_queues_declare_a_delivery_limit_a_dead_letter_queue_a_consumer_timeout_and_confirms(
    rabbitmq_url, queue_prefix, monkeypatch
):
    monkeypatch.setenv("NASOA_MAX_BUDGET_SECONDS", "7200")
    app = _app(rabbitmq_url)
    assert app.conf.broker_transport_options["confirm_publish"] is True
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
    listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "arguments"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    line = next(row for row in listing.splitlines() if row.startswith(f"{queue_prefix}.cpu"))
    assert '"quorum"' in line and "x-delivery-limit" in line, line
    assert f'"{queue_prefix}.dead"' in line, line
    # Above the largest budget, the adaptor's retry window and 15 minutes.
    assert f"x-consumer-timeout\",{1000 * (7200 + 600 + 900)}" in line.replace(" ", ""), line


def test_a_result_sent_again_finishes_a_job_a_crash_left_open(tmp_path, tiny_space, digits_task):
    store = SQLStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    adaptor = Adaptor(store, candidate_space=tiny_space)
    job = adaptor.submit(digits_task, job_id="crashed")
    result = Observation(job.job_id, job.task, job.plan.candidate, 71.0, 9.0)
    store.record_observations([result])  # recorded, then the adaptor died before finishing the job
    assert adaptor.get_job(job.job_id).state == JobState.QUEUED
    assert adaptor.observe(result) is False  # the worker sends it again: a duplicate...
    done = adaptor.get_job(job.job_id)
    assert done.state == JobState.DONE and done.result.accuracy == 71.0  # ...that finishes the job
    assert adaptor.stats().observations == 1


@pytest.mark.parametrize("status, curve", [("incomplete", ()), ("deadline", ())])
def test_runs_that_measured_nothing_are_recorded_but_not_learned(tiny_space, digits_task, status, curve):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    job = adaptor.submit(digits_task, job_id="starved")
    before = adaptor.predict(digits_task, [job.plan.candidate])
    adaptor.observe(Observation(job.job_id, job.task, job.plan.candidate, 9.0, 30.0, curve, status=status,
                                message="no epoch completed within the budget of 30s"))
    assert adaptor.predict(digits_task, [job.plan.candidate]) == before
    assert adaptor.stats().observations == 1
    ended = adaptor.get_job(job.job_id)
    assert ended.state == JobState.FAILED
    assert ended.message.endswith("recorded, not learned: the run ended before its first epoch"), ended.message


# ---- hostile input through the real server --------------------------------------------------

def _task(**changes) -> pb.Task:
    fields = {"dataset_uri": "builtin:digits", "budget_seconds": 60.0, "device_class": "cpu",
              "meta_features": {"num_samples": 1300.0, "num_classes": 10.0}}
    fields.update(changes)
    return pb.Task(**fields)


def _candidate(**changes) -> pb.Candidate:
    fields = {"model": "small", "epochs": 1, "hparams": {"lr": pb.HParamValue(number=0.01)}}
    fields.update(changes)
    return pb.Candidate(**fields)


HOSTILE_TASKS = {
    "parent path": (_task(dataset_uri="../../etc"), "absolute path"),
    "dotdot inside": (_task(dataset_uri="/data/../etc"), "'..' is not allowed"),
    "other scheme": (_task(dataset_uri="s3://bucket/data"), "scheme 's3' is not served"),
    "unknown builtin": (_task(dataset_uri="builtin:nope"), "unknown built-in dataset 'nope'"),
    "unserved device": (_task(device_class="gpu"), "device_class must be one of cpu, cuda"),
    "long device": (_task(device_class="x" * 300), "device_class must be one of"),
    "tiny budget": (_task(budget_seconds=1e-300), "budget_seconds must be between 1 and 86400"),
    "huge budget": (_task(budget_seconds=1e12), "budget_seconds must be between"),
    "many meta keys": (_task(meta_features={f"k{i}": 1.0 for i in range(2000)}), "2000 keys; at most 64"),
    "odd meta key": (_task(meta_features={"a b\n": 1.0}), "key 'a b\\n' must be"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TASKS))
def test_hostile_tasks_are_refused_by_submit_and_recommend(served, name):
    adaptor, address = served
    task, expected = HOSTILE_TASKS[name]
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AdaptorServiceStub(channel)
        for call, request in ((stub.Submit, pb.SubmitRequest(task=task)), (stub.Recommend, pb.RecommendRequest(task=task))):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert expected in err.value.details()
            assert "\n" not in err.value.details().replace("\\n", "")
    assert adaptor.stats().jobs == 0


def test_dataset_folders_must_lie_in_the_data_root(tmp_path, tiny_space):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, limits=Limits(data_root=str(tmp_path / "data")))
    inside = TaskSpec(f"file://{tmp_path}/data/flowers", 60.0, {"num_classes": 5.0})
    assert adaptor.recommend(inside).candidate.model in ("small", "large")
    with pytest.raises(ValueError, match="outside the data root"):
        adaptor.recommend(TaskSpec("/etc", 60.0))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "escape").symlink_to("/etc")
    with pytest.raises(ValueError, match="outside the data root"):
        adaptor.recommend(TaskSpec(f"{tmp_path}/data/escape", 60.0))


@pytest.mark.parametrize(
    "candidate, code, expected",
    [
        (_candidate(model="not-in-zoo"), grpc.StatusCode.NOT_FOUND, "is not a model of this service's zoo"),
        (_candidate(epochs=2**31 - 1), grpc.StatusCode.INVALID_ARGUMENT, "epochs must be at most 10000"),
        (_candidate(hparams={"lr": pb.HParamValue(number=1e6)}), grpc.StatusCode.INVALID_ARGUMENT, "hparams['lr']"),
        (_candidate(hparams={"optimizer": pb.HParamValue(text="rmsprop")}), grpc.StatusCode.INVALID_ARGUMENT,
         "must be one of sgd, adam, adamw"),
        (_candidate(hparams={"batch_size": pb.HParamValue(number=0.5)}), grpc.StatusCode.INVALID_ARGUMENT,
         "must be an integer"),
    ],
)
def test_recommend_refuses_unusable_candidates(served, candidate, code, expected):
    _adaptor, address = served
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.AdaptorServiceStub(channel).Recommend(pb.RecommendRequest(task=_task(), candidates=[candidate]),
                                                      timeout=10)
    assert err.value.code() == code and expected in err.value.details(), err.value.details()


def test_too_many_candidates_or_curve_points_are_refused_before_any_work(served):
    adaptor, address = served
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.AdaptorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(pb.RecommendRequest(task=_task(), candidates=[_candidate()] * 6000), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "6000 candidates given; at most 5000" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # counted before a single one is converted
            stub.Recommend(pb.RecommendRequest(task=_task(), candidates=[_candidate()] * 100_000), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        big = [_candidate(model="m" * 120)] * 40_000  # 5 MB: past NASOA_MAX_MESSAGE_BYTES, refused unread
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(pb.RecommendRequest(task=_task(), candidates=big), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        curve = [pb.CurvePoint(epoch=e, accuracy=50.0, seconds=float(e)) for e in range(1, 10_002)]
        request = pb.ObserveRequest(job_id="ext-1", task=_task(), candidate=_candidate(),
                                    result=pb.Result(accuracy=50.0, seconds=10.0, status="ok", curve=curve))
        with pytest.raises(grpc.RpcError) as err:
            stub.Observe(iter([request]), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "observe message 1: result.curve has 10001 points; at most 10000" in err.value.details()
    assert adaptor.stats().observations == 0


def test_watch_streams_are_bounded_and_never_starve_the_other_calls(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, limits=Limits(max_watch_streams=4, rpc_threads=4))
    job = adaptor.submit(digits_task, job_id="long")
    server, port, _ = make_server(adaptor, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AdaptorServiceStub(channel)
            streams = [stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=30) for _ in range(4)]
            for stream in streams:
                next(stream)  # open and holding its slot
            with pytest.raises(grpc.RpcError) as err:
                next(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=30))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "4 WatchJob streams are open (NASOA_MAX_WATCH_STREAMS)" in err.value.details()
            started = time.monotonic()
            for _ in range(8):
                stub.GetStats(pb.GetStatsRequest(), timeout=2)
            assert time.monotonic() - started < 2
            for stream in streams:
                stream.cancel()
            time.sleep(0.6)  # the server notices the cancelled streams within one poll
            next(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=5))  # a slot is free again
    finally:
        server.stop(0).wait()


# ---- start-up inputs --------------------------------------------------------------------------

def test_a_wrongly_typed_snapshot_falls_back_to_the_log_with_a_warning(tmp_path, tiny_space, digits_task, caplog):
    store_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = Adaptor(SQLStore(store_url), candidate_space=tiny_space)
    job = first.submit(digits_task, job_id="j1")
    first.observe(Observation(job.job_id, job.task, job.plan.candidate, 66.0, 8.0))
    expected = first.predict(digits_task, [job.plan.candidate])
    snapshot = tmp_path / "adaptor.snapshot"
    snapshot.write_bytes(pickle.dumps({"format": SNAPSHOT_FORMAT, "river": river.__version__, "state": ["not", "a", "state"]}))
    with caplog.at_level(logging.WARNING, logger="nasoa.adaptor"):
        again = Adaptor(SQLStore(store_url), candidate_space=tiny_space, snapshot_path=snapshot)
    assert "holds no learned state (a list): relearning from the log" in caplog.text
    assert again.predict(digits_task, [job.plan.candidate]) == expected


def test_warm_start_tables_that_are_empty_or_name_unknown_models_are_refused(tmp_path, tiny_space):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    header = "task_id,run_id,model,epoch,accuracy,seconds,meta.num_samples,meta.num_classes,hp.lr\n"
    empty = tmp_path / "empty.csv"
    empty.write_text(header)
    with pytest.raises(ValueError, match="has no runs"):
        warm_start_from_file(adaptor, str(empty))
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(header + "t,r1,small,1,50,3,500,10,0.01\nt,r2,resnet-999,1,60,9,500,10,0.01\n")
    with pytest.raises(ValueError, match="names models the zoo does not have: resnet-999"):
        warm_start_from_file(adaptor, str(unknown))
    assert adaptor.stats().observations == 0


def test_zoo_reads_need_the_token_when_one_is_set(tmp_path):
    from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc
    from nasoa_contracts import make_channel
    from zoo_store import DEFAULT_ZOO_DIR
    from zoo_store._service import make_zoo_server

    server, port = make_zoo_server(DEFAULT_ZOO_DIR, "127.0.0.1:0", read_token="s3cret")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        for token in ("", "wrong"):
            with make_channel(address, token=token) as channel:
                stub = zoo_pb2_grpc.ZooServiceStub(channel)
                with pytest.raises(grpc.RpcError) as err:
                    stub.ListModels(zoo_pb2.ListModelsRequest(), timeout=10)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as err:
                    next(stub.FetchCheckpoint(zoo_pb2.FetchCheckpointRequest(name="etnas-z1"), timeout=10))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with make_channel(address, token="s3cret") as channel:
            stub = zoo_pb2_grpc.ZooServiceStub(channel)
            assert stub.ListModels(zoo_pb2.ListModelsRequest(), timeout=10).models
            assert next(stub.FetchCheckpoint(zoo_pb2.FetchCheckpointRequest(name="etnas-z1"), timeout=10)).data
    finally:
        server.stop(0).wait()


def test_stats_answer_when_no_result_had_a_measured_time(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    candidate = tiny_space.candidates(digits_task)[0]
    for i in range(6):  # learned, but none with seconds > 0: the margin's quantile is empty
        adaptor.observe(Observation(f"untimed-{i}", digits_task, candidate, 50.0, 0.0))
    assert adaptor.stats().time_margin == adaptor.planner.default_margin
