"""Load the Quick-Tune "extended" meta-dataset into the generic experience table.

Source files (see ``benchmarks/data/quicktune-extended/README.md``, which says where they come from): ``perf.json`` (validation
top-1 % per epoch), ``cost.json`` (seconds per epoch, made cumulative here),
``descriptors.json`` (task meta-features) and ``table.csv`` (hyperparameters, categorical
ones one-hot as ``cat:NAME:VALUE``; un-one-hot here, ``model`` becomes the run's model).

Runs with a single epoch (all linear-probing runs and the failures) are dropped, as the
README says: 3,110 usable runs remain.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from adaptor_service import ExperienceRun, ExperienceTable, parse_hparam
from nasoa_contracts import CurvePoint, HParamValue

__all__ = ["DEFAULT_QUICKTUNE_DIR", "META_FEATURE_NAMES", "load_quicktune"]

#: The copy carried in the repository (BSD-3, with its licence); ``NASOA_QUICKTUNE_DIR`` overrides it.
DEFAULT_QUICKTUNE_DIR = Path(
    os.environ.get("NASOA_QUICKTUNE_DIR", str(Path(__file__).resolve().parent / "data" / "quicktune-extended"))
)

#: Order of the values in ``descriptors.json``.
META_FEATURE_NAMES: tuple[str, ...] = ("num_samples", "num_classes", "resolution", "channels")


def _read_hparams(path: Path) -> dict[str, tuple[str, dict[str, HParamValue]]]:
    """run_id -> (model, hyperparameters) from table.csv."""
    out: dict[str, tuple[str, dict[str, HParamValue]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for number, cells in enumerate(reader, start=1):
            if len(cells) != len(header):
                raise ValueError(
                    f"{path.name}: row {number}: {len(cells)} cells for {len(header)} columns"
                )
            run_id = cells[0]
            hparams: dict[str, HParamValue] = {}
            for column, cell in zip(header[1:], cells[1:], strict=False):
                if column.startswith("cat:"):
                    _, name, value = column.split(":", 2)
                    if cell.strip() in ("1", "1.0", "True"):
                        if name in hparams:
                            raise ValueError(
                                f"{path.name}: row {number}, column {column!r}: "
                                f"two values set for {name!r}"
                            )
                        hparams[name] = value
                else:
                    hparams[column] = parse_hparam(cell.strip())
            model = hparams.pop("model", None)
            if not isinstance(model, str):
                raise ValueError(f"{path.name}: row {number}: no cat:model:* column is set")
            out[run_id] = (model, hparams)
    return out


def load_quicktune(
    directory: str | Path | None = None, *, min_epochs: int = 2
) -> ExperienceTable:
    """Read the Quick-Tune extended folder as an :class:`ExperienceTable`.

    ``min_epochs`` drops runs with fewer epochs (2: drop the single-epoch runs).
    """
    root = Path(directory) if directory is not None else DEFAULT_QUICKTUNE_DIR
    if not root.is_dir():
        raise FileNotFoundError(
            f"Quick-Tune data not found at {root}; pass its folder or set NASOA_QUICKTUNE_DIR"
        )
    perf = json.loads((root / "perf.json").read_text())
    cost = json.loads((root / "cost.json").read_text())
    descriptors = json.loads((root / "descriptors.json").read_text())
    configs = _read_hparams(root / "table.csv")
    runs = []
    for task_id in sorted(k for k in perf if k != "info"):
        meta = dict(zip(META_FEATURE_NAMES, map(float, descriptors[task_id]), strict=True))
        for run_id, accuracies in perf[task_id].items():
            if len(accuracies) < min_epochs:
                continue
            seconds = cost[task_id][run_id]
            if len(seconds) != len(accuracies):
                raise ValueError(
                    f"{root}: run {run_id} of {task_id}: {len(accuracies)} accuracies "
                    f"but {len(seconds)} epoch times"
                )
            model, hparams = configs[run_id]
            total = 0.0
            curve = []
            for epoch, (acc, sec) in enumerate(zip(accuracies, seconds, strict=False), start=1):
                total += float(sec)
                # a few values exceed 100 by float noise (100.00000036): clamp them
                curve.append(CurvePoint(epoch, min(100.0, max(0.0, float(acc))), total))
            runs.append(ExperienceRun(task_id, run_id, model, meta, hparams, tuple(curve)))
    return ExperienceTable(tuple(runs), name="quicktune-extended")
