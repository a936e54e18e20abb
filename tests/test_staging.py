"""Staged plans run as child jobs of one parent: stages, decisions, budget, cancel, repair."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adaptor_service import Adaptor
from adaptor_service._schedulers import OneShotGenerator, ScheduleGenerator
from nasoa_contracts import CurvePoint, JobState, Observation, Plan, Stage


class RecordingDispatcher:
    def __init__(self) -> None:
        self.jobs: list[str] = []

    def dispatch(self, job) -> None:
        self.jobs.append(job.job_id)


class TwoProbes(ScheduleGenerator):
    """Probes the two best 3-epoch runs for one epoch, then continues one of them."""

    name = "two-probes"

    def choose(self, task, scored, time_margin, top_k=5):
        longest = [s for s in scored if s.candidate.epochs == 3]
        runs = sorted(longest, key=lambda s: -s.prediction.accuracy)[:2]
        stages = (
            Stage(tuple(r.candidate for r in runs), tuple(r.prediction for r in runs), stop_after_epochs=1, keep=1),
            Stage((runs[0].candidate,), (runs[0].prediction,), 0, 0),
        )
        plan = OneShotGenerator().choose(task, runs, time_margin, top_k)
        return replace(plan, policy=self.name, stages=stages, planned_seconds=sum(r.prediction.seconds for r in runs))


def _result(job, accuracies, seconds_per_epoch=2.0, status="ok", start=0):
    curve = tuple(CurvePoint(start + e + 1, a, (start + e + 1) * seconds_per_epoch) for e, a in enumerate(accuracies))
    return Observation(job.job_id, job.task, job.plan.candidate, accuracies[-1], len(accuracies) * seconds_per_epoch,
                       curve, status=status)


@pytest.fixture
def staged(tiny_space):
    dispatcher = RecordingDispatcher()
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, generator=TwoProbes(), dispatcher=dispatcher)
    return adaptor, dispatcher


def test_probes_are_queued_as_children_then_the_better_one_continues(staged, digits_task):
    adaptor, dispatcher = staged
    task = replace(digits_task, budget_seconds=100.0)
    parent = adaptor.submit(task, job_id="p1")
    assert parent.state == JobState.RUNNING and parent.plan.staged
    assert dispatcher.jobs == ["p1-s0r0", "p1-s0r1"]  # the parent itself never goes to a worker
    probes = [adaptor.get_job(j) for j in parent.child_job_ids]
    assert all(p.stop_after_epochs == 1 and p.parent_job_id == "p1" and p.stage == 0 for p in probes)
    assert sum(p.task.budget_seconds for p in probes) <= task.budget_seconds

    adaptor.observe(_result(probes[0], [40.0], status="stopped"))
    assert adaptor.get_job("p1").stage == 0  # the stage waits for its last probe
    adaptor.observe(_result(probes[1], [90.0], status="stopped"))
    parent = adaptor.get_job("p1")
    assert parent.stage == 1 and len(parent.child_job_ids) == 3
    final = adaptor.get_job("p1-s1r0")
    assert final.resume_from_job_id == probes[1].job_id  # the probe that measured better
    assert final.plan.candidate == probes[1].plan.candidate and final.stop_after_epochs == 0
    assert final.task.budget_seconds == pytest.approx(100.0 - 4.0)  # what the probes left
    assert dispatcher.jobs[-1] == "p1-s1r0"

    adaptor.observe(_result(final, [90.0, 95.0, 97.0]))
    parent = adaptor.get_job("p1")
    assert parent.state == JobState.DONE
    assert parent.result.accuracy == 97.0 and parent.result.seconds == pytest.approx(4.0 + 6.0)
    assert "winner p1-s1r0" in parent.message
    kinds = [e.kind for e in adaptor.watch_job("p1")]
    assert kinds[-1] == "result" and "state" in kinds


def test_progress_of_children_reaches_the_parent_stream(staged, digits_task):
    adaptor, _ = staged
    parent = adaptor.submit(replace(digits_task, budget_seconds=100.0), job_id="p2")
    adaptor.job_progress(parent.child_job_ids[1], CurvePoint(1, 55.0, 1.5))
    events = [e for e in adaptor.watch_job("p2", alive=lambda: False) if e.kind == "progress"]
    assert [(e.message, e.accuracy) for e in events] == [("stage 1, run 2/2: epoch 1", 55.0)]


def test_a_failed_probe_leaves_the_other_and_all_failed_fails_the_parent(staged, digits_task):
    adaptor, _ = staged
    task = replace(digits_task, budget_seconds=100.0)
    parent = adaptor.submit(task, job_id="p3")
    a, b = (adaptor.get_job(j) for j in parent.child_job_ids)
    adaptor.observe(Observation(a.job_id, a.task, a.plan.candidate, 0.0, 1.0, status="failed", message="boom"))
    adaptor.observe(_result(b, [30.0], status="stopped"))
    assert adaptor.get_job("p3-s1r0").resume_from_job_id == b.job_id

    parent = adaptor.submit(task, job_id="p4")
    for job_id in parent.child_job_ids:
        job = adaptor.get_job(job_id)
        adaptor.observe(Observation(job_id, job.task, job.plan.candidate, 0.0, 1.0, status="failed", message="boom"))
    parent = adaptor.get_job("p4")
    assert parent.state == JobState.FAILED and "no run finished an epoch" in parent.message


def test_cancelling_the_parent_cancels_its_children(staged, digits_task):
    adaptor, _ = staged
    parent = adaptor.submit(replace(digits_task, budget_seconds=100.0), job_id="p5")
    adaptor.cancel_job("p5")
    assert [adaptor.get_job(j).state for j in parent.child_job_ids] == [JobState.CANCELLED] * 2
    assert adaptor.get_job("p5").state == JobState.CANCELLED


def test_no_budget_left_makes_the_best_probe_the_winner(staged, digits_task):
    adaptor, _ = staged
    parent = adaptor.submit(replace(digits_task, budget_seconds=100.0), job_id="p6")
    a, b = (adaptor.get_job(j) for j in parent.child_job_ids)
    adaptor.observe(_result(a, [70.0], seconds_per_epoch=50.0, status="stopped"))
    adaptor.observe(_result(b, [60.0], seconds_per_epoch=49.0, status="stopped"))
    parent = adaptor.get_job("p6")
    assert parent.state == JobState.DONE and parent.result.accuracy == 70.0
    assert "cannot continue" in parent.message and len(parent.child_job_ids) == 2


def test_steps_are_idempotent_so_a_crash_is_repaired_by_doing_them_again(staged, digits_task):
    adaptor, dispatcher = staged
    parent = adaptor.submit(replace(digits_task, budget_seconds=100.0), job_id="p7")
    schedules = adaptor.jobs.schedules
    assert schedules.resume(adaptor.get_job("p7")).child_job_ids == parent.child_job_ids  # nothing settled
    adaptor.jobs.schedules = None  # the adaptor dies after recording the probes, before deciding
    for job_id in parent.child_job_ids:
        adaptor.observe(_result(adaptor.get_job(job_id), [50.0], status="stopped"))
    adaptor.jobs.schedules = schedules
    assert adaptor.get_job("p7").stage == 0
    repaired = schedules.resume(adaptor.get_job("p7"))  # what the reconciler does for a RUNNING parent
    assert repaired.stage == 1 and len(repaired.child_job_ids) == 3
    assert schedules.resume(repaired).child_job_ids == repaired.child_job_ids  # again: nothing new
    assert dispatcher.jobs.count("p7-s1r0") == 1


def test_one_shot_plans_are_unchanged(tiny_space, digits_task):
    dispatcher = RecordingDispatcher()
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, dispatcher=dispatcher)
    job = adaptor.submit(digits_task, job_id="solo")
    assert not job.plan.staged and job.child_job_ids == () and dispatcher.jobs == ["solo"]
    assert isinstance(job.plan, Plan)


def test_a_probe_is_validated_at_the_epoch_it_reached_not_its_whole_schedule(staged, digits_task):
    adaptor, _ = staged
    parent = adaptor.submit(replace(digits_task, budget_seconds=100.0), job_id="p8")
    probe = adaptor.get_job(parent.child_job_ids[0])
    whole = adaptor.predict(probe.task, [probe.plan.candidate])[0].seconds
    first = adaptor.predict(probe.task, [replace(probe.plan.candidate, epochs=1,
                                                 prior_seconds=probe.plan.candidate.prior_seconds / 3)])[0].seconds
    adaptor.observe(_result(probe, [50.0], seconds_per_epoch=first, status="stopped"))
    # One epoch took what one epoch was predicted to take: no error, although the whole
    # schedule was predicted to take three times as long.
    assert whole > 2 * first
    assert adaptor.state.time_rel_error.get() == pytest.approx(0.0, abs=0.05)


def _submit_probes(adaptor, task, job_id):
    """Submit ``task`` with a 100 s budget as ``job_id``: its two probe jobs."""
    parent = adaptor.submit(replace(task, budget_seconds=100.0), job_id=job_id)
    return [adaptor.get_job(j) for j in parent.child_job_ids]


class OnePerModel(TwoProbes):
    """Probes the best 3-epoch run of each model for one epoch, the better predicted first."""

    def choose(self, task, scored, time_margin, top_k=5):
        best = {}
        for s in sorted(scored, key=lambda s: -s.prediction.accuracy):
            if s.candidate.epochs == 3:
                best.setdefault(s.candidate.model, s)
        return super().choose(task, list(best.values()), time_margin, top_k)


def test_a_stage_is_decided_early_when_the_open_runs_cannot_catch_up(tiny_space, digits_task):
    dispatcher = RecordingDispatcher()
    adaptor = Adaptor.in_memory(candidate_space=tiny_space, generator=OnePerModel(), dispatcher=dispatcher)
    adaptor.jobs.schedules.confidence = 0.5  # half a standard deviation of predictions from so few results
    other = replace(digits_task, dataset_uri="builtin:shapes", task_id="shapes")

    def seen(i, c):  # on another task the large model did far better
        accuracy = 90.0 if c.model == "large" else 20.0
        return Observation(f"w{i}", other, c, accuracy, 5.0, (CurvePoint(c.epochs, accuracy, 5.0),))

    adaptor.warm_start(seen(i, c) for i, c in enumerate(tiny_space.candidates(other)))
    a, b = _submit_probes(adaptor, digits_task, "e1")
    assert a.plan.candidate.model != b.plan.candidate.model
    adaptor.observe(_result(a, [95.0], status="stopped"))  # b is still queued: no curve of its own
    parent = adaptor.get_job("e1")
    assert parent.stage == 1 and adaptor.get_job("e1-s1r0").resume_from_job_id == a.job_id
    assert adaptor.get_job(b.job_id).state == JobState.CANCELLED  # never run: nothing spent on it
    assert "was decided without it" in adaptor.get_job(b.job_id).message
    assert adaptor.get_job("e1-s1r0").task.budget_seconds == pytest.approx(100.0 - 2.0)
    assert "e1-s1r0" in dispatcher.jobs


def test_a_running_probe_is_left_to_finish_and_its_deadline_held_back(staged, digits_task):
    adaptor, _ = staged
    adaptor.jobs.schedules.confidence = 0.0
    a, b = _submit_probes(adaptor, digits_task, "e2")
    adaptor.job_started(b.job_id, "w2")
    adaptor.job_progress(b.job_id, CurvePoint(1, 5.0, 3.0))  # streams a poor first epoch; a not settled yet
    assert adaptor.get_job("e2").stage == 0
    adaptor.observe(_result(a, [99.0], status="stopped"))
    assert adaptor.get_job("e2").stage == 1
    assert adaptor.get_job(b.job_id).state == JobState.RUNNING  # it finishes its probe and is learned
    held = b.task.budget_seconds - 3.0  # b's deadline less what it has streamed
    assert adaptor.get_job("e2-s1r0").task.budget_seconds == pytest.approx(100.0 - 2.0 - held)
    adaptor.observe(_result(b, [6.0], status="stopped"))  # it settles late: the stage stays decided
    assert adaptor.get_job("e2").stage == 1 and len(adaptor.get_job("e2").child_job_ids) == 3


def test_an_open_run_that_could_still_win_is_waited_for(staged, digits_task):
    adaptor, _ = staged
    a, b = _submit_probes(adaptor, digits_task, "e3")
    adaptor.job_started(b.job_id, "w2")
    adaptor.job_progress(b.job_id, CurvePoint(1, 40.0, 2.0))
    adaptor.observe(_result(a, [45.0], status="stopped"))  # ahead by less than the predictions' spread
    assert adaptor.get_job("e3").stage == 0 and adaptor.get_job(b.job_id).state == JobState.RUNNING
    adaptor.observe(_result(b, [80.0], status="stopped"))
    assert adaptor.get_job("e3-s1r0").resume_from_job_id == b.job_id


def test_a_streamed_epoch_can_decide_the_stage(staged, digits_task):
    adaptor, _ = staged
    adaptor.jobs.schedules.confidence = 0.5
    a, b = _submit_probes(adaptor, digits_task, "e4")
    adaptor.job_started(b.job_id, "w2")
    adaptor.observe(_result(a, [60.0], status="stopped"))
    assert adaptor.get_job("e4").stage == 0  # b, unmeasured, is predicted as well as a: wait for it
    adaptor.job_progress(b.job_id, CurvePoint(1, 1.0, 2.0))  # its first epoch: far behind
    assert adaptor.get_job("e4").stage == 1
    assert adaptor.get_job("e4-s1r0").resume_from_job_id == a.job_id


def test_the_parent_ends_only_when_a_probe_left_running_has_settled(staged, digits_task):
    adaptor, _ = staged
    adaptor.jobs.schedules.confidence = 0.0
    a, b = _submit_probes(adaptor, digits_task, "e5")
    adaptor.job_started(b.job_id, "w2")
    adaptor.job_progress(b.job_id, CurvePoint(1, 5.0, 3.0))
    adaptor.observe(_result(a, [99.0], status="stopped"))
    final = adaptor.get_job("e5-s1r0")
    adaptor.observe(_result(final, [99.0, 99.5, 99.6], start=0))
    assert adaptor.get_job("e5").state == JobState.RUNNING  # b still runs: its seconds are not known yet
    adaptor.observe(_result(b, [6.0], seconds_per_epoch=3.0, status="stopped"))
    parent = adaptor.get_job("e5")
    assert parent.state == JobState.DONE and parent.result.accuracy == 99.6
    assert parent.result.seconds == pytest.approx(2.0 + 3.0 + 6.0)  # every run's worker-seconds


def test_a_probe_that_reached_its_deadline_is_not_continued(staged, digits_task):
    adaptor, _ = staged
    a, b = _submit_probes(adaptor, digits_task, "e6")
    adaptor.observe(_result(a, [90.0], status="deadline"))  # no checkpoint: it did not stop as planned
    adaptor.observe(_result(b, [40.0], status="stopped"))
    assert adaptor.get_job("e6-s1r0").resume_from_job_id == b.job_id

    for probe, accuracy in zip(_submit_probes(adaptor, digits_task, "e7"), (70.0, 80.0), strict=True):
        adaptor.observe(_result(probe, [accuracy], status="deadline"))
    parent = adaptor.get_job("e7")
    assert parent.state == JobState.DONE and parent.result.accuracy == 80.0 and "as it is" in parent.message


def test_a_continued_run_s_probe_epochs_are_learned_once(staged, digits_task):
    adaptor, _ = staged
    a, b = _submit_probes(adaptor, digits_task, "e8")
    adaptor.observe(_result(a, [90.0], status="stopped"))
    adaptor.observe(_result(b, [40.0], status="stopped"))
    final = adaptor.get_job("e8-s1r0")
    before = adaptor.state.accuracy.buffered_samples()
    adaptor.observe(_result(final, [90.0, 95.0, 97.0]))  # the whole run's curve: epoch 1 is a's probe
    assert adaptor.state.accuracy.buffered_samples() == before + 2  # epochs 2 and 3 only
