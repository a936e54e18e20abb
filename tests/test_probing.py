"""Probe-then-commit: staged plans, budget accounting, one-shot fallbacks, lengths beyond the grid."""

from __future__ import annotations

import pytest

from adaptor_service import ProbeThenCommitGenerator, ScoredCandidate, make_generator, select_continuing
from benchmarks._policies import Decision, NasoaPolicy, Request, RunOption
from benchmarks._replay import _Runner
from nasoa_contracts import Candidate, CurvePoint, Prediction, Stage, TaskSpec

GRID = (1, 2, 3, 5, 8, 12, 20)


def _space(accuracy: dict[str, float], std: float = 10.0, per_epoch: float = 2.0, grid=GRID) -> list[ScoredCandidate]:
    """Runs named by ``accuracy`` (their predicted accuracy at 20 epochs), at every grid length."""
    out = []
    for model, top in accuracy.items():
        for epochs in grid:
            acc = top - 20.0 / epochs  # longer is better
            seconds = 1.0 + per_epoch * epochs
            candidate = Candidate(model, {"lr": 0.01}, epochs=epochs, prior_seconds=seconds)
            out.append(ScoredCandidate(candidate, Prediction(acc, std, seconds, 0.1 * seconds)))
    return out


UNSURE = {"a": 80.0, "b": 79.0, "c": 78.5, "d": 77.0, "e": 76.0, "f": 60.0}


def test_uncertain_predictions_give_a_two_stage_plan_within_the_budget():
    task = TaskSpec("builtin:digits", 300.0)
    plan = ProbeThenCommitGenerator(max_epochs=0).choose(task, _space(UNSURE), time_margin=1.5)
    assert plan.staged and len(plan.stages) == 2
    probes, commit = plan.stages
    assert 2 <= len(probes.runs) <= 10 and probes.keep == 1 and probes.stop_after_epochs in (1, 2, 3)
    assert all(run.epochs > probes.stop_after_epochs for run in probes.runs)  # each carries its full length
    assert commit.runs == (plan.candidate,) and commit.stop_after_epochs == 0
    assert plan.candidate in probes.runs and "f" not in {r.model for r in probes.runs}  # the worst is not probed
    p = probes.stop_after_epochs
    cost = {r.model: 1.0 + 2.0 * p for r in probes.runs}  # predicted seconds for p epochs
    assert plan.planned_seconds == pytest.approx(sum(cost.values()) + plan.prediction.seconds - cost[plan.candidate.model])
    assert plan.total_seconds() * 1.5 <= 300.0 and plan.feasible
    for run, prediction in zip(probes.runs, probes.predictions, strict=True):  # fits after the other probes
        others = sum(cost.values()) - cost[run.model]
        assert (others + prediction.seconds) * 1.5 <= 300.0


def test_confident_predictions_and_small_budgets_plan_one_shot():
    generator = ProbeThenCommitGenerator(max_epochs=0)
    confident = generator.choose(TaskSpec("d", 300.0), _space(UNSURE, std=0.1), time_margin=1.0)
    assert not confident.staged and confident.candidate.model == "a" and confident.candidate.epochs == 20
    # 10 s hold one 3-epoch run: two 1-epoch probes would take more than their share
    tight = generator.choose(TaskSpec("d", 10.0), _space(UNSURE), time_margin=1.0)
    assert not tight.staged and tight.prediction.seconds <= 10.0


def test_runs_recorded_once_cannot_be_probed():
    single = [s for s in _space(UNSURE) if s.candidate.epochs == 20]  # one length per run, no prefix
    plan = ProbeThenCommitGenerator(max_epochs=0).choose(TaskSpec("d", 1000.0), single, time_margin=1.0)
    assert not plan.staged and plan.candidate.epochs == 20


def test_a_winner_runs_beyond_the_grid_to_fill_a_large_budget():
    scored = _space({"a": 95.0, "b": 90.0}, std=0.1)
    plan = ProbeThenCommitGenerator().choose(TaskSpec("d", 1000.0), scored, time_margin=1.25)
    assert plan.candidate.model == "a" and plan.candidate.epochs > 20
    last = next(s for s in scored if (s.candidate.model, s.candidate.epochs) == ("a", 20))
    scale = plan.candidate.epochs / 20
    assert plan.prediction.seconds == pytest.approx(last.prediction.seconds * scale)
    assert plan.candidate.prior_seconds == pytest.approx(last.candidate.prior_seconds * scale)
    assert plan.prediction.accuracy <= last.prediction.accuracy  # never above the longest measured length
    assert 0.8 * 800 <= plan.prediction.seconds <= 800  # the budget over the margin, nearly all of it
    capped = ProbeThenCommitGenerator(max_epochs=40).choose(TaskSpec("d", 1000.0), scored, time_margin=1.25)
    assert capped.candidate.epochs == 40


def test_easy_tasks_do_not_fall_back_to_the_shortest_run():
    easy = [ScoredCandidate(s.candidate, Prediction(100.0, 0.1, s.prediction.seconds, 0.1))
            for s in _space({"a": 0.0, "b": 0.0})]
    plan = ProbeThenCommitGenerator(max_epochs=0).choose(TaskSpec("d", 1000.0), easy, time_margin=1.0)
    assert plan.candidate.epochs == 20  # all tie at 100%: the longest that fits, not one epoch
    extended = ProbeThenCommitGenerator().choose(TaskSpec("d", 1000.0), easy, time_margin=1.0)
    assert extended.prediction.seconds >= 800 and extended.prediction.accuracy <= 100.0


def test_select_continuing_keeps_the_best_predicted_then_accuracy_per_second():
    runs = tuple(Candidate(m, epochs=10) for m in "abcd")
    stage = Stage(runs, (Prediction(50, 5, 10, 1),) * 4, stop_after_epochs=2, keep=2)
    again = [Prediction(70, 1, 10, 1), Prediction(90, 1, 30, 1), Prediction(90, 1, 20, 1), Prediction(60, 1, 5, 1)]
    assert select_continuing(stage, again) == [2, 1]
    assert select_continuing(Stage(runs, stage.predictions, 2, keep=1), again) == [2]
    with pytest.raises(ValueError, match="one prediction per run"):
        select_continuing(stage, again[:2])


def test_the_generator_is_registered_by_name():
    generator = make_generator("probe-then-commit", seed=3, max_probes=4)
    assert isinstance(generator, ProbeThenCommitGenerator) and generator.max_probes == 4


def test_digits_with_an_hour_plans_a_schedule_that_fills_it():
    from adaptor_service import (
        DEFAULT_SPACE_FILE,
        SHIPPED_EXPERIENCE,
        Adaptor,
        CandidateSpace,
        RegimeGrid,
        warm_start_from_file,
    )
    from benchmarks._collect import zoo_models
    from nasoa_data import compute_meta_features

    space = CandidateSpace(zoo_models(), RegimeGrid.from_toml(DEFAULT_SPACE_FILE))
    adaptor = Adaptor.in_memory(candidate_space=space, generator=ProbeThenCommitGenerator())
    warm_start_from_file(adaptor, str(SHIPPED_EXPERIENCE))
    task = TaskSpec("builtin:digits", 3600.0, compute_meta_features("builtin:digits").as_dict())
    plan = adaptor.recommend(task)
    assert plan.candidate.epochs > max(space.grid.epochs)
    # The plan with its safety margin takes at least 80% of the hour, and no more than all of it.
    assert 0.8 * 3600.0 <= plan.total_seconds() * plan.time_margin <= 3600.0


# ---- the replay's accounting of a staged decision


def _run(run_id: str, per_epoch: float, accuracy: list[float]) -> object:
    from adaptor_service import ExperienceRun

    curve = [CurvePoint(e + 1, a, per_epoch * (e + 1)) for e, a in enumerate(accuracy)]
    return ExperienceRun("t", run_id, "m" + run_id, {"num_samples": 100.0}, {"lr": 0.01}, curve)


def test_the_replay_charges_probes_to_the_budget():
    runs = [_run("0", 10.0, [50, 60, 70, 75, 80]), _run("1", 20.0, [40, 70, 80, 90, 95])]
    runner = _Runner(runs, budget=100.0)
    assert [p.epoch for p in runner.probe(0, 2)] == [1, 2]  # 20 s
    assert [p.epoch for p in runner.probe(1, 2)] == [1, 2]  # 40 s
    # run 1 continues with what run 0's probe left: 80 s, so 4 of its planned 5 epochs
    accuracy, seconds, curve = runner.run(Decision(1, epochs=5, probes=((0, 2), (1, 2))))
    assert (accuracy, seconds, curve[-1].epoch) == (90.0, 20.0 + 80.0, 4)
    one_shot = _Runner(runs, budget=100.0).run(Decision(1))
    assert one_shot[:2] == (95.0, 100.0)  # no probe: the run alone within the budget
    assert _Runner(runs, budget=5.0).run(Decision(1))[:2] == (0.0, 5.0)  # no epoch fits: 0


def test_nasoa_falls_back_to_one_shot_on_single_row_runs():
    policy = NasoaPolicy(seed=0)
    options = tuple(RunOption(str(i), f"m{i}", {"lr": 0.01}, (20,)) for i in range(6))
    request = Request("t", {"num_samples": 100.0, "num_classes": 10.0}, 3600.0, options)

    def probe(index: int, epochs: int) -> tuple[CurvePoint, ...]:
        raise AssertionError("a run recorded once has no curve prefix to probe")

    decision = policy.decide(request, probe)
    assert decision.probes == () and 0 <= decision.choice < 6


@pytest.mark.parametrize("seed", range(40))
def test_the_shortlist_gives_the_plan_of_every_candidate(seed):
    """Random spaces (rows shuffled, values rounded so that ties happen) and settings: the
    plan over the shortlisted runs is the plan over all candidates, and the shortlist prunes."""
    import random

    import numpy as np

    from adaptor_service import RunIndex

    rng = random.Random(seed)
    grid = sorted(rng.sample(GRID, rng.randint(1, len(GRID))))
    scored = []
    for m in range(rng.randint(1, 6)):
        for lr in rng.sample([0.001, 0.003, 0.01, 0.03, 0.1], rng.randint(1, 5)):
            top, per_epoch = rng.choice([50.0, 70.0, 70.5, 80.0, 90.0]), rng.choice([0.5, 2.0, 2.0, 8.0])
            for epochs in grid:
                acc = round(max(0.0, top - rng.choice([20.0, 5.0, 0.0]) / epochs + rng.choice([0.0, 0.25, -3.0])), 2)
                std = rng.choice([0.0, 0.25, 2.0, 10.0])
                seconds = 0.5 + per_epoch * epochs
                candidate = Candidate(f"m{m}", {"lr": lr}, epochs=epochs, prior_seconds=seconds)
                scored.append(ScoredCandidate(candidate, Prediction(acc, std, seconds, 0.1 * seconds)))
    rng.shuffle(scored)
    acc, std, sec = (np.array([getattr(s.prediction, f) for s in scored]) for f in ("accuracy", "accuracy_std", "seconds"))
    runs = RunIndex.of([s.candidate for s in scored])
    pruned = 0
    for _ in range(6):
        options = {"max_probes": rng.randint(2, 10), "per_model": rng.randint(1, 3), "max_epochs": rng.choice([10_000, 15]),
                   "tie_points": rng.choice([0.0, 0.25, 2.0]), "risk_aversion": rng.choice([0.0, 0.5, 1.0]),
                   "confidence": rng.choice([0.0, 1.0, 3.0]), "probe_epochs": tuple(rng.sample((1, 2, 3), rng.randint(1, 3)))}
        generator = ProbeThenCommitGenerator(**options)
        task = TaskSpec("builtin:digits", rng.choice([0.5, 3.0, 20.0, 60.0, 200.0, 3600.0]))
        margin, top_k = rng.choice([1.0, 1.2, 2.0]), rng.randint(1, 6)
        picked = generator.shortlist(task, acc, std, sec, margin, top_k, runs)
        _assert_full_lengths_match(generator, scored, runs, task.budget_seconds / margin)
        if picked is None:
            assert not (sec <= task.budget_seconds / margin).any(), "None only when nothing fits"
            continue
        pruned += len(picked) < len(scored)
        assert list(picked) == sorted(picked)
        expected = generator.choose(task, scored, margin, top_k)
        assert generator.choose(task, [scored[i] for i in picked], margin, top_k) == expected, options
    if len(set(runs.run.tolist())) > 12:
        assert pruned, "a space of many runs is cut down"


def test_the_space_plan_with_the_shortlist_is_the_plan_of_every_candidate():
    """The planner's path (cached rows, shortlist, known-run corrections) against every candidate."""
    from adaptor_service import Adaptor
    from benchmarks._service_bench import benchmark_space
    from tests.test_fast_paths import _observations, _plain_plan, _task

    space = benchmark_space(2)
    adaptor = Adaptor.in_memory(candidate_space=space, generator=ProbeThenCommitGenerator())
    adaptor.warm_start(_observations(space, 0, 40))
    staged = 0
    for i in range(10):
        task = _task(i % 4, budget=5.0 + 40 * i)
        plan = adaptor.recommend(task, top_k=1 + i % 5)
        assert plan == _plain_plan(adaptor, ProbeThenCommitGenerator(), task, 1 + i % 5)
        staged += bool(plan.stages)
    assert adaptor.state.known_runs.of_task(_task(1)), "the tasks asked for have measured runs"
    assert staged, "some plans probe"


def _assert_full_lengths_match(generator, scored, runs, budget):
    """The shortlist's arrays hold, run by run, the very floats of ``_length`` over the budget."""
    import numpy as np

    acc, std, sec = (np.array([getattr(s.prediction, f) for s in scored]) for f in ("accuracy", "accuracy_std", "seconds"))
    ceiling = min(100.0, float(acc.max()))
    arrays = generator._full_lengths(runs, acc, std, sec, acc - generator.risk_aversion * std, budget, ceiling)
    if arrays is None:
        return
    o_acc, o_std, o_sec, o_score, o_epochs, has = arrays
    for run in generator._runs(scored):
        number = int(runs.run[[s.candidate for s in scored].index(run.lengths[0].candidate)])
        length = generator._length(run, budget, ceiling)
        assert has[number] == (length is not None)
        if length is not None:
            p = length.prediction
            got = (o_acc[number], o_std[number], o_sec[number], o_score[number], int(o_epochs[number]))
            assert got == (p.accuracy, p.accuracy_std, p.seconds, generator._score(length), length.candidate.epochs)
