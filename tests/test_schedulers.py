"""Common checks over every schedule generator (River's check_estimator, for our policies)."""

from __future__ import annotations

import copy
import pickle

import pytest

from adaptor_service import (
    FixedDefaultGenerator,
    OneShotGenerator,
    ProbeThenCommitGenerator,
    RandomGenerator,
    RunIndex,
    ScoredCandidate,
    SuccessiveHalvingGenerator,
    make_generator,
)
from nasoa_contracts import Candidate, Prediction, TaskSpec

GENERATORS = [
    lambda seed: OneShotGenerator(seed=seed),
    lambda seed: OneShotGenerator(risk_aversion=1.0, exploration=0.5, seed=seed),
    lambda seed: RandomGenerator(seed=seed),
    lambda seed: FixedDefaultGenerator(model="m1", hparams={"lr": 0.01}),
    lambda seed: SuccessiveHalvingGenerator(seed=seed),
    lambda seed: ProbeThenCommitGenerator(seed=seed),
]
IDS = ["one-shot", "one-shot-exploring", "random", "fixed", "asha", "probe-then-commit"]


def _scored() -> list[ScoredCandidate]:
    out = []
    for i in range(30):
        c = Candidate(f"m{i % 3}", {"lr": [0.01, 0.1][i % 2]}, epochs=1 + i % 5)
        out.append(ScoredCandidate(c, Prediction(40 + (i * 7) % 50, 1 + i % 4, 2.0 + i, 0.5)))
    return out


def _tasks() -> list[TaskSpec]:
    return [TaskSpec("builtin:digits", b) for b in (5, 12, 20, 40, 3, 25, 60, 8, 200)]


def _choices(generator) -> list[str]:
    scored = _scored()
    return [generator.choose(t, scored, time_margin=1.2).candidate.key for t in _tasks()]


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_deterministic_for_a_seed(make):
    assert _choices(make(7)) == _choices(make(7))


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_a_repeatable_generator_plans_the_same_arguments_the_same_way(make):
    """The planner reuses a repeatable generator's plans: what came before must not matter."""
    generator = make(11)
    if not generator.repeatable:
        assert type(generator) in (RandomGenerator, SuccessiveHalvingGenerator) or generator.exploration > 0
        return
    scored, task = _scored(), _tasks()[3]
    first = generator.choose(task, scored, time_margin=1.2)
    _choices(generator)
    assert generator.choose(task, scored, time_margin=1.2) == first


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_pickle_and_deepcopy_keep_behaviour(make):
    generator = make(3)
    _choices(generator)  # advance any internal random state
    for twin in (pickle.loads(pickle.dumps(generator)), copy.deepcopy(generator)):
        assert _choices(twin) == _choices(copy.deepcopy(generator))


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_init_arguments_are_stored_as_given(make):
    generator = make(5)
    params = {k: v for k, v in vars(generator).items() if not k.startswith("_")}
    assert params, "a generator keeps its init arguments as attributes"
    assert type(generator)(**params).__dict__.keys() == generator.__dict__.keys()


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_plan_is_a_candidate_and_inputs_are_untouched(make):
    scored = _scored()
    before = copy.deepcopy(scored)
    for task in _tasks():
        plan = make(0).choose(task, scored, time_margin=1.2, top_k=4)
        # A plan's candidate is one of the candidates, or one of their runs planned longer.
        same_run = [s.candidate for s in scored if (s.candidate.model, s.candidate.hparams)
                    == (plan.candidate.model, plan.candidate.hparams)]
        assert plan.candidate in same_run or plan.candidate.epochs > max(c.epochs for c in same_run)
        for stage in plan.stages:
            assert all(run in [s.candidate for s in scored] or run.epochs > 5 for run in stage.runs)
        assert len(plan.alternatives) <= 4
        fits = any(s.prediction.seconds * 1.2 <= task.budget_seconds for s in scored)
        assert plan.feasible == (plan.total_seconds() * 1.2 <= task.budget_seconds)
        runs = {(s.candidate.model, tuple(sorted(s.candidate.hparams.items()))) for s in scored}
        for stage in plan.stages:  # a staged run may be longer than the scored ones, never another run
            assert all((run.model, tuple(sorted(run.hparams.items()))) in runs for run in stage.runs)
        if fits and not isinstance(make(0), FixedDefaultGenerator):
            assert plan.feasible
    assert scored == before


def test_one_shot_picks_the_best_risk_adjusted_fit():
    scored = _scored()
    task = TaskSpec("builtin:digits", 20)
    plan = OneShotGenerator(risk_aversion=0.5).choose(task, scored, time_margin=1.0)
    fitting = [s for s in scored if s.prediction.seconds <= 20]
    best = max(fitting, key=lambda s: s.prediction.accuracy - 0.5 * s.prediction.accuracy_std)
    assert plan.candidate == best.candidate
    assert all("lower" in a.reason or "exceeds the budget" in a.reason for a in plan.alternatives)


def test_exploration_can_be_switched_off():
    scored = _scored()
    off = [OneShotGenerator(exploration=0.0, seed=s).choose(TaskSpec("d", 30), scored, 1.0).candidate for s in range(5)]
    assert len(set(off)) == 1


def test_fixed_uses_its_model_and_most_epochs_that_fit():
    plan = FixedDefaultGenerator(model="m1", hparams={"lr": 0.01}).choose(TaskSpec("d", 30), _scored(), 1.0)
    assert plan.candidate.model == "m1" and plan.candidate.hparams["lr"] == 0.01


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown policy 'bohb': choose nasoa, probe-then-commit, one-shot, random, fixed "
                                         "or asha"):
        make_generator("bohb")


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_shortlist_hooks_give_the_plan_of_all_candidates(make):
    """The planner predicts and builds only what the hooks name: the plan must not change."""
    import numpy as np

    scored = _scored()
    acc = np.array([s.prediction.accuracy for s in scored])
    std = np.array([s.prediction.accuracy_std for s in scored])
    sec = np.array([s.prediction.seconds for s in scored])
    runs = RunIndex.of([s.candidate for s in scored])
    for task in _tasks():
        full, short = make(11), make(11)
        need = short.rows_to_score(task, sec, 1.2, 3)
        need = np.arange(len(scored)) if need is None else need
        picked = short.shortlist(task, acc[need], std[need], sec[need], 1.2, 3, runs.take(need))
        index = need if picked is None else need[picked]
        assert full.choose(task, scored, 1.2, 3) == short.choose(task, [scored[i] for i in index], 1.2, 3)
def test_runners_up_say_how_they_differ_and_why_they_lost():
    run = {"lr": 0.01, "batch_size": 64}
    scored = [
        ScoredCandidate(Candidate("m", run, epochs=8), Prediction(90.0, 2.0, 10.0, 1.0)),
        ScoredCandidate(Candidate("m", run, epochs=4), Prediction(90.0, 2.0, 5.0, 1.0)),    # same run, fewer epochs, tie
        ScoredCandidate(Candidate("m", run, epochs=2), Prediction(80.0, 2.0, 2.5, 1.0)),    # same run, lower
        ScoredCandidate(Candidate("n", run, epochs=8), Prediction(85.0, 4.0, 9.0, 1.0)),    # another model, lower
        ScoredCandidate(Candidate("m", run, epochs=16), Prediction(95.0, 2.0, 40.0, 1.0)),  # over the budget
    ]
    plan = OneShotGenerator(risk_aversion=0.5).choose(TaskSpec("d", 20), scored, time_margin=1.0)
    assert plan.candidate.epochs == 8
    reasons = [a.reason for a in plan.alternatives]
    assert reasons == [
        "the same run with 4 epochs instead of 8: the same risk-adjusted predicted accuracy (89.0), ranked after the plan",
        "model n: lower risk-adjusted predicted accuracy (83.0 against 89.0)",
        "the same run with 2 epochs instead of 8: lower risk-adjusted predicted accuracy (79.0 against 89.0)",
        "the same run with 16 epochs instead of 8: predicted 40.0s x margin 1.00 exceeds the budget 20.0s",
    ]
    assert len(set(reasons)) == len(reasons)
