"""The replay benchmark on a small subset, the policies, and the predictors' common checks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from adaptor_service._predictors import AccuracyPredictor, TimePredictor, make_features
from benchmarks._policies import (
    BestPriorPolicy,
    HpSpace,
    HyperbandSearch,
    OraclePolicy,
    RandomPolicy,
    Request,
    TPESearch,
    Trajectory,
)
from benchmarks._quicktune import load_quicktune
from benchmarks._replay import PolicySummary, ReplayResult, _compute_ratio, _options, parse_budget, run_replay
from nasoa_contracts import Candidate, TaskSpec

needs_data = pytest.mark.usefixtures("quicktune_data")


@pytest.fixture(scope="module")
def small_table(quicktune_data):  # type: ignore[no-untyped-def]
    table = load_quicktune()
    tasks = sorted(table.task_ids)[:3]
    # a few runs per task keep the test fast; the protocol is unchanged
    keep = {r.run_id for t, runs in table.by_task().items() if t in tasks for r in runs[:25]}
    return type(table)(tuple(r for r in table.runs if r.run_id in keep), "quicktune-small")


@needs_data
def test_replay_small_subset(small_table, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "regret.png"
    result = run_replay(
        small_table, [1800.0, 14400.0], orders=2, seed=3, folds=3,
        search_horizon_factor=2.0, png_path=png,
    )
    assert png.stat().st_size > 1000
    data = json.loads(result.to_json())
    assert data["config"]["n_tasks"] == 3
    warm = [r for r in result.records if r.stream == "warm"]
    assert len(warm) == 3 * 2 * 2 * 5  # tasks x budgets x orders x policies
    assert all(r.seconds <= r.budget_seconds + 1e-9 for r in result.records)  # probes included
    assert all(r.accuracy <= r.oracle_accuracy + 1e-9 for r in result.records)
    oracle = result.summary("oracle", "warm")
    assert oracle.mean_regret == 0.0
    nasoa = result.summary("nasoa", "warm", 1800.0)
    assert nasoa.first_visit_n + nasoa.repeat_n == nasoa.n
    assert math.isfinite(result.goal_first_visit_regret)
    assert {c.search for c in result.compute_ratios} == {"tpe", "hyperband"}
    for ratio in result.compute_ratios:
        assert ratio.text().endswith("x")
        assert ratio.lower_bound == (ratio.seconds_needed is None)
        nasoa_used = result.summary("nasoa", "warm", ratio.budget_seconds).mean_seconds
        assert ratio.nasoa_seconds == nasoa_used
        assert ratio.ratio >= ratio.ratio_to_budget  # NASOA never uses more than its budget
    assert "goal metric" in result.format_table()
    # same seed, same figures
    again = run_replay(small_table, [1800.0, 14400.0], orders=2, seed=3, folds=3, searches=(), cold_start=False)
    assert again.summary("nasoa", "warm").mean_accuracy == pytest.approx(nasoa_mean(result))


def nasoa_mean(result) -> float:  # type: ignore[no-untyped-def]
    return result.summary("nasoa", "warm").mean_accuracy


@needs_data
def test_one_shot_policies_and_searches(small_table) -> None:  # type: ignore[no-untyped-def]
    runs = small_table.by_task()[small_table.task_ids[0]]
    request = Request(runs[0].task_id, runs[0].meta, 3600.0, _options(runs))
    oracle = OraclePolicy(small_table.runs).choose(request)
    best = max(r.outcome_within(3600.0)[0] for r in runs)
    assert runs[oracle].outcome_within(3600.0)[0] == best
    assert 0 <= RandomPolicy(seed=1).choose(request) < len(runs)
    space = HpSpace([(r.model, r.hparams) for r in small_table.runs])
    prior = BestPriorPolicy(space)
    prior.warm_start([r for r in small_table.runs if r.task_id != runs[0].task_id])
    assert 0 <= prior.choose(request) < len(runs)
    copy.deepcopy(prior)
    for search in (TPESearch(space), HyperbandSearch(space)):
        trajectory = search.search(runs, 4 * 3600.0, seed=0)
        assert trajectory.best_within(4 * 3600.0) <= best_overall(runs)
        assert list(trajectory.seconds) == sorted(trajectory.seconds)
        assert trajectory.seconds[-1] <= 4 * 3600.0


@needs_data
def test_searches_are_reproducible(small_table) -> None:  # type: ignore[no-untyped-def]
    runs = small_table.by_task()[small_table.task_ids[0]]
    space = HpSpace([(r.model, r.hparams) for r in small_table.runs])
    for search in (TPESearch(space), HyperbandSearch(space)):
        first = search.search(runs, 64 * 3600.0, seed=3)
        again = search.search(runs, 64 * 3600.0, seed=3)
        assert (first.seconds, first.best) == (again.seconds, again.best), search.name


def best_overall(runs) -> float:  # type: ignore[no-untyped-def]
    return max(p.accuracy for r in runs for p in r.curve)


def test_compute_ratio_divides_by_the_compute_nasoa_used() -> None:
    def nasoa(accuracy: float, used: float) -> PolicySummary:
        return PolicySummary("nasoa", "warm", 3600.0, 4, accuracy, 0.0, 2, 0.0, 2, 0.0, used)

    # two tasks: the search's mean accuracy reaches 70 at 7,200 s (mean of 80 and 60)
    searches = [Trajectory((1800.0, 7200.0), (50.0, 80.0)), Trajectory((3600.0,), (60.0,))]
    matched = _compute_ratio("tpe", searches, nasoa(70.0, 900.0), horizon=36000.0)
    assert (matched.seconds_needed, matched.lower_bound) == (7200.0, False)
    assert (matched.ratio, matched.ratio_to_budget) == (8.0, 2.0)
    assert (matched.text(), matched.budget_text()) == ("8.0x", "2.0x")
    never = _compute_ratio("tpe", searches, nasoa(75.0, 1800.0), horizon=36000.0)
    assert (never.seconds_needed, never.lower_bound, never.ratio) == (None, True, 20.0)
    assert never.text() == ">= 20.0x"
    free = _compute_ratio("tpe", searches, nasoa(70.0, 0.0), horizon=36000.0)
    assert math.isinf(free.ratio) and free.text() == "n/a (NASOA used no measured time)"
    result = ReplayResult({}, [], [], [free], [], {}, math.nan)
    assert json.loads(result.to_json())["compute_ratios"][0]["ratio"] is None  # strict JSON


def test_parse_budget() -> None:
    assert parse_budget("16h") == 57600.0
    with pytest.raises(ValueError, match="is not a duration"):
        parse_budget("soon")


# ---- predictors: River-style common checks, plus equal predictions after pickling


def _stream(n: int = 60) -> list[tuple[dict[str, float], float, float]]:
    out = []
    for i in range(n):
        task = TaskSpec("builtin:t", 100, {"num_samples": 500.0 + 100 * (i % 3), "num_classes": 10.0})
        cand = Candidate(
            ["a", "b"][i % 2], {"lr": 10 ** -(1 + i % 4), "opt": ["sgd", "adam"][i % 2], "batch_size": 32},
            epochs=1 + i % 5,
        )
        x = make_features(task, cand)
        acc = 50 + 10 * (i % 2) - 3 * (i % 4) + cand.epochs
        secs = 10.0 * cand.epochs * (2 if cand.model == "b" else 1)
        out.append((x, float(acc), secs))
    return out


def test_time_predictor_learns_log_linear_time() -> None:
    model = TimePredictor()
    data = _stream(200)
    for x, _, secs in data:
        model.learn_one(x, secs)
    x, _, secs = data[-1]
    mean, std = model.predict_dist(x)
    assert abs(math.log(mean / secs)) < 0.1 and std >= 0


def test_time_predictor_uses_physics_prior() -> None:
    task = TaskSpec("builtin:t", 100, {"num_samples": 500.0})
    model = TimePredictor()
    for epochs in range(1, 30):
        cand = Candidate("a", {"lr": 0.1}, epochs=epochs, prior_seconds=5.0 * epochs)
        model.learn_one(make_features(task, cand), 10.0 * epochs)  # twice the prior
    cand = Candidate("a", {"lr": 0.1}, epochs=40, prior_seconds=200.0)
    assert model.predict_one(make_features(task, cand)) == pytest.approx(400.0, rel=0.1)


def test_accuracy_predictor_ranks_within_a_new_task() -> None:
    model = AccuracyPredictor()
    for x, acc, _ in _stream(300):
        model.learn_one(x, acc)
    task = TaskSpec("builtin:new", 100, {"num_samples": 4321.0, "num_classes": 10.0})
    good = make_features(task, Candidate("b", {"lr": 0.1, "opt": "adam", "batch_size": 32}, epochs=5))
    bad = make_features(task, Candidate("a", {"lr": 0.001, "opt": "sgd", "batch_size": 32}, epochs=1))
    assert model.predict_one(good) > model.predict_one(bad)


@needs_data
def test_predictor_lab_runs_the_protocol(small_table) -> None:  # type: ignore[no-untyped-def]
    from benchmarks._predictor_lab import CONFIGS, run_lab

    result = run_lab(CONFIGS["default"], small_table, budgets=[1800.0, 14400.0], folds=3, use_folds=[0], orders=2)
    n = sum(len(v) for v in result.first.values()) + sum(len(v) for v in result.repeat.values())
    assert n == 1 * 2 * 2  # one held-out task x budgets x orders
    assert sum(len(v) for v in result.first.values()) == 2  # one first visit per order
    assert math.isfinite(result.all_mean()) and result.all_mean() >= 0
    assert result.time_log_errors and "first" in result.line()


@needs_data
def test_time_error_scores_every_held_out_point(small_table) -> None:  # type: ignore[no-untyped-def]
    from adaptor_service import sample_curve
    from benchmarks._time_error import time_error

    result = time_error(small_table, folds=3)
    assert result.points == sum(1 for r in small_table.runs for p in sample_curve(r.curve) if p.seconds > 0)
    assert 0.0 < result.median_log_error < 3.0 and 0.0 <= result.coverage_90 <= 1.0
    assert "held-out points" in result.line("small")
