"""The plain-Python Adaptor: planning, jobs, idempotent learning, restart from snapshot + log."""

from __future__ import annotations

import pickle
import threading
import time
from dataclasses import replace

import pytest

from adaptor_service import Adaptor, open_store
from nasoa_contracts import (
    CurvePoint,
    FailedPrecondition,
    InvalidArgument,
    JobState,
    NotFound,
    Observation,
    TaskSpec,
)


class RecordingDispatcher:
    def __init__(self) -> None:
        self.jobs = []

    def dispatch(self, job) -> None:
        self.jobs.append(job.job_id)


def _result(adaptor: Adaptor, job, accuracy: float, seconds: float) -> Observation:
    c = job.plan.candidate
    curve = tuple(CurvePoint(e, accuracy * e / c.epochs, seconds * e / c.epochs) for e in range(1, c.epochs + 1))
    return Observation(job.job_id, job.task, c, accuracy, seconds, curve)


def test_plan_fits_budget_and_explains_alternatives(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    plan = adaptor.recommend(digits_task, top_k=3)
    assert plan.feasible
    assert plan.prediction.seconds * plan.time_margin <= digits_task.budget_seconds
    assert len(plan.alternatives) == 3
    assert all(a.reason for a in plan.alternatives)


def test_unknown_model_is_not_found_and_nothing_is_queued(tiny_space, digits_task):
    dispatcher = RecordingDispatcher()
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, dispatcher=dispatcher)
    with pytest.raises(NotFound, match="unknown model 'resnet999'; available: large, small"):
        adaptor.submit(digits_task, models=["resnet999"])
    assert dispatcher.jobs == [] and adaptor.list_jobs() == []


def test_bad_budget_is_invalid():
    with pytest.raises(InvalidArgument, match="budget_seconds must be a positive number"):
        TaskSpec("builtin:digits", -5)
    with pytest.raises(InvalidArgument, match="finite"):
        TaskSpec("builtin:digits", float("nan"))


def test_submit_is_idempotent_by_job_id(tiny_space, digits_task):
    dispatcher = RecordingDispatcher()
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, dispatcher=dispatcher)
    first = adaptor.submit(digits_task, job_id="job-1")
    second = adaptor.submit(digits_task, job_id="job-1")
    assert first.job_id == second.job_id == "job-1"
    assert dispatcher.jobs == ["job-1"]


def test_observe_learns_once_and_finishes_the_job(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    job = adaptor.submit(digits_task)
    before = adaptor.predict(digits_task, [job.plan.candidate])
    obs = _result(adaptor, job, 90.0, 12.0)
    assert adaptor.observe(obs) is True
    after = adaptor.predict(digits_task, [job.plan.candidate])
    assert after != before
    assert adaptor.observe(obs) is False
    assert adaptor.predict(digits_task, [job.plan.candidate]) == after
    assert adaptor.get_job(job.job_id).state == JobState.DONE
    kinds = [e.kind for e in adaptor.watch_job(job.job_id)]
    assert kinds[-1] == "result"
    assert adaptor.stats().observations == 1


def test_a_watch_ends_with_the_finishing_event_and_no_progress_follows_it(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    job = adaptor.submit(digits_task)
    adaptor.job_progress(job.job_id, CurvePoint(1, 40.0, 1.0))
    # A finish writes the state, then its event: a watch in between must wait for the event.
    done = replace(adaptor.get_job(job.job_id), state=JobState.DONE, result=_result(adaptor, job, 90.0, 12.0))
    adaptor.jobs.store.update_job(done)
    kinds: list[str] = []
    watcher = threading.Thread(target=lambda: kinds.extend(e.kind for e in adaptor.watch_job(job.job_id)))
    watcher.start()
    time.sleep(0.5)
    assert watcher.is_alive(), "the watch ended before the job's finishing event"
    adaptor.job_progress(job.job_id, CurvePoint(2, 60.0, 2.0))  # a late epoch of the finished job
    adaptor.jobs.event(done, "result", "done", CurvePoint(3, 90.0, 12.0))
    watcher.join(10)
    assert kinds[-1] == "result" and kinds.count("progress") == 1
    # A watch that starts after the end, past its last event, ends too.
    assert list(adaptor.watch_job(job.job_id, after_seq=10_000)) == []


def test_cancel(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    job = adaptor.submit(digits_task)
    assert adaptor.cancel_job(job.job_id).state == JobState.CANCELLED
    with pytest.raises(FailedPrecondition, match="already CANCELLED"):
        adaptor.cancel_job(job.job_id)


def test_learning_improves_time_predictions(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    # The truth: runs take 3x the physics prior.
    errors = []
    for i in range(40):
        task = TaskSpec("builtin:digits", 20.0 + i % 5 * 10, dict(digits_task.meta_features))
        job = adaptor.submit(task, job_id=f"j{i}")
        c = job.plan.candidate
        actual = 3.0 * c.prior_seconds
        errors.append(abs(job.plan.prediction.seconds - actual) / actual)
        adaptor.observe(_result(adaptor, job, 80.0, actual))
    assert sum(errors[-10:]) / 10 < 0.5 * sum(errors[:10]) / 10


def _stream(adaptor: Adaptor, start: int, n: int) -> None:
    for i in range(start, start + n):
        task = TaskSpec("builtin:digits", 10.0 + 7 * (i % 6), {"num_samples": 1000.0 + 50 * i, "num_classes": 10.0})
        job = adaptor.submit(task, job_id=f"job{i}")
        adaptor.observe(_result(adaptor, job, 50.0 + (i * 7) % 40, 1.0 + (i * 3) % 11))


def test_restart_from_snapshot_plus_log_gives_identical_predictions(tmp_path, tiny_space, digits_task):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    snap = tmp_path / "adaptor.snapshot"
    live = Adaptor(open_store(url), tiny_space, snapshot_path=snap, snapshot_every=7)
    _stream(live, 0, 30)  # snapshots at 7, 14, 21, 28; the last 2 are only in the log
    candidates = tiny_space.candidates(digits_task)
    expected = live.predict(digits_task, candidates)

    restarted = Adaptor(open_store(url), tiny_space, snapshot_path=snap, snapshot_every=7)
    assert restarted.stats().observations == 30
    assert restarted.predict(digits_task, candidates) == expected
    assert restarted.time_margin == live.time_margin


def test_a_run_measured_on_a_task_is_predicted_from_its_curve(tmp_path, tiny_space, digits_task):
    snap = tmp_path / "adaptor.snapshot"
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, snapshot_path=snap)
    _stream(adaptor, 0, 20)  # other tasks: the models are fit
    diverged = tiny_space.candidates(digits_task)[0]
    regime = [replace(diverged, epochs=e, prior_seconds=None) for e in (1, 2, 3, 6)]
    other_task = replace(digits_task, meta_features={"num_samples": 999.0, "num_classes": 10.0})
    before = adaptor.predict(digits_task, regime)
    # The run was planned for 3 epochs and diverged: 5% after 1, 4% after 2, 3% after 3, 10 s an epoch.
    curve = (CurvePoint(1, 5.0, 10.0), CurvePoint(2, 4.0, 20.0), CurvePoint(3, 3.0, 30.0))
    adaptor.observe(Observation("diverged", digits_task, regime[2], 3.0, 30.0, curve))

    after = adaptor.predict(digits_task, regime)
    assert [(p.accuracy, p.accuracy_std, p.seconds, p.seconds_std) for p in after[:3]] == [
        (5.0, 0.0, 10.0, 0.0), (4.0, 0.0, 20.0, 0.0), (3.0, 0.0, 30.0, 0.0)
    ]
    # 6 epochs were not measured: the model's guess moved by the run's residual at 3 epochs.
    assert after[3].seconds == pytest.approx(60.0)
    assert after[3].accuracy < before[3].accuracy - 20
    assert adaptor.predict(other_task, regime) != after  # only this task's runs are known
    # The plan for a bigger budget does not pick the diverged run again, and a restart keeps it.
    plan = adaptor.recommend(replace(digits_task, budget_seconds=1000.0))
    assert (plan.candidate.model, dict(plan.candidate.hparams)) != (diverged.model, dict(diverged.hparams))
    adaptor.snapshot()
    restarted = Adaptor.in_memory(candidate_space=tiny_space, snapshot_path=snap)
    assert restarted.predict(digits_task, regime) == after


def test_curve_points_without_a_length_or_a_time_leave_the_models_guess(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    _stream(adaptor, 0, 20)
    run = tiny_space.candidates(digits_task)[0]
    regime = [replace(run, epochs=e, prior_seconds=None) for e in (1, 2)]
    before = adaptor.predict(digits_task, regime)
    # An evaluation before training (epoch 0) and a result whose time was not measured (0 s).
    curve = (CurvePoint(0, 10.0, 0.0), CurvePoint(1, 40.0, 0.0), CurvePoint(2, 50.0, 0.0))
    adaptor.observe(Observation("no-time", digits_task, regime[1], 50.0, 0.0, curve))
    after = adaptor.predict(digits_task, regime)
    assert [p.accuracy for p in after] == [40.0, 50.0]
    assert [p.seconds for p in after] == [p.seconds for p in before]  # not "free"
    assert adaptor.recommend(digits_task).feasible


def test_one_failing_result_does_not_stop_the_others_of_a_batch(tmp_path, tiny_space, digits_task):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    # Every snapshot fails (its folder is a file): each result must still be learned and finish its job.
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, snapshot_path=blocker / "snap", snapshot_every=1)
    jobs = [adaptor.submit(digits_task, job_id=f"b{i}") for i in range(3)]
    with pytest.raises(OSError):
        adaptor.observe_many([(_result(adaptor, job, 70.0, 3.0), "look up") for job in jobs])
    assert adaptor.state.n_learned == 3
    assert [adaptor.get_job(job.job_id).state for job in jobs] == [JobState.DONE] * 3


def test_torn_snapshot_falls_back_to_the_log(tmp_path, tiny_space, digits_task):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    snap = tmp_path / "adaptor.snapshot"
    live = Adaptor(open_store(url), tiny_space, snapshot_path=snap, snapshot_every=5)
    _stream(live, 0, 12)
    expected = live.predict(digits_task, tiny_space.candidates(digits_task))
    snap.write_bytes(snap.read_bytes()[:100])  # a crash mid-write of a non-atomic writer
    restarted = Adaptor(open_store(url), tiny_space, snapshot_path=snap, snapshot_every=5)
    assert restarted.predict(digits_task, tiny_space.candidates(digits_task)) == expected


def test_predictors_survive_pickle(tiny_space, digits_task):
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    _stream(adaptor, 0, 10)
    state = pickle.loads(pickle.dumps(adaptor.state))
    candidates = tiny_space.candidates(digits_task)
    from adaptor_service import make_features

    for c in candidates:
        x = make_features(digits_task, c)
        assert state.accuracy.predict_dist(x) == adaptor.state.accuracy.predict_dist(x)
        assert state.time.predict_dist(x) == adaptor.state.time.predict_dist(x)


def test_warm_start_from_an_experience_file_is_idempotent(tmp_path, tiny_space, digits_task):
    from adaptor_service._experience import ExperienceRun, ExperienceTable, write_jsonl
    from adaptor_service.server import warm_start_from_file

    meta = dict(digits_task.meta_features)
    runs = [
        ExperienceRun("past-digits", f"r{i}", "small", meta, {"lr": 0.01 * (i + 1), "batch_size": 64, "optimizer": "sgd"},
                      (CurvePoint(1, 50.0 + i, 2.0), CurvePoint(2, 60.0 + i, 4.0)))
        for i in range(5)
    ]
    path = tmp_path / "past.jsonl"
    write_jsonl(ExperienceTable(tuple(runs)), path)
    adaptor = Adaptor(open_store(f"sqlite:///{tmp_path / 'a.db'}"), tiny_space)
    before = adaptor.predict(digits_task, tiny_space.candidates(digits_task)[:3])
    assert warm_start_from_file(adaptor, str(path)) == 5
    assert adaptor.predict(digits_task, tiny_space.candidates(digits_task)[:3]) != before
    assert warm_start_from_file(adaptor, str(path)) == 0  # a restart does not learn them twice
    assert adaptor.stats().observations == 5
    # Past runs get the same features as the service's own candidates.
    logged = [o for _, o in adaptor.store.observations_after(0)]
    assert logged[0].candidate.prior_seconds is not None and logged[0].candidate.model_features


def test_time_margin_follows_the_latest_results_so_it_falls_once_times_are_predictable(tiny_space, digits_task):
    import random

    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    candidate = adaptor.recommend(digits_task).candidate
    rng = random.Random(0)

    def send(i: int, seconds: float) -> None:
        adaptor.observe(Observation(f"m{i}", digits_task, candidate, 80.0, seconds,
                                    (CurvePoint(candidate.epochs, 80.0, seconds),)))

    for i in range(40):  # an erratic start: times the model cannot predict
        send(i, rng.choice([1.0, 9.0]))
    erratic = adaptor.time_margin
    for i in range(40, 190):  # then the same run always takes 4 s
        send(i, 4.0)
    assert erratic > 1.5
    assert adaptor.time_margin < 1.1  # the erratic start no longer counts
