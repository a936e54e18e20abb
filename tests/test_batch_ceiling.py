"""The batch-ceiling diagnostic's options: the known/pool split and argument checks."""

from __future__ import annotations

import pytest

from adaptor_service._experience import ExperienceRun
from adaptor_service._types import CurvePoint
from benchmarks._batch_ceiling import _known_split, _Models, first_visit_regret, main

SETTINGS = {"max_iter": 5, "learning_rate": 0.1, "l2_regularization": 1.0, "early_stopping": False, "random_state": 0}


def _run(name: str, accuracies: list[float]) -> ExperienceRun:
    """Five epochs of 100 s each."""
    curve = tuple(CurvePoint(e, a, 100.0 * e) for e, a in enumerate(accuracies, start=1))
    return ExperienceRun("t", name, "m", {"num_samples": 100.0, "num_classes": 5.0}, {"lr": 0.01}, curve)


def test_a_two_step_pick_continues_the_best_probe_and_pays_for_the_others() -> None:
    slow_start = _run("slow", [10, 20, 30, 40, 50])
    fast_start = _run("fast", [60, 61, 62, 63, 64])
    best = _run("best", [5, 10, 20, 50, 95])
    runs = [slow_start, fast_start, best]
    # 15 rows, under min_samples_leaf: every run is predicted alike, so the ranking is the pool order
    models = _Models(runs, SETTINGS, true_time=True)
    pool = [0, 1, 2]
    assert models.regrets(runs, pool, [1000.0]) == [95 - 50]  # one shot: the first run
    assert models.regrets(runs, pool, [1000.0], probe=2) == [95 - 64]  # "fast" wins the probe
    # at 550 s the losing probe's 100 s leave "fast" 450 s: four epochs
    assert models.regrets(runs, pool, [550.0], probe=2) == [95 - 63]
    # probing five epochs spends 500 s on "slow", and "fast" then has no time for an epoch
    assert models.regrets(runs, pool, [550.0], probe=2, probe_epochs=5) == [95.0]


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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "oracle"}, "mode must be one of zero-shot, with-task, own-only"),
        ({"known_fraction": 1.0}, r"known_fraction must be in \[0, 1\)"),
        ({"known_fraction": -0.1}, r"known_fraction must be in \[0, 1\)"),
        ({"mode": "own-only"}, "needs a known_fraction above 0"),
        ({"probe": 0}, "probe and probe_epochs must be at least 1"),
        ({"probe_epochs": 0}, "probe and probe_epochs must be at least 1"),
    ],
)
def test_bad_options_are_refused_before_any_work(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        first_visit_regret("no-such-table", **options)


def test_cli_refuses_an_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--mode", "oracle"])
    assert "invalid choice: 'oracle'" in capsys.readouterr().err
