"""The embedding examples run as a user runs them: real fine-tuning, plain Python and over gRPC."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ROW = re.compile(r"^ [12] builtin:\S+ +8s +etnas-\S+ \d+ epochs lr \S+ +predicted +[\d.]+% in +[\d.]+s, "
                 r"got +[\d.]+% in +[\d.]+s$", re.M)


@pytest.mark.parametrize("script, summary", [
    ("embedded_scheduler.py", "adaptor: 50 results learned (48 from the shipped table)"),
    ("grpc_scheduler.py", "50 results learned, jobs {'DONE': 2}"),
])
def test_example_schedules_two_real_fine_tunings(script, summary):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--requests", "2"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, NASOA_TORCH_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(ROW.findall(proc.stdout)) == 2, proc.stdout
    assert summary in proc.stdout
