"""The batch-ceiling diagnostic's options: the known/pool split and argument checks."""

from __future__ import annotations

import math

import pytest

from adaptor_service._experience import ExperienceRun, ExperienceTable
from benchmarks._batch_ceiling import (
    MODES,
    _known_split,
    _Models,
    _two_step_outcome,
    first_visit_regret,
    main,
    similarity_weights,
)
from benchmarks._replay import _split_folds
from nasoa_contracts import CurvePoint

SETTINGS = {"max_iter": 5, "learning_rate": 0.1, "l2_regularization": 1.0, "early_stopping": False, "random_state": 0}


def _run(name: str, accuracies: list[float], task: str = "t") -> ExperienceRun:
    """Epochs of 100 s each."""
    curve = tuple(CurvePoint(e, a, 100.0 * e) for e, a in enumerate(accuracies, start=1))
    return ExperienceRun(task, name, "m", {"num_samples": 100.0, "num_classes": 5.0}, {"lr": 0.01}, curve)


def test_a_two_step_pick_continues_the_best_probe_and_pays_for_the_others() -> None:
    slow_start = _run("slow", [10, 20, 30, 40, 50])
    fast_start = _run("fast", [60, 61, 62, 63, 64])
    best = _run("best", [5, 10, 20, 50, 95])
    runs = [slow_start, fast_start, best]
    # 12 rows, under min_samples_leaf: every run is predicted alike, so the ranking is the pool order
    models = _Models(runs, SETTINGS, true_time=True)
    pool = [0, 1, 2]
    assert models.regrets(runs, pool, [1000.0]) == [95 - 50]  # one shot: the first run
    assert models.regrets(runs, pool, [1000.0], probe=2) == [95 - 64]  # "fast" wins the probe
    # at 550 s the losing probe's 100 s leave "fast" 450 s: four epochs
    assert models.regrets(runs, pool, [550.0], probe=2) == [95 - 63]


def test_probes_stay_within_the_budget() -> None:
    slow_start = _run("slow", [10, 20, 30, 40, 50])
    fast_start = _run("fast", [60, 61, 62, 63, 64])
    best = _run("best", [5, 10, 20, 50, 95])
    # two 500 s probes spend the budget: the third is never started, "fast" keeps its checkpoint
    assert _two_step_outcome([slow_start, fast_start, best], 1000.0, probe_epochs=5) == 64
    # "slow" takes 500 of 550 s; "fast" cannot finish an epoch in the 50 s left, so "slow" goes on
    assert _two_step_outcome([slow_start, fast_start], 550.0, probe_epochs=5) == 50
    # a run shorter than the probe (one point, at epoch 3) is charged and judged on what it has
    short = ExperienceRun("t", "short", "m", {}, {}, (CurvePoint(3, 70.0, 300.0),))
    assert _two_step_outcome([short, slow_start], 400.0, probe_epochs=2) == 70
    assert _two_step_outcome([best], 50.0, probe_epochs=1) == 0.0  # no epoch fits at all


def test_known_runs_are_never_picked_and_the_oracle_is_the_pool_best() -> None:
    # five tasks; in each, run 0 is by far the best, the others reach at most 50
    runs = [
        _run(f"r{i}", [20.0 + i, 99.0] if i == 0 else [10.0 + i, 40.0 + i], task=f"task{t}")
        for t in range(5) for i in range(6)
    ]
    table = ExperienceTable(tuple(runs), "synthetic")
    best_known = [t for t in range(5) if 0 in _known_split(f"task{t}", 6, 0.5, seed=1)[0]]
    assert best_known  # the check below is not empty
    budgets = [1000.0]
    for mode in MODES:
        regrets = first_visit_regret(table, folds=5, seed=1, budgets=budgets, known_fraction=0.5, mode=mode,
                                     max_iter=5)[1000.0]
        assert len(regrets) == 5 and min(regrets) >= 0, mode
        for task_index in best_known:  # the pool's best reaches at most 45: so does the regret
            tasks = sorted(f"task{t}" for t in range(5))
            assert regrets[_fold_position(tasks, f"task{task_index}", seed=1)] <= 45, (mode, task_index)


def _fold_position(tasks: list[str], task_id: str, seed: int) -> int:
    """Where a task's regret is in first_visit_regret's list: held-out folds in order."""
    order = [t for fold in _split_folds(tasks, 5, seed) for t in fold]
    return order.index(task_id)


def test_known_split_is_seeded_disjoint_and_complete() -> None:
    known, pool = _known_split("PNU", 10, 0.5, seed=3)
    assert len(known) == 5 and sorted(known + pool) == list(range(10))
    assert _known_split("PNU", 10, 0.5, seed=3) == (known, pool)
    assert _known_split("PNU", 10, 0.5, seed=4) != (known, pool)
    assert _known_split("RSD", 10, 0.5, seed=3) != (known, pool)  # each task its own split


def test_known_split_keeps_a_pool_and_at_least_one_known_run() -> None:
    assert _known_split("t", 4, 0.0, seed=0) == ([], [0, 1, 2, 3])
    known, pool = _known_split("t", 3, 0.01, seed=0)
    assert (len(known), len(pool)) == (1, 2)
    known, pool = _known_split("t", 3, 0.99, seed=0)
    assert (len(known), len(pool)) == (2, 1)
    with pytest.raises(ValueError, match="task 't' has 1 run: a known fraction needs at least 2"):
        _known_split("t", 1, 0.5, seed=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "oracle"}, "mode must be one of zero-shot, with-task, own-only"),
        ({"known_fraction": 1.0}, r"known_fraction must be in \[0, 1\)"),
        ({"known_fraction": -0.1}, r"known_fraction must be in \[0, 1\)"),
        ({"mode": "own-only"}, "needs a known_fraction above 0"),
        ({"probe": 0}, "probe and probe_epochs must be at least 1"),
        ({"probe_epochs": 0}, "probe and probe_epochs must be at least 1"),
        ({"similarity_width": -1.0}, r"similarity_width must be at least 0 \(0: unweighted\), got -1.0"),
        ({"similarity_width": float("nan")}, "similarity_width must be at least 0"),
        ({"similarity_width": 1.0, "mode": "with-task", "known_fraction": 0.5},
         "similarity_width needs mode 'zero-shot', got 'with-task'"),
    ],
)
def test_bad_options_are_refused_before_any_work(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        first_visit_regret("no-such-table", **options)


def test_cli_refuses_an_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--mode", "oracle"])
    assert "invalid choice: 'oracle'" in capsys.readouterr().err


def test_similarity_weights_fall_with_the_distance_between_meta_features() -> None:
    meta = {"here": {"num_samples": 100.0, "num_classes": 10.0},
            "near": {"num_samples": 200.0, "num_classes": 10.0},
            "far": {"num_samples": 100_000.0, "num_classes": 10.0}}
    weights = similarity_weights(meta, "here", width=1.0)
    assert weights["here"] == 1.0
    assert 1.0 > weights["near"] > weights["far"] > 0.0
    assert weights["near"] == pytest.approx(math.exp(-math.log(2) ** 2 / 2))
    wider = similarity_weights(meta, "here", width=2.0)
    assert wider["near"] == pytest.approx(math.exp(-math.log(2) ** 2 / 8))
    assert wider["far"] > weights["far"]
    for width in (0.0, float("nan")):
        with pytest.raises(ValueError, match="width must be a number above 0"):
            similarity_weights(meta, "here", width=width)
    with pytest.raises(ValueError, match="task 'zero' has a meta-feature at or below 0"):
        similarity_weights({**meta, "zero": {"num_samples": 0.0, "num_classes": 10.0}}, "here", width=1.0)
    with pytest.raises(ValueError, match="task 'odd' has no meta-feature num_classes: cannot compare it with 'here'"):
        similarity_weights({**meta, "odd": {"num_samples": 5.0}}, "here", width=1.0)


def test_task_weights_decide_which_past_task_the_accuracy_model_follows() -> None:
    def runs_of(task: str, good_lr: float) -> list[ExperienceRun]:
        meta = {"num_samples": 100.0, "num_classes": 5.0}
        return [
            ExperienceRun(task, f"{task}-{lr}-{i}", "m", meta, {"lr": lr},
                          (CurvePoint(1, 40.0, 100.0), CurvePoint(2, 90.0 if lr == good_lr else 10.0, 200.0)))
            for lr in (0.1, 0.001) for i in range(10)
        ]

    # two past tasks that look the same and disagree; the new task agrees with "a"
    past = runs_of("a", good_lr=0.1) + runs_of("b", good_lr=0.001)
    new = runs_of("c", good_lr=0.1)
    pool = list(range(len(new)))
    models = _Models(past, SETTINGS, true_time=True)
    follow_a = models.reweighted({"a": 1.0, "b": 1e-6})
    follow_b = models.reweighted({"a": 1e-6, "b": 1.0})
    assert follow_a.regrets(new, pool, [1000.0]) == [0.0]
    assert follow_b.regrets(new, pool, [1000.0]) == [90.0 - 40.0]  # the wrong lr: its best is epoch 1


def test_a_similarity_width_weighs_past_tasks_for_each_held_out_task(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks._batch_ceiling as batch_ceiling

    runs = [_run(f"r{i}", [10.0 + i, 40.0 + i], task=f"task{t}") for t in range(5) for i in range(4)]
    calls: list[tuple[str, float]] = []
    fits: list[str] = []
    reweightings: list[frozenset[str]] = []
    real_weights, real_models = batch_ceiling.similarity_weights, batch_ceiling._Models

    def spy_weights(meta, target, width):  # type: ignore[no-untyped-def]
        calls.append((target, width))
        return real_weights(meta, target, width)

    class SpyModels(real_models):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            fits.append("fit")
            super().__init__(*args, **kwargs)

        def reweighted(self, task_weight):  # type: ignore[no-untyped-def]
            reweightings.append(frozenset(task_weight))
            return super().reweighted(task_weight)

    monkeypatch.setattr(batch_ceiling, "similarity_weights", spy_weights)
    monkeypatch.setattr(batch_ceiling, "_Models", SpyModels)
    table = ExperienceTable(tuple(runs), "synthetic")
    first_visit_regret(table, folds=5, seed=0, budgets=[1000.0], max_iter=5, similarity_width=0.5)
    assert sorted(calls) == [(f"task{t}", 0.5) for t in range(5)]  # once per held-out task
    assert len(fits) == 5  # one fit per fold (its rows, features and time model are shared)
    assert reweightings == [frozenset(f"task{t}" for t in range(5))] * 5


def test_the_cli_passes_the_similarity_width_on(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks._batch_ceiling as batch_ceiling

    seen: dict[str, object] = {}

    def fake_regret(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return {1800.0: [1.0]}

    monkeypatch.setattr(batch_ceiling, "first_visit_regret", fake_regret)
    main(["--similarity-width", "0.5"])
    assert seen["similarity_width"] == 0.5
    assert "first-visit regret 1.0" in capsys.readouterr().out
