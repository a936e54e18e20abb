"""The replay on every table shape the format allows, the suite's variants, and the policy hedge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptor_service import Adaptor, PolicyHedge
from adaptor_service._experience import ExperienceTable
from benchmarks._policies import NasoaPolicy, Request
from benchmarks._quicktune import load_quicktune
from benchmarks._replay import _options, run_replay
from benchmarks._suite import (
    anonymise_models,
    final_epoch_only,
    model_family,
    run_suite,
    scale_task_times,
    size_and_classes_only,
    table_budgets,
)
from benchmarks._synthetic import synthetic_table
from nasoa_contracts import Candidate, CurvePoint, Observation, TaskSpec


@pytest.fixture(scope="module")
def quicktune_small(quicktune_data):  # type: ignore[no-untyped-def]
    table = load_quicktune()
    tasks = sorted(table.task_ids)[:4]
    keep = {(t, r.run_id) for t, runs in table.by_task().items() if t in tasks for r in runs[:12]}
    return ExperienceTable(tuple(r for r in table.runs if (r.task_id, r.run_id) in keep), "quicktune-small")


def test_a_single_row_run_is_one_candidate_at_its_recorded_epoch(quicktune_small) -> None:  # type: ignore[no-untyped-def]
    single = final_epoch_only(quicktune_small)
    assert all(len(r.curve) == 1 for r in single.runs)
    runs = single.by_task()[single.task_ids[0]]
    options = _options(runs)
    assert [o.epochs for o in options] == [(r.epochs,) for r in runs]
    policy = NasoaPolicy()
    request = Request(runs[0].task_id, runs[0].meta, 3600.0, options)
    candidates, _ = policy._candidates(request)
    assert [c.epochs for c in candidates] == [r.epochs for r in runs]  # never 1, 2, 3 ... of a 50-epoch run
    # a run with a curve is offered at the epochs the table recorded, and no further
    curve_options = _options(quicktune_small.by_task()[quicktune_small.task_ids[0]])
    assert all(max(o.epochs) == r.epochs for o, r in zip(curve_options, quicktune_small.runs, strict=False))


def test_replay_on_single_row_tables(quicktune_small) -> None:  # type: ignore[no-untyped-def]
    single = final_epoch_only(quicktune_small)
    result = run_replay(single, [3600.0, 57600.0], orders=1, seed=0, folds=2, searches=(), cold_start=False)
    for r in result.records:
        run = next(x for x in single.by_task()[r.task_id] if x.run_id == r.run_id)
        # a single-row run scores its recorded accuracy when it fits, 0 when it does not
        expected = run.curve[0].accuracy if run.curve[0].seconds <= r.budget_seconds else 0.0
        assert r.accuracy == expected
        assert r.accuracy <= r.oracle_accuracy + 1e-9
    assert math.isfinite(result.goal_first_visit_regret)


def test_one_run_per_task_every_policy_picks_it(quicktune_small) -> None:  # type: ignore[no-untyped-def]
    one = ExperienceTable(tuple(runs[0] for runs in quicktune_small.by_task().values()), "one-run-per-task")
    result = run_replay(one, [57600.0], orders=1, seed=0, folds=2, searches=(), cold_start=True)
    assert {r.regret for r in result.records} == {0.0}


def test_a_budget_nothing_fits_is_reported_and_left_out() -> None:
    table = synthetic_table(seed=1, n_tasks=4, n_models=6, runs_per_task=8)
    fastest = min(r.total_seconds for r in table.runs)
    result = run_replay(table, [fastest / 2, 1e9], orders=1, seed=0, folds=2, searches=(), cold_start=False)
    assert len(result.config["infeasible_requests"]) == 4  # every task at the tiny budget
    assert {r.budget_seconds for r in result.records} == {1e9}
    assert "no run whose first epoch fits" in result.format_table()
    with pytest.raises(ValueError, match="no run of any task fits"):
        run_replay(table, [fastest / 2], orders=1, folds=2, searches=(), cold_start=False)


def test_replay_of_models_unknown_to_the_zoo() -> None:
    table = synthetic_table(seed=2, n_tasks=6, n_models=10, runs_per_task=10)
    assert all(r.model.startswith("syn-model-") and len(r.curve) == 1 for r in table.runs)
    assert set(table.runs[0].meta) == {"num_samples", "num_classes"}
    totals = [r.total_seconds for r in table.runs]
    assert max(totals) / min(totals) > 30
    result = run_replay(table, table_budgets(table), orders=1, seed=0, folds=3, searches=("tpe",), cold_start=True)
    assert result.summary("oracle", "warm").mean_regret == 0.0
    assert math.isfinite(result.summary("nasoa", "cold").mean_regret)


def test_synthetic_table_is_seeded_and_exact() -> None:
    a, b = synthetic_table(seed=3, n_tasks=2, runs_per_task=5), synthetic_table(seed=3, n_tasks=2, runs_per_task=5)
    assert a.runs == b.runs
    assert synthetic_table(seed=4, n_tasks=2, runs_per_task=5).runs != a.runs
    with pytest.raises(ValueError):
        synthetic_table(n_tasks=0)


def test_variants_transform_what_they_say(quicktune_small) -> None:  # type: ignore[no-untyped-def]
    anonymous = anonymise_models(quicktune_small)
    assert {r.model for r in anonymous.runs}.isdisjoint({r.model for r in quicktune_small.runs})
    assert len({r.model for r in anonymous.runs}) == len({r.model for r in quicktune_small.runs})
    assert all(set(r.meta) == {"num_samples", "num_classes"} for r in size_and_classes_only(quicktune_small).runs)
    scaled = scale_task_times(quicktune_small)
    for task, runs in quicktune_small.by_task().items():
        ratios = {round(s.total_seconds / r.total_seconds, 9) for r, s in zip(runs, scaled.by_task()[task], strict=True)}
        assert len(ratios) == 1 and 0.1 <= ratios.pop() <= 10
    assert model_family("swinv2_base_window12to24_192to384_22kft1k") == "swin"


def test_suite_runs_a_variant_and_writes_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import benchmarks._suite as suite

    small = suite.Variant("tiny synthetic", lambda: synthetic_table(seed=5, n_tasks=6, n_models=8, runs_per_task=8),
                          quicktune_budgets=False)
    suite.VARIANTS["tiny"] = small
    try:
        rows = run_suite(["tiny"], orders=1, folds=2, out_dir=tmp_path, progress=lambda _m: None)
    finally:
        del suite.VARIANTS["tiny"]
    assert len(rows) == 1 and rows[0].n_tasks == 6
    assert (tmp_path / "suite.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "suite.png").stat().st_size > 1000
    assert rows[0].goals_met == (rows[0].nasoa_warm <= rows[0].best_prior and rows[0].nasoa_warm <= rows[0].random - 10
                                 and rows[0].accuracy_at_least_best_prior)
    with pytest.raises(ValueError, match="unknown suite variants"):
        run_suite(["nope"])


# ---------------------------------------------------------------------------- the hedge


def _feed(hedge: PolicyHedge, trust_nasoa: bool, tasks: int = 12, runs: int = 10, seed: int = 0) -> None:
    """Runs whose accuracy rises with lr; NASOA's predictions rank them right or backwards."""
    rng = np.random.default_rng(seed)
    for t in range(tasks):
        for _ in range(runs):
            lr = float(10 ** rng.uniform(-4, -1))
            accuracy = 40.0 + 15.0 * (math.log10(lr) + 4)
            predicted = accuracy if trust_nasoa else 100.0 - accuracy
            curve = (CurvePoint(5, accuracy, 100.0),)
            hedge.learn_one(f"t{t}", "m", {"lr": lr}, curve, [(predicted, 100.0)])


@pytest.mark.parametrize(("trust_nasoa", "expected"), [(True, "nasoa"), (False, "best-prior")])
def test_hedge_plans_with_the_policy_of_lower_prequential_regret(trust_nasoa: bool, expected: str) -> None:
    hedge = PolicyHedge()
    _feed(hedge, trust_nasoa)
    decision = hedge.decide(3600.0, 1.0)
    assert decision.policy == expected
    assert decision.tasks >= hedge.min_tasks
    assert "prequential regret" in decision.reason()
    assert hedge.describe() == (expected, decision.reason())
    # best-prior's pick: the highest learning rate among the configurations offered
    configs = [("m", {"lr": 1e-4}), ("m", {"lr": 5e-2}), ("m", {"lr": 1e-3})]
    assert hedge.best_prior_configs(configs, 3600.0).tolist() == [1]


def test_hedge_waits_for_evidence() -> None:
    hedge = PolicyHedge()
    _feed(hedge, trust_nasoa=False, tasks=2)
    assert hedge.decide(3600.0, 1.0).policy == "nasoa"  # fewer than min_tasks tasks: the predictors


def _observation(i: int, task: TaskSpec, lr: float, accuracy: float) -> Observation:
    candidate = Candidate("small", {"lr": lr, "batch_size": 64}, epochs=3)
    curve = tuple(CurvePoint(e, accuracy * e / 3, 2.0 * e) for e in (1, 2, 3))
    return Observation(f"job-{i}", task, candidate, accuracy, 6.0, curve)


def test_get_stats_says_which_policy_plans_and_why(served, digits_task) -> None:  # type: ignore[no-untyped-def]
    from clients import AdaptorClient

    adaptor, address = served
    tasks = [TaskSpec(f"builtin:t{t}", 30.0, {"num_samples": 500.0 + 50 * t, "num_classes": 10.0}, task_id=f"t{t}")
             for t in range(6)]
    observations = [_observation(10 * t + i, task, lr, 40.0 + 400.0 * lr)
                    for t, task in enumerate(tasks) for i, lr in enumerate((0.01, 0.03, 0.1))]
    assert adaptor.warm_start(observations) == len(observations)
    with AdaptorClient(address, timeout=10) as client:
        before = client.get_stats()
        assert (before.hedge_policy, before.hedge_reason) == ("nasoa", "no plan made yet")
        client.recommend(digits_task)
        stats = client.get_stats()
    assert stats.hedge_policy in ("nasoa", "best-prior")
    # the window: the results learned since there were half as many (the last 3 of 6 tasks)
    assert "prequential regret" in stats.hedge_reason and "over 3 tasks" in stats.hedge_reason
    assert (stats.hedge_policy, stats.hedge_reason) == adaptor.state.hedge.describe()


def test_adaptor_plans_with_best_prior_when_the_hedge_says_so(tiny_space, digits_task) -> None:  # type: ignore[no-untyped-def]
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    _feed(adaptor.state.hedge, trust_nasoa=False)  # evidence that the predictors rank backwards
    plan = adaptor.recommend(digits_task.__class__(digits_task.dataset_uri, 3600.0, digits_task.meta_features))
    assert adaptor.stats().hedge_policy == "best-prior"
    assert plan.candidate.hparams["lr"] == 0.1  # best-prior: the highest learning rate did best before


def test_cli_suite_refuses_an_unknown_variant(capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks.cli import main

    assert main(["replay", "--suite", "--variants", "a-final-epoch,nope"]) == 2
    assert "unknown suite variants ['nope']" in capsys.readouterr().err


def test_hedge_memory_is_bounded() -> None:
    hedge = PolicyHedge(max_runs=60)
    _feed(hedge, trust_nasoa=False, tasks=30, runs=5)  # 150 results through a hedge that keeps 60 at most
    assert 30 <= len(hedge) <= 60 and len(hedge.ranker) == len(hedge)
    assert all(((nb >= 0) & (nb < len(hedge))).all() for nb in hedge._neighbours)
    assert hedge.decide(3600.0, 1.0).policy == "best-prior"
    with pytest.raises(ValueError, match="max_runs"):
        PolicyHedge(max_runs=1)


def test_a_probe_is_censored_beyond_its_measured_seconds_and_one_run_with_its_continuation() -> None:
    """NASOA predicts its probes best; scoring their truncated curves as outcomes would charge it for probing."""
    hedge = PolicyHedge()
    for t in range(12):
        # NASOA predicts "lr 0.1" best; its 1-epoch probe stopped at 10 s (30 %)
        hedge.learn_one(f"t{t}", "m", {"lr": 0.1}, (CurvePoint(1, 30.0, 10.0),), [(95.0, 10.0)], censored=True)
        if t % 2 == 0:  # half the probes continue to 90 % in 100 s: one run with the probe
            hedge.learn_one(f"t{t}", "m", {"lr": 0.1}, (CurvePoint(10, 90.0, 100.0),), [(95.0, 100.0)])
        hedge.learn_one(f"t{t}", "m", {"lr": 0.001}, (CurvePoint(10, 60.0, 100.0),), [(50.0, 100.0)])
    assert len(hedge) == len(hedge.ranker) == 24  # the continued probes joined their runs
    assert hedge._curves[0] == (CurvePoint(1, 30.0, 10.0), CurvePoint(10, 90.0, 100.0))
    # At 200 s a probe never continued has no outcome: the recent window's 3 continued tasks
    # count, where NASOA's pick was the best run.
    decision = hedge.decide(200.0, 1.0)
    assert (decision.policy, decision.nasoa_regret, decision.tasks) == ("nasoa", 0.0, 3)
    assert np.isnan(hedge.ranker.percentiles(200.0)).sum() == 6
    # At 10 s every probe was measured to the budget: all 6 tasks of the window count.
    assert hedge.decide(10.0, 1.0).tasks == 6
    assert not np.isnan(hedge.ranker.percentiles(10.0)).any()


def test_in_best_prior_mode_runs_measured_on_the_task_still_compete(tiny_space, digits_task) -> None:  # type: ignore[no-untyped-def]
    adaptor = Adaptor.in_memory(candidate_space=tiny_space)
    _feed(adaptor.state.hedge, trust_nasoa=False)
    task = TaskSpec(digits_task.dataset_uri, 3600.0, digits_task.meta_features, task_id="seen")
    first = adaptor.recommend(task)
    assert adaptor.stats().hedge_policy == "best-prior" and first.candidate.hparams["lr"] == 0.1
    # The task measured another run at 99 %: a fact on this task, not a guess about it.
    other = next(c for c in tiny_space.table(task) if c.hparams["lr"] != 0.1)
    curve = tuple(CurvePoint(e, 90.0 + 3 * e, 1.0 * e) for e in range(1, other.epochs + 1))
    adaptor.observe(Observation("seen-1", task, other, curve[-1].accuracy, curve[-1].seconds, curve))
    assert adaptor.stats().hedge_policy == "best-prior"
    plan = adaptor.recommend(task)
    assert (plan.candidate.model, dict(plan.candidate.hparams)) == (other.model, dict(other.hparams))
