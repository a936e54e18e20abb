"""The committed stubs are what scripts/generate_protos.sh makes from the .proto files."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts/generate_protos.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.name for p in (tmp_path / "nasoa_api/v1").iterdir())
    committed = sorted(p.name for p in (ROOT / "nasoa_api/v1").iterdir() if p.suffix in (".py", ".pyi"))
    assert generated == committed
    stale = [name for name in generated if not filecmp.cmp(tmp_path / "nasoa_api/v1" / name, ROOT / "nasoa_api/v1" / name, shallow=False)]
    assert not stale, f"stale stubs {stale}: run scripts/generate_protos.sh and commit"
