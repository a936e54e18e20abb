"""The batch-ceiling diagnostic's options: the known/pool split and argument checks."""

from __future__ import annotations

import pytest

from benchmarks._batch_ceiling import _known_split, first_visit_regret, main


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
    ],
)
def test_bad_options_are_refused_before_any_work(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        first_visit_regret("no-such-table", **options)


def test_cli_refuses_an_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--mode", "oracle"])
    assert "invalid choice: 'oracle'" in capsys.readouterr().err
