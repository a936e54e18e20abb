"""One suite over every store mode (memory, SQLite, PostgreSQL), Optuna style."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from adaptor_service import open_store
from nasoa_contracts import (
    Candidate,
    CurvePoint,
    Job,
    JobEvent,
    JobState,
    NotFound,
    Observation,
    Plan,
    Prediction,
    TaskSpec,
)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "memory":
        s = open_store("memory://")
    elif request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        s = open_store(request.getfixturevalue("postgres_store_url"))
    yield s
    s.close()


def _job(job_id: str, created: float = 0.0) -> Job:
    task = TaskSpec("builtin:digits", 30.0, {"num_samples": 100.0})
    cand = Candidate("m", {"lr": 0.1, "optimizer": "sgd"}, 2, {"log_params": 3.0}, 4.0)
    plan = Plan(cand, Prediction(70, 5, 10, 2), "nasoa", 1.2)
    return Job(job_id, task, plan, created_at=created or time.time(), updated_at=created or time.time())


def _obs(job_id: str) -> Observation:
    job = _job(job_id)
    return Observation(job_id, job.task, job.plan.candidate, 81.5, 9.0, (CurvePoint(1, 70.0, 4.0), CurvePoint(2, 81.5, 9.0)))


def test_job_round_trip_and_idempotent_create(store):
    job = _job("j1")
    stored, created = store.create_job(job)
    assert created and stored == job
    again, created = store.create_job(_job("j1"))
    assert not created and again.plan == job.plan
    assert store.get_job("j1") == job
    with pytest.raises(NotFound, match="no job with id 'nope'"):
        store.get_job("nope")


def test_update_and_list_by_state(store):
    for i in range(3):
        store.create_job(_job(f"j{i}", created=1000.0 + i))
    job = store.get_job("j1")
    job.state = JobState.DONE
    job.result = _obs("j1")
    store.update_job(job)
    assert store.get_job("j1").result == _obs("j1")
    assert [j.job_id for j in store.list_jobs()] == ["j2", "j1", "j0"]
    assert [j.job_id for j in store.list_jobs(state=JobState.DONE)] == ["j1"]
    assert store.count_jobs_by_state() == {"QUEUED": 2, "DONE": 1}


def test_events_are_numbered_per_job(store):
    store.create_job(_job("j1"))
    for i in range(3):
        store.append_event(JobEvent("j1", 0, "progress", JobState.RUNNING, epoch=i + 1))
    events = store.events_after("j1", 1)
    assert [e.seq for e in events] == [2, 3]
    assert [e.epoch for e in events] == [2, 3]


def test_observation_recorded_once_even_under_concurrency(store):
    results = []

    def record() -> None:
        results.append(store.record_observation(_obs("dup")))

    threads = [threading.Thread(target=record) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert store.count_observations() == 1
    store.record_observation(_obs("other"))
    log = list(store.observations_after(0))
    assert [o.job_id for _, o in log] == ["dup", "other"]
    assert [o.job_id for _, o in store.observations_after(log[0][0])] == ["other"]
    assert log[0][1] == _obs("dup")


def test_a_batch_of_observations_is_recorded_in_order_without_duplicates(store):
    store.record_observation(_obs("known"))
    positions = store.record_observations([_obs("a"), _obs("known"), _obs("b"), _obs("a")])
    assert positions[1] is None and positions[3] is None  # known before, and earlier in the batch
    assert positions[0] is not None and positions[2] is not None and positions[0] < positions[2]
    assert [o.job_id for _, o in store.observations_after(0)] == ["known", "a", "b"]
    assert store.record_observations([]) == []



@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_rows_written_as_proto_json_by_earlier_versions_are_still_read(kind, tmp_path, request):
    import sqlalchemy as sa

    from nasoa_contracts import convert

    url = f"sqlite:///{tmp_path / 'old.db'}" if kind == "sqlite" else request.getfixturevalue("postgres_store_url")
    store = open_store(url)
    job, event, obs = _job("old-job"), JobEvent("old-job", 1, "state", JobState.QUEUED, "queued"), _obs("old-job")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:  # rows as an earlier version wrote them: the proto's JSON
            conn.execute(sa.text("INSERT INTO nasoa_jobs VALUES ('old-job', 'QUEUED', 1.0, :body)"),
                         {"body": convert.to_json(convert.job_to_pb(job))})
            conn.execute(sa.text("INSERT INTO nasoa_job_events VALUES ('old-job', 1, :body)"),
                         {"body": convert.to_json(convert.event_to_pb(event))})
            conn.execute(sa.text("INSERT INTO nasoa_observations (job_id, recorded_at, body) VALUES ('old-job', 1.0, :b)"),
                         {"b": convert.to_json(convert.observation_to_pb(obs))})
        assert store.get_job("old-job") == job
        assert store.events_after("old-job", 0) == [event]
        assert list(store.observations_after(0)) == [(1, obs)]
        store.update_job(replace(job, state=JobState.RUNNING))  # rewritten in today's encoding
        with engine.connect() as conn:
            body = conn.execute(sa.text("SELECT body FROM nasoa_jobs")).scalar()
        assert not body.startswith("{") and store.get_job("old-job") == replace(job, state=JobState.RUNNING)
        assert store.record_observations([obs]) == [None]  # the old row still makes Observe idempotent
    finally:
        engine.dispose()
        store.close()
