"""``nasoa-bench artifacts`` run as a user runs it, with small numbers: every figure comes out."""

from __future__ import annotations

import json
import subprocess
import sys


def test_artifact_benchmark_reports_throughput_against_a_copy():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "artifacts", "--no-jobs", "--size-mb", "2", "--repeats", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["repeats"] == 1 and report["size_mb"] == 2.0
    for figure in ("copy_mb_s", "upload_mb_s", "download_mb_s", "upload_vs_copy", "download_vs_copy"):
        assert report[figure] > 0, figure
