"""Collect an experience table by fine-tuning random candidates for real (``nasoa-bench collect``).

This is how a provider's logs of past jobs look: each run is a zoo model with a regime drawn
from the candidate space, fine-tuned by the worker's own code on the local default zoo, its
validation curve written in the generic experience-table format (docs/EXPERIENCE_FORMAT.md).
The adaptor can warm-start from such a file (``NASOA_WARM_START``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from adaptor_service import (
    CandidateSpace,
    ExperienceRun,
    ExperienceTable,
    ModelInfo,
    RegimeGrid,
    write_csv,
    write_jsonl,
)
from nasoa_contracts import CurvePoint, TaskSpec

# Past jobs: other subsets (sizes, seeds) of the built-in sources than the demo's tasks.
DEFAULT_DATASETS = (
    "builtin:digits?train=600&test=300&seed=11",
    "builtin:fashion-mnist?train=1000&test=400&seed=11",
    "builtin:shapes?train=1000&test=400&seed=11",
)


def zoo_models(zoo_dir: str | Path | None = None) -> list[ModelInfo]:
    from zoo_store import DEFAULT_ZOO_DIR, ZooStore

    store = ZooStore(zoo_dir or DEFAULT_ZOO_DIR)
    return [
        ModelInfo(e.name, dict(e.step_time_ms), e.step_batch_size, e.num_params, e.macs, e.source_accuracy,
                  e.num_stages)
        for e in store.list_entries()
    ]


def collect_experience(
    out_path: str | Path,
    datasets: Sequence[str] = DEFAULT_DATASETS,
    runs_per_dataset: int = 16,
    max_prior_seconds: float = 20.0,
    seed: int = 0,
    zoo_dir: str | Path | None = None,
    progress: Callable[[str], None] = print,
) -> ExperienceTable:
    """Fine-tune ``runs_per_dataset`` random candidates per dataset; write and return the table.

    Candidates whose physics estimate exceeds ``max_prior_seconds`` are not drawn, which keeps
    the collection to minutes on a CPU.
    """
    import torch

    from nasoa_data import compute_meta_features
    from worker import FinetuneSpec, run_finetune
    from zoo_store import DEFAULT_ZOO_DIR, ZooStore

    torch.set_num_threads(1)
    store = ZooStore(zoo_dir or DEFAULT_ZOO_DIR)
    space = CandidateSpace(zoo_models(zoo_dir), RegimeGrid())
    rng = random.Random(seed)
    runs = []
    for dataset in datasets:
        meta = compute_meta_features(dataset).as_dict()
        task = TaskSpec(dataset, 3600.0, meta)
        pool = [c for c in space.candidates(task) if c.prior_seconds is not None and c.prior_seconds <= max_prior_seconds]
        if not pool:
            raise ValueError(f"no candidate of {dataset} is estimated under {max_prior_seconds}s")
        for i, candidate in enumerate(rng.sample(pool, min(runs_per_dataset, len(pool)))):
            hp = candidate.hparams
            spec = FinetuneSpec(
                dataset_uri=dataset, epochs=candidate.epochs, lr=float(hp["lr"]), batch_size=int(hp["batch_size"]),
                frozen_stages=int(hp["frozen_stages"]), optimizer=str(hp["optimizer"]),
                weight_decay=float(hp["weight_decay"]), deadline_seconds=10 * max_prior_seconds + 30, seed=seed + i,
                num_threads=1,
            )  # fmt: skip
            began = time.monotonic()
            result = run_finetune(spec, store.create_model(candidate.model))
            curve = tuple(CurvePoint(p.epoch, p.accuracy, p.seconds) for p in result.curve)
            if not curve:
                continue
            runs.append(ExperienceRun(dataset, f"run{i:03d}", candidate.model, meta, dict(hp), curve))
            progress(f"{dataset} {i + 1}/{runs_per_dataset}: {candidate.describe()} -> "
                     f"{curve[-1].accuracy:.1f}% in {time.monotonic() - began:.1f}s")
            _write(runs, out_path)  # after every run: a long collection that stops keeps what it measured
    return _write(runs, out_path)


def _write(runs: list[ExperienceRun], out_path: str | Path) -> ExperienceTable:
    table = ExperienceTable(tuple(runs), name=str(out_path))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    (write_csv if out.suffix == ".csv" else write_jsonl)(table, partial)
    partial.replace(out)  # atomic: a reader never sees a half-written table
    return table
