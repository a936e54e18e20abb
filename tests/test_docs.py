"""The documentation's examples run."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_embedding_example_runs(capsys):
    text = (DOCS / "EMBEDDING.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "EMBEDDING.md", "exec"), {})
    out = capsys.readouterr().out
    assert "predicted" in out and "AdaptorStats(observations=1" in out
