"""The committed default zoo (timm-style: every registered model runs) and the nasoa-zoo CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import torch

import zoo_store
from zoo_store import cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT = zoo_store.ZooStore(zoo_store.DEFAULT_ZOO_DIR)
NAMES = DEFAULT.list_models()


def test_default_zoo_shape() -> None:
    entries = DEFAULT.list_entries()
    assert len(entries) >= 6
    cpu = [e.step_time_ms["cpu"] for e in entries]
    assert max(cpu) / min(cpu) >= 5.0, cpu
    assert sum(e.size_bytes for e in entries) <= 26 * 1024 * 1024
    for e in entries:
        assert e.family == "etnas" and e.input_size == 32
        for key in ("search_run", "seed", "source_data", "epochs"):
            assert e.provenance.get(key), (e.name, key)
        assert e.provenance["source_data"].startswith("builtin:patterns")
        assert 0.0 < e.source_accuracy <= 100.0
    blobs = {p.name for p in (DEFAULT.root / "blobs").iterdir()}
    assert blobs == {f"{e.sha256}.safetensors" for e in entries}  # no orphans, nothing missing


@pytest.mark.parametrize("name", NAMES)
def test_every_default_model_loads_and_trains(name: str) -> None:
    torch.manual_seed(0)
    entry = DEFAULT.get_entry(name)
    model = DEFAULT.create_model(name, num_classes=7)  # sha256-verified load, new head
    model.train()
    x = torch.randn(4, 3, entry.input_size, entry.input_size)
    out = model(x)
    assert out.shape == (4, 7)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    groups = zoo_store.stage_modules(model)
    assert len(groups) == entry.num_stages + 1
    assert sum(p.numel() for p in model.parameters()) > 0


def _run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo_store.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_list_json_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--zoo-dir", str(DEFAULT.root), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == NAMES
    for row in rows:
        for key in ("architecture", "encoding", "num_params", "macs", "step_time_ms", "source_accuracy", "sha256"):
            assert key in row
    assert cli.main(["--zoo-dir", str(DEFAULT.root), "show", NAMES[0]]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == NAMES[0]


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["--zoo-dir", str(DEFAULT.root), "show", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-model" in err and NAMES[0] in err
    assert cli.main(["--zoo-dir", str(tmp_path), "import-etnas", str(tmp_path / "031-_8_1-2.pth")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert cli.main(["--zoo-dir", str(tmp_path), "pretrain", "--encoding", "bad=03x-_8_1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "position" in err


def test_cli_encodings_official(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["encodings", "--official", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 12
    assert rows["ET-NAS-D"]["params_m"] == pytest.approx(15.2, rel=0.03)
    assert rows["ET-NAS-D"]["gmacs"] == pytest.approx(1.55, rel=0.03)


def test_cli_help_is_fast() -> None:
    start = time.perf_counter()
    result = _run_cli("--help")
    assert result.returncode == 0 and "serve" in result.stdout
    assert time.perf_counter() - start < 5.0
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, zoo_store.cli; sys.exit('torch' in sys.modules or 'grpc' in sys.modules)"],
        cwd=REPO,
        timeout=60,
    )
    assert probe.returncode == 0


def test_runtime_modules_do_not_import_offline() -> None:
    # The store, service and worker side stay free of the NAS and pretraining (and optuna).
    code = (
        "import importlib, pkgutil, sys, zoo_store\n"
        "runtime = [m.name for m in pkgutil.iter_modules(zoo_store.__path__) if m.name != 'offline']\n"
        "for name in runtime: importlib.import_module(f'zoo_store.{name}')\n"
        "assert len(runtime) >= 10, runtime\n"
        "sys.exit(any(m.startswith('zoo_store.offline') or m == 'optuna' for m in sys.modules))"
    )
    probe = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120)
    assert probe.returncode == 0


def test_cli_serve_and_graceful_sigterm(tmp_path: Path) -> None:

    with subprocess.Popen(
        [sys.executable, "-m", "zoo_store.cli", "--zoo-dir", str(DEFAULT.root), "serve", "--address", "127.0.0.1:0", "--grace", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _serve_and_stop(proc, tmp_path)


def _serve_and_stop(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving" in line, line + (proc.stderr.read() if proc.stderr else "")
        port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            assert [e.name for e in zoo_store.ZooClient(ch, timeout=10).list_models()] == NAMES
            path = zoo_store.fetch_checkpoint(ch, NAMES[0], tmp_path / "cache", timeout=30)
            assert zoo_store.sha256_file(path) == DEFAULT.get_entry(NAMES[0]).sha256
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
