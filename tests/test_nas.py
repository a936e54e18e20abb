"""Offline NAS: the sampler, a tiny search, resuming, seeding, and the zoo benchmark's matching.

Everything runs on a tiny proxy budget (a few steps on 64 generated images) so the module
takes well under a minute on a 2-core CPU.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("torch")

from benchmarks._zoo_bench import ZooCandidate, match_baselines, run_zoo_benchmark  # noqa: E402
from zoo_store import ETNAS, ETNASEncoding  # noqa: E402
from zoo_store.offline import (  # noqa: E402
    ProxyRecipe,
    SearchConfigError,
    SearchSpace,
    decode,
    load_search,
    run_search,
    sample_encodings,
    suggest_encoding,
)

TINY_SOURCE = "builtin:patterns?train=64&test=32&seed=3"
TINY_SPACE = SearchSpace(base_widths=(8, 16), max_mmacs=2.0, stages=(2, 3))
TINY = dict(
    proxy_steps=2,
    batch_size=8,
    baselines=False,
    progress=None,
    source_uri=TINY_SOURCE,
    space=TINY_SPACE,
    population_size=4,
    timing_warmup=1,
    timing_repeats=2,
)

#: Every gene of the default space; decodes to "000-_8_1-1".
VALID_GENES = {
    "n_layers": 2,
    "op_0": 0,
    "width_0": 0,
    "op_1": 0,
    "op_2": 0,
    "op_3": 0,
    "width_1": 2,
    "width_2": 2,
    "base": 8,
    "n_stages": 2,
    "skip_0_kind": "none",
    "skip_0_from": 0,
    "skip_0_to": 1,
    "skip_1_kind": "none",
    "skip_1_from": 0,
    "skip_1_to": 1,
    "blocks_0": 1,
    "mult_0": 1,
    "mult_at_0": "first",
    "blocks_1": 1,
    "mult_1": 1,
    "mult_at_1": "first",
    "blocks_2": 1,
    "mult_2": 1,
    "mult_at_2": "first",
    "blocks_3": 1,
    "mult_3": 1,
    "mult_at_3": "first",
}


def test_sampler_yields_only_valid_encodings() -> None:
    space = SearchSpace()
    encodings = sample_encodings(16, seed=7, space=space)
    assert len(set(encodings)) == 16
    for text in encodings:
        encoding = ETNASEncoding.parse(text)  # raises if invalid
        assert str(encoding) == text
        assert 1 <= encoding.num_layers <= space.max_layers
        assert encoding.base_channels in space.base_widths
        assert encoding.num_stages in space.stages
        assert all(1 <= n <= space.max_blocks_per_stage for n in encoding.blocks_per_stage)
    # And they build: a few forward passes at the search's input size.
    import torch

    for text in encodings[:3]:
        assert ETNAS(text, num_classes=4)(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_invalid_points_are_pruned_not_crashed() -> None:
    from zoo_store import InvalidEncodingError
    from zoo_store.offline._space import propose

    params = {
        "n_layers": 2,
        "op_0": 3,
        "width_0": 0,
        "op_1": 0,
        "base": 8,
        "n_stages": 2,
        "blocks_0": 1,
        "mult_0": 1,
        "blocks_1": 1,
        "mult_1": 1,
    }
    # conv3x3 with 4 groups into 8 * 2**0 / 4 = 2 channels: not divisible.
    with pytest.raises(InvalidEncodingError):
        decode(params, SearchSpace())
    genes = {**VALID_GENES, "op_0": 3}
    encoding, reason = propose(optuna.trial.FixedTrial(genes), SearchSpace(), set())
    assert encoding is None and reason.startswith("invalid:") and "groups" in reason
    valid = VALID_GENES
    encoding, reason = propose(optuna.trial.FixedTrial(valid), SearchSpace(), set())
    assert encoding == "000-_8_1-1"
    encoding, reason = propose(optuna.trial.FixedTrial(valid), SearchSpace(), {"000-_8_1-1"})
    assert encoding is None and reason.startswith("duplicate")


def test_same_seed_same_encodings_other_seed_others() -> None:
    first = sample_encodings(6, seed=3)
    assert first == sample_encodings(6, seed=3)
    assert first != sample_encodings(6, seed=4)


def test_tiny_search_writes_outputs(tmp_path: Path) -> None:
    result = run_search(tmp_path / "run", n_trials=3, seed=0, **TINY)
    run = tmp_path / "run"
    assert len(result.evaluated) == 3 and result.new_trials == 3
    assert result.front and set(result.front) <= set(result.evaluated)
    for name in ("pareto.json", "pareto.csv", "pareto.png", "trials.csv", "study.db", "run.json"):
        assert (run / name).stat().st_size > 0, name
    front = json.loads((run / "pareto.json").read_text())["front"]
    assert {row["encoding"] for row in front} == {r.architecture for r in result.front}
    for row in front:
        assert set(row) >= {"encoding", "params_m", "mmacs", "accuracy", "step_ms"}
        ETNASEncoding.parse(row["encoding"])
    with (run / "pareto.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(result.front)
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_search(run).front == result.front


def test_resume_evaluates_only_missing_trials(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = run_search(run, n_trials=2, seed=1, **TINY)
    assert first.new_trials == 2
    second = run_search(run, n_trials=4, seed=1, **TINY)
    assert second.new_trials == 2 and len(second.evaluated) == 4
    assert {r.architecture for r in first.evaluated} < {r.architecture for r in second.evaluated}
    assert len({r.architecture for r in second.evaluated}) == 4  # no re-evaluated duplicates
    again = run_search(run, n_trials=4, seed=1, **TINY)
    assert again.new_trials == 0 and len(again.evaluated) == 4


def test_killed_trial_is_evaluated_again_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_search(run, n_trials=1, seed=2, **TINY)
    storage = optuna.storages.RDBStorage(f"sqlite:///{run / 'study.db'}")
    study = optuna.load_study(study_name="nasoa-offline-nas", storage=storage)
    # Simulate a kill mid-trial: a trial left RUNNING with its parameters suggested.
    study.enqueue_trial({**VALID_GENES, "op_0": 1, "width_0": 3})
    interrupted = suggest_encoding(study.ask(), TINY_SPACE)
    assert interrupted == "130-_8_1-1"
    result = run_search(run, n_trials=2, seed=2, **TINY)
    states = [t.state for t in optuna.load_study(study_name="nasoa-offline-nas", storage=storage).get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states
    assert result.new_trials == 1
    assert interrupted in {r.architecture for r in result.evaluated}


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_search(run, n_trials=1, seed=0, **TINY)
    with pytest.raises(SearchConfigError, match="new run directory"):
        run_search(run, n_trials=1, seed=1, **TINY)


def test_match_baselines_picks_fastest_as_accurate() -> None:
    rows = match_baselines(
        {"resnet18": (50.0, 300.0), "mobilenet_v3_small": (90.0, 200.0)},
        {"a": ("e1", 49.0, 10.0), "b": ("e2", 55.0, 30.0), "c": ("e3", 60.0, 200.0)},
    )
    assert (rows[0].zoo_model, rows[0].ratio, rows[0].meets_goal) == ("b", 10.0, True)
    assert rows[1].zoo_model is None and rows[1].meets_goal is False


def test_zoo_benchmark_on_a_tiny_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_search(run, n_trials=2, seed=0, **{**TINY, "baselines": ("mobilenet_v3_small",)})
    report = run_zoo_benchmark(run, baselines=("mobilenet_v3_small",), rounds=1)
    assert report["benchmark"] == "zoo"
    assert report["timing"]["same_process"] is True
    (row,) = report["rows"]
    assert row["baseline"] == "mobilenet_v3_small"
    assert set(row) >= {"baseline_accuracy", "baseline_step_ms", "zoo_model", "zoo_accuracy", "zoo_step_ms", "ratio"}
    # Recorded accuracies of the same recipe are reused, nothing is retrained.
    assert report["accuracy_source"]["trained_in_this_process"] == []
    # Zoo entries that the run did not evaluate are proxy-trained with the run's recipe.
    entry = ZooCandidate("tiny", "1-_8_1-1")
    report = run_zoo_benchmark([entry], run_dir=run, baselines=("mobilenet_v3_small",), rounds=1)
    assert report["accuracy_source"]["trained_in_this_process"] == ["tiny"]
    assert report["recipe"] == ProxyRecipe.from_dict(report["recipe"]).to_dict()
