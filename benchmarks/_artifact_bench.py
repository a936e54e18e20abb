"""``nasoa-bench artifacts``: what delivering the fine-tuned model costs.

1. Throughput: upload and download of a safetensors file through the ArtifactService of a real
   ``nasoa-zoo serve`` process on loopback (sha256 on both ends included, as users get it),
   against a plain file copy (``shutil.copyfile`` + fsync) on the same disk, in the same run.
2. Job overhead: for each model of the default zoo, a real fine-tune on ``builtin:digits``, then
   the worker's save-and-upload step (:func:`worker._artifacts.keep_model`); the share of the
   job's wall time (model load + fine-tune + save-and-upload) that the artifact steps take:
   save-and-upload plus the runner's look for an earlier delivery's artifact (``recover``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArtifactBenchResult", "format_artifact_result", "run_artifact_benchmark"]

TOKEN = "bench-token"


@dataclass
class ArtifactBenchResult:
    size_mb: float
    repeats: int
    copy_mb_s: float
    upload_mb_s: float
    download_mb_s: float
    upload_vs_copy: float
    download_vs_copy: float
    jobs: list[dict[str, Any]] = field(default_factory=list)
    overhead_share: float = 0.0  # of the summed wall time of the jobs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _start_store(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    from clients.local_cluster import free_port, wait_serving

    port = free_port()
    env = {**os.environ, "NASOA_ARTIFACT_DIR": str(folder / "store"), "NASOA_ARTIFACT_TOKEN": TOKEN,
           "NASOA_ARTIFACT_MIN_FREE_BYTES": "0", "NASOA_HOME": str(folder / "home")}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "zoo_store.cli", "serve", "--address", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, 60, proc)
    except BaseException:
        proc.kill()
        raise
    return proc, address


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def _throughput(
    folder: Path, address: str, size_mb: float, repeats: int, log: Callable[[str], None]
) -> dict[str, float]:
    import torch

    from clients import ArtifactClient, manifest_bytes
    from zoo_store import atomic_write_bytes, save_safetensors

    numel = int(size_mb * (1 << 20) / 4)
    copies, uploads, downloads = [], [], []
    with ArtifactClient(address, token=TOKEN) as client:
        for i in range(repeats):
            src = folder / f"src{i}"
            src.mkdir()
            weights = src / "model.safetensors"
            sha, size = save_safetensors({"w": torch.rand(numel, generator=torch.Generator().manual_seed(i))}, weights)
            manifest = src / "manifest.json"
            manifest_sha, _ = atomic_write_bytes(
                manifest,
                manifest_bytes({"job_id": f"bench-{i}", "files": {weights.name: {"sha256": sha, "size": size}}}),
            )
            mb = size / (1 << 20)
            t = time.perf_counter()
            _copy(weights, folder / f"copy{i}")
            copies.append(mb / (time.perf_counter() - t))
            t = time.perf_counter()
            # The digests come from saving, as in the worker (deliver).
            stored = client.upload(
                f"bench-{i}", weights, manifest, sha256={weights.name: sha, manifest.name: manifest_sha}
            )
            uploads.append(mb / (time.perf_counter() - t))
            t = time.perf_counter()
            client.download(stored, folder / f"down{i}", progress=False)
            downloads.append(mb / (time.perf_counter() - t))
            log(f"  {mb:.0f} MB: copy {copies[-1]:.0f} MB/s, upload {uploads[-1]:.0f} MB/s, "
                f"download {downloads[-1]:.0f} MB/s")  # fmt: skip
            for path in (folder / f"copy{i}", folder / f"down{i}", src):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    # Ratios are taken per repeat (copy and transfers measured back to back), then the median:
    # on a shared machine the load drifts between repeats more than within one.
    return {"copy": statistics.median(copies), "upload": statistics.median(uploads),
            "download": statistics.median(downloads),
            "upload_vs_copy": statistics.median(u / c for u, c in zip(uploads, copies, strict=True)),
            "download_vs_copy": statistics.median(d / c for d, c in zip(downloads, copies, strict=True))}  # fmt: skip


def _job_overheads(
    folder: Path, address: str, models: list[str], epochs: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    from nasoa_contracts import Candidate, Job, Plan, Prediction, TaskSpec, WorkerSettings
    from worker import FinetuneSpec, keep_model, recover, run_finetune
    from zoo_store import create_model

    settings = WorkerSettings(zoo_address=address, cache_dir=folder / "cache", device="cpu", token="", rpc_timeout=60.0)
    os.environ["NASOA_ARTIFACT_TOKEN"] = TOKEN  # the worker's upload token
    rows = []
    for name in models:
        candidate = Candidate(name, {"lr": 0.05, "batch_size": 64}, epochs)
        plan = Plan(candidate, Prediction(0.0, 0.0, 0.0, 0.0), "bench", 1.0)
        job = Job(f"bench-{name}", TaskSpec("builtin:digits", 120.0), plan, created_at=time.time())
        start = time.perf_counter()
        assert recover(settings, job) is None  # the runner's look for an earlier delivery's model
        looked = time.perf_counter() - start
        model = create_model(name)
        spec = FinetuneSpec("builtin:digits", epochs=epochs, lr=0.05, batch_size=64, deadline_seconds=120.0)
        result = run_finetune(spec, model)
        trained = time.perf_counter()
        stored = keep_model(settings, job, model, spec, result, trained - start - result.seconds)
        wall = time.perf_counter() - start
        kept = time.perf_counter() - trained + looked
        rows.append({"model": name, "job_seconds": wall, "save_upload_seconds": kept, "share": kept / wall,
                     "artifact_mb": stored.size_bytes / (1 << 20), "test_accuracy": result.accuracy})  # fmt: skip
        log(f"  {name:>14}: job {wall:6.2f} s, save+upload {kept:5.3f} s ({100 * kept / wall:4.1f}%), "
            f"{stored.size_bytes / (1 << 20):5.1f} MB")  # fmt: skip
    return rows


def run_artifact_benchmark(size_mb: float = 64.0, repeats: int = 5, epochs: int = 2, models: list[str] | None = None,
                           jobs: bool = True, progress: Callable[[str], None] = print) -> ArtifactBenchResult:  # fmt: skip
    from zoo_store import list_models

    with tempfile.TemporaryDirectory(prefix="nasoa-artifact-bench-", dir=os.environ.get("NASOA_BENCH_DIR")) as tmp:
        folder = Path(tmp)
        proc, address = _start_store(folder)
        try:
            progress(f"throughput through {address} ({repeats} x {size_mb:.0f} MB):")
            speeds = _throughput(folder, address, size_mb, repeats, progress)
            rows: list[dict[str, Any]] = []
            if jobs:
                progress(f"save and upload after a {epochs}-epoch fine-tune on builtin:digits, per zoo model:")
                rows = _job_overheads(folder, address, models or list_models(), epochs, progress)
        finally:
            proc.terminate()
            proc.wait(30)
    total = sum(r["job_seconds"] for r in rows)
    return ArtifactBenchResult(
        size_mb=size_mb, repeats=repeats, copy_mb_s=speeds["copy"], upload_mb_s=speeds["upload"],
        download_mb_s=speeds["download"], upload_vs_copy=speeds["upload_vs_copy"],
        download_vs_copy=speeds["download_vs_copy"], jobs=rows,
        overhead_share=sum(r["save_upload_seconds"] for r in rows) / total if total else 0.0,
    )  # fmt: skip


def format_artifact_result(r: ArtifactBenchResult) -> str:
    lines = [
        f"artifact transfer, {r.size_mb:.0f} MB, medians of {r.repeats} (ratios: per repeat, then the median):",
        f"  plain copy   {r.copy_mb_s:8.0f} MB/s",
        f"  upload       {r.upload_mb_s:8.0f} MB/s  ({100 * r.upload_vs_copy:.0f}% of the copy)",
        f"  download     {r.download_mb_s:8.0f} MB/s  ({100 * r.download_vs_copy:.0f}% of the copy)",
    ]
    if r.jobs:
        lines.append(f"save + upload: {100 * r.overhead_share:.2f}% of the wall time of {len(r.jobs)} jobs "
                     f"(max {100 * max(j['share'] for j in r.jobs):.2f}% for one job)")  # fmt: skip
    return "\n".join(lines)
