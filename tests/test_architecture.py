"""The architecture's rules that import-linter does not check: public names resolve, modules stay small."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("nasoa_contracts", "nasoa_data", "adaptor_service", "zoo_store", "worker", "clients", "nasoa")
MAX_LINES = 500


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    package = importlib.import_module(name)
    assert package.__all__, f"{name} exports nothing"
    missing = [n for n in package.__all__ if getattr(package, n, None) is None]
    assert not missing, f"{name}/__init__.pyi names what does not exist: {missing}"


def test_no_module_grows_past_500_lines():
    # Generated stubs excepted; a module this long does more than one thing.
    long = []
    for package in (*PACKAGES, "benchmarks"):
        for path in (REPO / package).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                long.append(f"{path.relative_to(REPO)}: {lines}")
    assert not long, long
