"""Search results: evaluated architectures, the Pareto front, and the run directory's files.

:func:`write_outputs` writes ``trials.csv``, ``pareto.csv``, ``pareto.json`` and ``pareto.png``
(step time vs accuracy, front highlighted, baselines marked); :func:`load_search` reads a run
directory back without training anything.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_store.offline._proxy import ProxyRecipe

if TYPE_CHECKING:
    import optuna

__all__ = [
    "STUDY_NAME",
    "ArchitectureResult",
    "SearchResult",
    "load_search",
    "pareto_front",
    "trial_result",
    "write_json",
    "write_outputs",
]

STUDY_NAME = "nasoa-offline-nas"


@dataclass(frozen=True)
class ArchitectureResult:
    """One evaluated architecture: an ET-NAS candidate or a torchvision baseline.

    Attributes:
        name: ``nas-<trial>`` for candidates, the torchvision name for baselines.
        architecture: the ET-NAS encoding, or the torchvision builder name.
        is_baseline: True for a torchvision baseline.
        params: parameter count (with the source task's classifier).
        macs: multiply-accumulates of one image at the recipe's input size.
        accuracy: proxy-training top-1 accuracy on the source test split, %.
        step_ms: measured training step time (median), ms, at the recipe's batch size.
        trial: Optuna trial number (None for baselines).
        train_seconds: wall time of the proxy training.
    """

    name: str
    architecture: str
    is_baseline: bool
    params: int
    macs: int
    accuracy: float
    step_ms: float
    trial: int | None = None
    train_seconds: float = 0.0

    def to_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "is_baseline": self.is_baseline,
            "params_m": round(self.params / 1e6, 4),
            "mmacs": round(self.macs / 1e6, 3),
            "accuracy": round(self.accuracy, 3),
            "step_ms": round(self.step_ms, 3),
            "trial": self.trial,
            "train_seconds": round(self.train_seconds, 2),
        }


@dataclass(frozen=True)
class SearchResult:
    """What a search run directory holds once :func:`run_search` returns."""

    run_dir: Path
    recipe: ProxyRecipe
    seed: int
    device: str
    evaluated: tuple[ArchitectureResult, ...]
    front: tuple[ArchitectureResult, ...]
    baselines: tuple[ArchitectureResult, ...]
    new_trials: int = 0
    pruned_trials: int = 0
    files: Mapping[str, Path] = field(default_factory=dict)


def pareto_front(points: list[ArchitectureResult]) -> list[ArchitectureResult]:
    """The non-dominated points (higher accuracy, lower step time), fastest first.

    >>> a = ArchitectureResult("a", "x", False, 1, 1, 80.0, 10.0)
    >>> b = ArchitectureResult("b", "y", False, 1, 1, 70.0, 20.0)
    >>> c = ArchitectureResult("c", "z", False, 1, 1, 90.0, 30.0)
    >>> [p.name for p in pareto_front([a, b, c])]
    ['a', 'c']
    """

    def dominates(p: ArchitectureResult, q: ArchitectureResult) -> bool:
        return (
            p.accuracy >= q.accuracy and p.step_ms <= q.step_ms and (p.accuracy > q.accuracy or p.step_ms < q.step_ms)
        )

    front = [q for q in points if not any(dominates(p, q) for p in points)]
    return sorted(front, key=lambda p: (p.step_ms, -p.accuracy))


def write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def trial_result(trial: optuna.trial.FrozenTrial) -> ArchitectureResult:
    attrs = trial.user_attrs
    return ArchitectureResult(
        name=f"nas-{trial.number:03d}",
        architecture=str(attrs["encoding"]),
        is_baseline=False,
        params=int(attrs["params"]),
        macs=int(attrs["macs"]),
        accuracy=float(trial.values[0]),
        step_ms=float(trial.values[1]),
        trial=trial.number,
        train_seconds=float(attrs.get("train_seconds", 0.0)),
    )


def load_search(run_dir: str | Path) -> SearchResult:
    """Read a run directory written by :func:`run_search` (no training, no writing)."""
    import optuna

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    recipe = ProxyRecipe.from_dict(config["recipe"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    evaluated = [trial_result(t) for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])]
    baselines: list[ArchitectureResult] = []
    path = run_dir / "baselines.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("recipe_fingerprint") == recipe.fingerprint():
            baselines = [ArchitectureResult(**row) for row in stored["baselines"].values()]
    return SearchResult(
        run_dir=run_dir,
        recipe=recipe,
        seed=int(config["seed"]),
        device=str(config.get("device", "")),
        evaluated=tuple(evaluated),
        front=tuple(pareto_front(evaluated)),
        baselines=tuple(baselines),
        files={
            name: run_dir / name
            for name in (
                "run.json",
                "study.db",
                "baselines.json",
                "trials.csv",
                "pareto.json",
                "pareto.csv",
                "pareto.png",
            )
            if (run_dir / name).exists()
        },
    )


_CSV_COLUMNS = (
    "name",
    "architecture",
    "is_baseline",
    "params_m",
    "mmacs",
    "accuracy",
    "step_ms",
    "trial",
    "train_seconds",
)


def _write_csv(path: Path, rows: list[ArchitectureResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_row())


def write_outputs(
    run_dir: Path,
    study: optuna.Study,
    recipe: ProxyRecipe,
    seed: int,
    baselines: list[ArchitectureResult],
    new_trials: int,
    pruned: int,
) -> SearchResult:
    import optuna

    from zoo_store.offline._proxy import device_description

    evaluated = [trial_result(t) for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])]
    # Optuna's own non-dominated set (study.best_trials), ordered fastest first.
    best = {t.number for t in study.best_trials}
    front = sorted((r for r in evaluated if r.trial in best), key=lambda r: (r.step_ms, -r.accuracy))
    device = device_description(recipe.device)
    files = {
        "trials.csv": run_dir / "trials.csv",
        "pareto.csv": run_dir / "pareto.csv",
        "pareto.json": run_dir / "pareto.json",
        "pareto.png": run_dir / "pareto.png",
        "study.db": run_dir / "study.db",
        "run.json": run_dir / "run.json",
    }
    if baselines:
        files["baselines.json"] = run_dir / "baselines.json"
    _write_csv(files["trials.csv"], evaluated)
    _write_csv(files["pareto.csv"], front)
    write_json(
        files["pareto.json"],
        {
            "seed": seed,
            "device": device,
            "recipe": recipe.to_dict(),
            "recipe_fingerprint": recipe.fingerprint(),
            "evaluated": len(evaluated),
            "front": [{**r.to_row(), "encoding": r.architecture} for r in front],
            "baselines": [r.to_row() for r in baselines],
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    _plot(files["pareto.png"], evaluated, front, baselines, recipe, device)
    return SearchResult(
        run_dir, recipe, seed, device, tuple(evaluated), tuple(front), tuple(baselines), new_trials, pruned, files
    )


def _plot(
    path: Path,
    evaluated: list[ArchitectureResult],
    front: list[ArchitectureResult],
    baselines: list[ArchitectureResult],
    recipe: ProxyRecipe,
    device: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    if evaluated:
        axes.scatter(
            [r.step_ms for r in evaluated],
            [r.accuracy for r in evaluated],
            s=16,
            c="0.65",
            label=f"evaluated ({len(evaluated)})",
            zorder=2,
        )
    if front:
        axes.plot(
            [r.step_ms for r in front],
            [r.accuracy for r in front],
            "-o",
            c="tab:red",
            ms=5,
            lw=1.2,
            label=f"Pareto front ({len(front)})",
            zorder=3,
        )
    markers = ("s", "^", "D", "v", "P")
    for index, baseline in enumerate(baselines):
        axes.scatter(
            [baseline.step_ms],
            [baseline.accuracy],
            marker=markers[index % 5],
            s=70,
            edgecolors="black",
            zorder=4,
            label=f"{baseline.name} (torchvision)",
        )
    axes.set_xscale("log")
    axes.set_xlabel(
        f"training step time, ms (batch {recipe.batch_size}, {recipe.image_size}x{recipe.image_size}, log scale)"
    )
    axes.set_ylabel("proxy accuracy on source test split, %")
    axes.set_title(f"NASOA offline NAS: {recipe.steps}-step proxy, seed {recipe.seed}\n{device}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="center right", framealpha=0.9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
