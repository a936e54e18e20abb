"""Successive halving as a schedule generator: rungs, sizing to the budget, and no peeking at accuracy.

The common checks (seeding, pickling, untouched inputs) run over it in tests/test_schedulers.py;
here the staged plans it makes through the adaptor's planner over a real candidate space.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from adaptor_service import (
    Adaptor,
    CandidateSpace,
    ModelInfo,
    RegimeGrid,
    ScoredCandidate,
    SuccessiveHalvingGenerator,
    make_generator,
)
from nasoa_contracts import Prediction, TaskSpec
from nasoa_contracts.convert import plan_from_pb, plan_to_pb


@pytest.fixture
def space():
    models = [
        ModelInfo("small", {"cpu": 10.0}, num_params=10_000, macs=1_000_000, source_accuracy=50, num_stages=3),
        ModelInfo("mid", {"cpu": 30.0}, num_params=200_000, macs=20_000_000, source_accuracy=60, num_stages=3),
        ModelInfo("large", {"cpu": 80.0}, num_params=900_000, macs=90_000_000, source_accuracy=70, num_stages=4),
    ]
    grid = RegimeGrid(learning_rates=(0.003, 0.01, 0.03, 0.1), epochs=(1, 3, 9, 20), batch_sizes=(64,),
                      frozen_stages=(0, 1, 2), optimizers=("sgd",))
    return CandidateSpace(models, grid)  # 36 configurations


def _task(budget: float) -> TaskSpec:
    return TaskSpec("builtin:digits", budget, {"num_samples": 1347.0, "num_classes": 10.0})


def _plan(space, budget: float, seed: int = 0, **options):
    adaptor = Adaptor.in_memory(candidate_space=space, generator=SuccessiveHalvingGenerator(seed=seed, **options))
    return adaptor.recommend(_task(budget)), adaptor.time_margin


def test_rungs_keep_a_third_for_three_times_the_epochs_down_to_one_run(space):
    plan, margin = _plan(space, 3600)
    assert plan.staged and plan.policy == "asha"
    sizes = [len(stage.runs) for stage in plan.stages]
    assert sizes == [27, 9, 3, 1]
    assert [stage.keep for stage in plan.stages] == [9, 3, 1, 0]
    assert [stage.stop_after_epochs for stage in plan.stages] == [1, 3, 9, 0]  # the last runs its whole schedule
    lengths = {run.epochs for stage in plan.stages for run in stage.runs}
    assert lengths == {20} and plan.candidate.epochs == 20  # one schedule, the longest of the space
    configurations = {(run.model, tuple(sorted(run.hparams.items()))) for run in plan.stages[0].runs}
    assert len(configurations) == 27  # distinct configurations
    assert plan.candidate in plan.stages[-1].runs
    assert plan.feasible and plan.planned_seconds * margin <= 3600


@pytest.mark.parametrize("budget", [2, 15, 40, 90, 300, 1200])
def test_the_search_is_sized_to_fit_the_budget(space, budget):
    plan, margin = _plan(space, budget)
    if plan.feasible:
        assert plan.total_seconds() * margin <= budget
    if plan.staged:
        # predictions are for each run's whole schedule; the search trains most runs for a part of it
        first, last = plan.stages[0], plan.stages[-1]
        assert plan.planned_seconds >= last.predictions[0].seconds
        assert plan.planned_seconds < sum(p.seconds for p in first.predictions)
        assert all(run.epochs == last.runs[0].epochs for run in first.runs)


def test_more_budget_buys_more_configurations_or_longer_schedules(space):
    searched = []
    for budget in (2, 30, 120, 600, 3600):
        plan, _ = _plan(space, budget)
        starts = len(plan.stages[0].runs) if plan.staged else 1
        searched.append((starts, plan.candidate.epochs, plan.total_seconds()))
    assert searched[0][0] == 1 and searched[-1][0] == 27
    assert [s[0] for s in searched] == sorted(s[0] for s in searched)
    assert searched[-1][2] > searched[0][2]


def test_a_budget_below_every_run_gives_the_fastest_candidate_not_feasible():
    scored = _two_speeds()
    plan = SuccessiveHalvingGenerator().choose(TaskSpec("builtin:digits", 2.5), scored, 1.0)
    assert not plan.feasible and not plan.staged
    assert plan.prediction.seconds == min(s.prediction.seconds for s in scored)


def _two_speeds() -> list[ScoredCandidate]:
    """Nine configurations: every third takes 10 s an epoch, the others 1 s; 2 s per job besides."""
    from nasoa_contracts import Candidate

    scored = []
    for i in range(9):
        per_epoch = 10.0 if i % 3 == 0 else 1.0
        for epochs in (1, 3, 9):
            scored.append(ScoredCandidate(Candidate("m", {"lr": 0.01 * (i + 1)}, epochs=epochs),
                                          Prediction(50.0, 1.0, 2.0 + per_epoch * epochs, 0.1)))
    return scored


def test_it_never_reads_the_predicted_accuracy(space):
    """Which configurations start is a seeded draw: predicted accuracy changes nothing."""
    adaptor = Adaptor.in_memory(candidate_space=space)
    task = _task(600)
    candidates = space.candidates(task)
    predictions = adaptor.predict(task, candidates)
    scored = [ScoredCandidate(c, p) for c, p in zip(candidates, predictions, strict=True)]
    flipped = [replace(s, prediction=replace(s.prediction, accuracy=100 - s.prediction.accuracy,
                                             accuracy_std=7.0)) for s in scored]
    a = SuccessiveHalvingGenerator(seed=4).choose(task, scored, 1.2)
    b = SuccessiveHalvingGenerator(seed=4).choose(task, flipped, 1.2)
    assert [s.runs for s in a.stages] == [s.runs for s in b.stages] and a.planned_seconds == b.planned_seconds
    other = SuccessiveHalvingGenerator(seed=5).choose(task, scored, 1.2)
    assert other.stages[0].runs != a.stages[0].runs  # another seed, another draw


def test_later_stages_are_charged_with_their_slowest_runs():
    """Two speeds: the stage after the first rung costs what the slow runs would."""
    plan = SuccessiveHalvingGenerator(max_configurations=9).choose(TaskSpec("builtin:digits", 10_000),
                                                                   _two_speeds(), 1.0)
    assert [len(s.runs) for s in plan.stages] == [9, 3, 1]
    first = 3 * (2 + 10) + 6 * (2 + 1)  # every run's first epoch
    second = 3 * (2 + 10 * 2)  # three continue for two more epochs: charged as the three slow ones
    last = 2 + 10 * 6  # one continues for six more
    assert plan.planned_seconds == pytest.approx(first + second + last)


def test_the_staged_plan_survives_the_wire_and_make_generator_knows_it(space):
    plan, _ = _plan(space, 600)
    assert plan_from_pb(plan_to_pb(plan)) == plan
    generator = make_generator("asha", seed=3)
    assert isinstance(generator, SuccessiveHalvingGenerator) and generator.seed == 3
    assert make_generator("one-shot").name == "nasoa"  # the live benchmark's nasoa-one-shot


class _Queue:
    """Records what the adaptor dispatches (the broker's part)."""

    def __init__(self) -> None:
        self.jobs: list[str] = []

    def dispatch(self, job) -> None:
        self.jobs.append(job.job_id)


def drive_staged_job(adaptor, parent_id: str, accuracy_of=None, seconds_per_epoch: float = 0.5) -> None:
    """Play the worker for every child of a staged job, stage by stage, with the adaptor's own calls.

    Each run reports one curve from epoch 1 (a continued run's too) with cumulative seconds, and
    the seconds this job took; ``accuracy_of(run_index, epoch)`` gives the curve.
    """
    from nasoa_contracts import CurvePoint, JobState, Observation

    accuracy_of = accuracy_of or (lambda run, epoch: min(99.0, 40.0 + 3 * run + 2 * epoch))
    sha = "cd" * 32
    while not adaptor.get_job(parent_id).state.finished:
        parent = adaptor.get_job(parent_id)
        queued = [adaptor.get_job(c) for c in parent.child_job_ids]
        queued = [c for c in queued if c.state == JobState.QUEUED]
        assert queued, "a running staged job has a queued child"
        for child in queued:
            probe = child  # the run's first job: its position in the first stage names the run
            while probe.resume_from_job_id:
                probe = adaptor.get_job(probe.resume_from_job_id)
            run = int(probe.job_id.rsplit("r", 1)[-1])
            start = 0
            if child.resume_from_job_id:
                start = adaptor.get_job(child.resume_from_job_id).result.curve[-1].epoch
            stop = child.stop_after_epochs or child.plan.candidate.epochs
            adaptor.job_started(child.job_id, "worker@test")
            curve = tuple(CurvePoint(e, accuracy_of(run, e), e * seconds_per_epoch) for e in range(1, stop + 1))
            for point in curve[start:]:
                adaptor.job_progress(child.job_id, point)
            last = not child.stop_after_epochs
            adaptor.observe(Observation(child.job_id, child.task, child.plan.candidate, curve[-1].accuracy,
                                        (stop - start) * seconds_per_epoch + 0.2, curve,
                                        "ok" if last else "stopped",
                                        artifact_id=sha[:16] if last else "", artifact_sha256=sha if last else ""))


def test_asha_runs_through_the_staged_jobs_within_the_budget(space):
    dispatched = _Queue()
    adaptor = Adaptor.in_memory(candidate_space=space, generator=SuccessiveHalvingGenerator(seed=1),
                                dispatcher=dispatched)
    parent = adaptor.submit(_task(600), job_id="asha-1")
    sizes = [len(s.runs) for s in parent.plan.stages]
    assert len(sizes) >= 3 and dispatched.jobs == [f"asha-1-s0r{i}" for i in range(sizes[0])]
    drive_staged_job(adaptor, "asha-1")
    parent = adaptor.get_job("asha-1")
    children = [adaptor.get_job(c) for c in parent.child_job_ids]
    per_stage = [sum(c.stage == k for c in children) for k in range(len(sizes))]
    assert per_stage == sizes  # a third continues at each rung, down to one run
    assert parent.state.value == "DONE" and parent.result.artifact_id
    used = sum(c.result.seconds for c in children)
    assert parent.result.seconds == pytest.approx(used) and used <= 600
    winner = [c for c in children if c.stage == len(sizes) - 1][0]
    assert winner.stop_after_epochs == 0 and winner.resume_from_job_id
    # the runs with the best curves continued: run index grows the accuracy in drive_staged_job
    continued = {adaptor.get_job(c.resume_from_job_id).job_id for c in children if c.stage == 1}
    firsts = sorted((c for c in children if c.stage == 0), key=lambda c: int(c.job_id.rsplit("r", 1)[-1]))
    assert continued == {c.job_id for c in firsts[-sizes[1]:]}
