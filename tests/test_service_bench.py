"""``nasoa-bench service`` run as a user runs it, with small numbers: every figure comes out."""

from __future__ import annotations

import json
import subprocess
import sys


def test_service_benchmark_reports_every_figure():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "service", "--calls", "5", "--observations", "40", "--warm", "20",
         "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["candidates"] == 3024
    for path in ("recommend_direct", "recommend_grpc", "recommend_grpc_other_process"):
        assert report[path]["calls"] == 5 and 0 < report[path]["p50_ms"] <= report[path]["p99_ms"]
    for rate in ("observe_direct_per_s", "observe_grpc_per_s", "observe_grpc_sqlite_per_s",
                 "observe_grpc_sqlite_learned_per_s"):
        assert report[rate] > 0


def test_load_benchmark_counts_exactly_and_writes_its_timeline(tmp_path):
    timeline = tmp_path / "timeline.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "load", "--clients", "2", "--streams", "1", "--seconds", "4",
         "--timeline", str(timeline), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == 0 and report["counts_match"] is True
    assert report["jobs_submitted"] == report["jobs_done"] > 0
    header, *rows = timeline.read_text().splitlines()
    assert header == "seconds,call,latency_ms"
    calls = [row.split(",")[1] for row in rows]
    assert calls.count("Submit") == report["jobs_submitted"] and calls.count("Recommend") >= calls.count("Submit")
    assert all(0 <= float(row.split(",")[0]) < 10 and float(row.split(",")[2]) > 0 for row in rows)
