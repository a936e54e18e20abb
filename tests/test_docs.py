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


REPO = DOCS.parent
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
# Paths the docs name in backticks or links: `dir/file.ext` or (dir/file.ext).
_PATH = re.compile(r"[`(]((?:[\w.-]+/)+[\w.-]+\.(?:md|py|proto|toml|jsonl|csv|json|sh|png|txt))[`)#]")


def test_docs_cite_only_files_that_exist():
    missing = []
    for page in PAGES:
        for target in _PATH.findall(page.read_text()):
            if target.startswith(("http", "/")) or "*" in target or target.split("/")[0].isupper():
                continue
            if not ((REPO / target).exists() or (page.parent / target).exists()):
                missing.append(f"{page.name}: {target}")
    assert not missing, missing


def test_markdown_links_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert not broken, broken


def test_settings_page_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("settings_doc", REPO / "scripts" / "settings_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "SETTINGS.md").read_text() == module.render(), "run: python scripts/settings_doc.py"


def test_history_lives_in_git_not_in_docs_or_code():
    # Work logs (a numbered session or issue) belong in commit messages.
    pattern = re.compile(r"\b(session|issue)s? \d+\b", re.I)
    files = PAGES + [p for pkg in ("nasoa_contracts", "nasoa_data", "adaptor_service", "zoo_store", "worker",
                                   "clients", "benchmarks", "scripts", "tests")
                     for p in (REPO / pkg).rglob("*.py")]
    found = [f"{p.relative_to(REPO)}:{n}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found
