"""The live benchmark's request stream, policies and summary (the stream itself runs real fine-tuning)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks._live import LIVE_POLICIES, LivePolicyResult, format_live, live_json
from clients.demo import StreamRow, budget_ladder, request_stream, summarize


def test_the_default_stream_has_24_requests_from_10_s_to_2_min_over_every_dataset():
    stream = request_stream(24, budget_ladder(10, 120))
    budgets = sorted({b for _, b in stream})
    assert len(stream) == 24 and budgets[0] == 10 and budgets[-1] == 120 and len(budgets) == 6
    for dataset in {d for d, _ in stream}:
        assert len({b for d, b in stream if d == dataset}) >= 4  # every dataset meets short and long budgets


def _row(budget: float, accuracy: float, worker_seconds: float, stages: int = 1, state: str = "DONE") -> StreamRow:
    return StreamRow("builtin:digits", budget, "m e3", 80.0, accuracy, 5.0, min(worker_seconds, budget), state,
                     worker_seconds=worker_seconds, stages=stages, child_jobs=4 if stages > 1 else 0)


def test_summary_counts_the_worker_seconds_of_all_runs_against_the_budget():
    rows = [_row(10, 90, 5), _row(20, 80, 20), _row(40, 70, 30, stages=2), _row(60, 60, 66, stages=2),
            _row(30, 0, math.nan, state="FAILED")]
    summary = summarize(rows)
    shares = sorted([0.5, 1.0, 0.75, 1.1])
    assert summary["budget_share_mean"] == pytest.approx(sum(shares) / 4)
    assert summary["budget_share_p10"] == pytest.approx(0.5 + 0.3 * 0.25)  # numpy's linear percentile
    assert summary["budget_overruns"] == 1  # the staged job whose runs took 66 s of 60
    assert summary["staged_jobs"] == 2 and summary["done"] == 4 and summary["mean_accuracy"] == 75


def test_the_table_and_json_show_the_budget_used_per_policy():
    rows = [_row(10, 90, 5), _row(20, 80, 20)]
    results = [LivePolicyResult("nasoa", summarize(rows), rows), LivePolicyResult("asha", summarize(rows[:1]), rows[:1])]
    table = format_live(results)
    assert "budget used mean/p10" in table and "75% / 55%" in table and "50% / 50%" in table
    assert "nasoa - asha: +-5.0 accuracy points" not in table and "nasoa - asha: -5.0 accuracy points" in table
    data = json.loads(live_json(results))
    assert data[0]["summary"]["budget_share_p10"] == pytest.approx(0.55)
    assert data[0]["rows"][0]["worker_seconds"] == 5


def test_policies_map_to_the_adaptor_setting_and_unknown_ones_are_refused():
    assert LIVE_POLICIES["nasoa-one-shot"] == "one-shot" and LIVE_POLICIES["asha"] == "asha"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "live", "--policies", "nasoa,bohb"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown policies ['bohb']" in proc.stderr
