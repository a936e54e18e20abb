"""``nasoa-bench zoo``: is the zoo faster to train than torchvision models at equal accuracy?

For each torchvision baseline (ResNet-18, MobileNetV3-small, RegNetX-400MF) the benchmark
finds the *fastest* zoo model whose source accuracy is at least the baseline's, and reports
the ratio of training step times, baseline / zoo (the goal: >= 2 for every baseline).

The comparison is kept honest:

- **Same recipe.** Every accuracy is the proxy accuracy of :class:`~zoo_store.offline.ProxyRecipe`
  (same source data, steps, batch size, seed, input size). Accuracies recorded by a search run
  are reused only when the run's recipe fingerprint is the recipe used here; anything else (a
  zoo entry that the run did not evaluate, a baseline the run did not train) is proxy-trained
  in this process. ``retrain=True`` retrains everything that is compared.
- **Same machine, same process, same batch size.** All step times (baselines and zoo models)
  are measured again here, interleaved round-robin (:func:`~zoo_store.offline.measure_interleaved`),
  at the recipe's batch and input size; the search's own timings are not reused.

The result is a plain dict (JSON-ready) so that ``nasoa-bench zoo --json`` can print it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo_store.offline import BASELINES, ProxyRecipe

__all__ = [
    "DEFAULT_NAS_RUN",
    "GOAL_RATIO",
    "ZooCandidate",
    "ZooComparison",
    "match_baselines",
    "run_zoo_benchmark",
]

#: The committed search run whose front stands in for the zoo when no entries are given.
DEFAULT_NAS_RUN = Path(
    os.environ.get(
        "NASOA_NAS_RUN",
        str(Path(__file__).resolve().parents[1] / "zoo_store" / "nas_runs" / "cpu2-s0"),
    )
)

#: The issue's goal: every baseline at least this many times slower than its zoo match.
GOAL_RATIO = 2.0


@dataclass(frozen=True)
class ZooCandidate:
    """A zoo model to compare: its name, ET-NAS encoding and (if known) proxy accuracy, %."""

    name: str
    encoding: str
    accuracy: float | None = None


@dataclass(frozen=True)
class ZooComparison:
    """One row of the benchmark: a baseline and its fastest zoo match of equal or better
    accuracy (``zoo_model`` is None when no zoo model is that accurate)."""

    baseline: str
    baseline_accuracy: float
    baseline_step_ms: float
    zoo_model: str | None
    zoo_encoding: str | None
    zoo_accuracy: float | None
    zoo_step_ms: float | None
    ratio: float | None
    meets_goal: bool


def match_baselines(
    baselines: Mapping[str, tuple[float, float]],
    zoo: Mapping[str, tuple[str, float, float]],
    goal: float = GOAL_RATIO,
) -> list[ZooComparison]:
    """Pair each baseline with the fastest zoo model of at least its accuracy.

    ``baselines`` maps name -> (accuracy, step ms); ``zoo`` maps name -> (encoding, accuracy,
    step ms).

    >>> rows = match_baselines({"resnet18": (60.0, 100.0)},
    ...                        {"a": ("e1", 55.0, 5.0), "b": ("e2", 61.0, 20.0),
    ...                         "c": ("e3", 70.0, 40.0)})
    >>> rows[0].zoo_model, rows[0].ratio, rows[0].meets_goal
    ('b', 5.0, True)
    >>> match_baselines({"r": (99.0, 10.0)}, {"a": ("e1", 55.0, 5.0)})[0].zoo_model is None
    True
    """
    rows = []
    for name, (accuracy, step_ms) in baselines.items():
        eligible = [(zoo_ms, zoo_name) for zoo_name, (_, zoo_acc, zoo_ms) in zoo.items() if zoo_acc >= accuracy]
        if not eligible:
            rows.append(ZooComparison(name, accuracy, step_ms, None, None, None, None, None, False))
            continue
        zoo_ms, zoo_name = min(eligible)
        encoding, zoo_acc, _ = zoo[zoo_name]
        ratio = step_ms / zoo_ms
        rows.append(ZooComparison(name, accuracy, step_ms, zoo_name, encoding, zoo_acc, zoo_ms, ratio, ratio >= goal))
    return rows


def _as_candidates(entries: Iterable[Any]) -> list[ZooCandidate]:
    """Zoo entries as candidates: ZooCandidate, (name, encoding) pairs, dicts or objects with
    ``name`` and ``encoding`` attributes (a registry's entry metadata)."""
    out = []
    for entry in entries:
        if isinstance(entry, ZooCandidate):
            out.append(entry)
        elif isinstance(entry, Mapping):
            out.append(ZooCandidate(str(entry["name"]), str(entry["encoding"])))
        elif isinstance(entry, tuple):
            out.append(ZooCandidate(str(entry[0]), str(entry[1])))
        else:
            encoding = getattr(entry, "encoding", None)
            if not encoding:
                continue  # not an ET-NAS model (e.g. an imported torchvision architecture)
            out.append(ZooCandidate(str(entry.name), str(encoding)))
    return out


def run_zoo_benchmark(
    source: str | Path | Sequence[Any] | None = None,
    *,
    run_dir: str | Path | None = None,
    recipe: ProxyRecipe | None = None,
    baselines: Sequence[str] = BASELINES,
    rounds: int = 3,
    retrain: bool = False,
    goal: float = GOAL_RATIO,
    progress: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Compare the torchvision baselines with the zoo under one proxy recipe, in this process.

    Args:
        source: a NAS run directory (its Pareto front is the zoo), or zoo entries (objects
            with ``name`` and ``encoding``, ``(name, encoding)`` pairs, or
            :class:`ZooCandidate`), or None for the front of :data:`DEFAULT_NAS_RUN`.
        run_dir: with zoo entries, a search run whose recipe and recorded accuracies to use
            (default: :data:`DEFAULT_NAS_RUN` when it exists).
        recipe: the proxy recipe (default: the run's; else ``ProxyRecipe()``).
        baselines: torchvision baselines to compare.
        rounds: interleaved timing rounds (each: warm-up + timed steps per model).
        retrain: proxy-train every compared model here instead of reusing recorded
            accuracies of the same recipe.
        goal: the ratio every baseline should reach.
        progress: called with one line per event.

    Returns:
        A JSON-ready dict: ``rows`` (one per baseline: baseline, its accuracy and step time,
        the matching zoo model, its accuracy and step time, ``ratio`` = baseline ms / zoo ms,
        ``meets_goal``), ``candidates`` (every zoo model with its accuracy and re-measured
        step time), ``all_meet_goal``, the recipe, device and timing settings.
    """
    import torch

    from zoo_store import ETNAS
    from zoo_store.offline import (
        SearchResult,
        build_baseline,
        device_description,
        load_search,
        load_source,
        measure_interleaved,
        proxy_train,
    )

    say: Callable[[str], object] = progress or (lambda _line: None)
    started = time.perf_counter()

    search: SearchResult | None = None
    if source is None or isinstance(source, (str, Path)):
        search = load_search(Path(source) if source is not None else DEFAULT_NAS_RUN)
        candidates = [ZooCandidate(r.name, r.architecture, r.accuracy) for r in search.front]
        zoo_source = f"front of {search.run_dir}"
    else:
        candidates = _as_candidates(source)
        zoo_source = "zoo entries"
        default = Path(run_dir) if run_dir is not None else DEFAULT_NAS_RUN
        if (default / "run.json").exists():
            search = load_search(default)
    recipe = recipe or (search.recipe if search is not None else ProxyRecipe())
    if not candidates:
        raise ValueError("no ET-NAS zoo models to compare; pass a run directory or entries")

    # Accuracies recorded under this very recipe: search trials and its baselines.
    known: dict[str, float] = {}
    known_baselines: dict[str, float] = {}
    if search is not None and search.recipe.fingerprint() == recipe.fingerprint() and not retrain:
        known = {_canonical(r.architecture): r.accuracy for r in search.evaluated}
        known_baselines = {r.name: r.accuracy for r in search.baselines}

    data = load_source(recipe)
    trained_here: list[str] = []

    def fresh(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        torch.manual_seed(recipe.seed)
        return build()

    zoo_models: list[torch.nn.Module] = []
    zoo_accuracy: dict[str, float] = {}
    for candidate in candidates:
        encoding = _canonical(candidate.encoding)
        model = fresh(lambda e=encoding: ETNAS(e, num_classes=data.num_classes, in_chans=recipe.channels))
        accuracy = None if retrain else known.get(_canonical(encoding))
        if accuracy is None:
            say(f"[zoo] {candidate.name}: proxy training ({recipe.steps} steps)...")
            accuracy = proxy_train(model, recipe, data).accuracy
            trained_here.append(candidate.name)
            model = fresh(lambda e=encoding: ETNAS(e, num_classes=data.num_classes, in_chans=recipe.channels))
        zoo_accuracy[candidate.name] = accuracy
        zoo_models.append(model)

    baseline_models: list[torch.nn.Module] = []
    baseline_accuracy: dict[str, float] = {}
    for name in baselines:
        model = fresh(lambda n=name: build_baseline(n, data.num_classes))
        accuracy = known_baselines.get(name)
        if accuracy is None:
            say(f"[baseline] {name}: proxy training ({recipe.steps} steps)...")
            accuracy = proxy_train(model, recipe, data).accuracy
            trained_here.append(name)
            model = fresh(lambda n=name: build_baseline(n, data.num_classes))
        baseline_accuracy[name] = accuracy
        baseline_models.append(model)

    say(
        f"[timing] {len(zoo_models) + len(baseline_models)} models, {rounds} interleaved "
        f"rounds of {recipe.timing_warmup}+{recipe.timing_repeats} steps, batch "
        f"{recipe.batch_size}, {recipe.image_size}x{recipe.image_size}"
    )
    timings = measure_interleaved(zoo_models + baseline_models, recipe, data.num_classes, rounds=rounds)
    zoo_ms = {c.name: t.median_ms for c, t in zip(candidates, timings[: len(candidates)], strict=True)}
    base_ms = {n: t.median_ms for n, t in zip(baselines, timings[len(candidates) :], strict=True)}
    rows = match_baselines(
        {name: (baseline_accuracy[name], base_ms[name]) for name in baselines},
        {c.name: (c.encoding, zoo_accuracy[c.name], zoo_ms[c.name]) for c in candidates},
        goal,
    )
    for row in rows:
        if row.zoo_model is None:
            say(
                f"[zoo] {row.baseline}: acc={row.baseline_accuracy:.2f}% "
                f"step={row.baseline_step_ms:.1f} ms; no zoo model is as accurate"
            )
        else:
            say(
                f"[zoo] {row.baseline}: acc={row.baseline_accuracy:.2f}% "
                f"step={row.baseline_step_ms:.1f} ms  vs  {row.zoo_model} "
                f"acc={row.zoo_accuracy:.2f}% step={row.zoo_step_ms:.1f} ms  "
                f"-> {row.ratio:.2f}x"
            )
    return {
        "benchmark": "zoo",
        "device": device_description(recipe.device),
        "zoo_source": zoo_source,
        "recipe": recipe.to_dict(),
        "recipe_fingerprint": recipe.fingerprint(),
        "batch_size": recipe.batch_size,
        "image_size": recipe.image_size,
        "goal_ratio": goal,
        "rows": [_rounded(asdict(row)) for row in rows],
        "all_meet_goal": all(row.meets_goal for row in rows),
        "candidates": [
            {
                "name": c.name,
                "encoding": c.encoding,
                "accuracy": round(zoo_accuracy[c.name], 3),
                "step_ms": round(zoo_ms[c.name], 3),
            }
            for c in candidates
        ],
        "accuracy_source": {
            "trained_in_this_process": trained_here,
            "recorded_same_recipe": [n for n in [*zoo_accuracy, *baseline_accuracy] if n not in trained_here],
        },
        "timing": {
            "rounds": rounds,
            "warmup": recipe.timing_warmup,
            "repeats": recipe.timing_repeats,
            "statistic": "median",
            "interleaved": True,
            "same_process": True,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def _canonical(encoding: str) -> str:
    """The canonical form of an encoding, so that equivalent spellings match."""
    from zoo_store import ETNASEncoding

    return str(ETNASEncoding.parse(encoding))


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in row.items()}
