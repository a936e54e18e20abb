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
