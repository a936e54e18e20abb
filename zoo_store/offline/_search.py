"""Offline multi-objective NAS over the joint ET-NAS space (``nasoa-zoo search``).

The search looks for networks that are accurate *and* fast to train:

- **Space** (:class:`SearchSpace`): block level (1-4 layers, ops 0-6, width codes 0-4, up to
  two add/concat skips) and macro level (2-4 stages, 1-3 blocks per stage, a channel multiplier
  1/2/4 per stage placed on its first or last block, base width 8/16/24/32). A point of the
  space is a fixed set of Optuna parameters (:func:`suggest_encoding`), decoded into an ET-NAS
  encoding string (:func:`decode`). Genes that a point does not use (the ops of layers beyond
  its layer count, a skip whose positions do not exist in the block) are ignored; a point
  whose encoding is not a valid network (a group count that does not divide a channel count,
  a depthwise conv that cannot map its channels) or that is over the size limits is *pruned*
  (Optuna state PRUNED, with the reason as a user attribute) and never built or trained.
- **Objectives**: accuracy after the proxy training of :mod:`zoo_store.offline._proxy` (maximise) and
  the measured training step time on this machine at the recipe's batch and input size
  (minimise).
- **Optimiser**: Optuna's ``NSGAIISampler`` (seeded), the study persisted in
  ``RUN_DIR/study.db`` (SQLite). A search that is killed resumes where it stopped: finished
  trials are kept, the trial that was running is marked FAIL and its architecture is queued
  again, and only the missing trials are evaluated. ``n_trials`` counts *evaluated*
  (COMPLETE) trials; pruned and duplicate architectures do not count.

Outputs in ``RUN_DIR``: ``run.json`` (settings), ``study.db``, ``baselines.json``,
``trials.csv`` (every evaluated architecture), ``pareto.json``/``pareto.csv`` (the front) and
``pareto.png`` (step time vs accuracy, front highlighted, baselines marked).

>>> space = SearchSpace()
>>> params = {"n_layers": 2, "op_0": 0, "width_0": 3, "op_1": 1, "base": 32,
...           "n_stages": 4, "blocks_0": 1, "blocks_1": 1, "blocks_2": 2, "blocks_3": 3,
...           "mult_0": 1, "mult_1": 2, "mult_2": 2, "mult_3": 2,
...           "mult_at_1": "first", "mult_at_2": "first", "mult_at_3": "last",
...           "skip_0_kind": "none", "skip_1_kind": "none"}
>>> decode(params, space)
'031-_32_1-2-21-112'
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_store.offline._proxy import BASELINES, DEFAULT_SOURCE_URI, ProxyRecipe

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ArchitectureResult",
    "SearchConfigError",
    "SearchResult",
    "SearchSpace",
    "decode",
    "load_search",
    "pareto_front",
    "run_search",
    "sample_encodings",
    "suggest_encoding",
]

_STUDY_NAME = "nasoa-offline-nas"
_SKIP_KINDS = ("none", "a", "c")


class SearchConfigError(ValueError):
    """A run directory that was started with other settings than the ones given now."""


@dataclass(frozen=True)
class SearchSpace:
    """The joint block-level and macro-level space, and the size limits of a candidate.

    Attributes:
        max_layers: layers per block are 1..max_layers (at most 4: skip genes address
            positions 0-4).
        ops: op indices a layer may use (PAPER.md: 0 conv3x3 ... 6 depthwise-separable).
        width_codes: width codes of the non-last layers (the last is always 2).
        max_skips: skip genes per block (each: none, add or concat, from, to).
        base_widths: stem output widths C.
        stages: numbers of stages after the stem (the first stage keeps the stem's stride).
        max_blocks_per_stage: blocks per stage are 1..this.
        multipliers: channel multiplier of a stage (1, 2 or 4), applied on its first or last
            block; stage 0 may also multiply.
        max_channels: a candidate whose last block is wider is pruned.
        max_mmacs: a candidate over this many MMACs per 32x32 image is pruned (it would cost
            more proxy-training time than the search can afford).
    """

    max_layers: int = 4
    ops: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    width_codes: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_skips: int = 2
    base_widths: tuple[int, ...] = (8, 16, 24, 32)
    stages: tuple[int, ...] = (2, 3, 4)
    max_blocks_per_stage: int = 3
    multipliers: tuple[int, ...] = (1, 2, 4)
    max_channels: int = 512
    max_mmacs: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_layers <= 4:
            raise ValueError(f"max_layers must be 1-4, got {self.max_layers}")
        if not set(self.ops) <= set(range(7)) or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of 0-6, got {self.ops}")
        if not set(self.width_codes) <= set(range(5)) or not self.width_codes:
            raise ValueError(f"width_codes must be a subset of 0-4, got {self.width_codes}")
        if not set(self.stages) <= {1, 2, 3, 4} or not self.stages:
            raise ValueError(f"stages must be a subset of 1-4, got {self.stages}")

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def suggest_encoding(trial: optuna.trial.BaseTrial, space: SearchSpace) -> str:
    """Suggest every gene of ``space`` on ``trial`` and return the decoded encoding string.

    All genes are suggested on every trial (also those the point does not use), so the
    search space is the same for all trials and NSGA-II's crossover sees every gene.
    Raises :class:`~zoo_store._etnas.InvalidEncodingError` for a point that is not a network.
    """
    params: dict[str, Any] = {"n_layers": trial.suggest_int("n_layers", 1, space.max_layers)}
    for index in range(space.max_layers):
        params[f"op_{index}"] = trial.suggest_categorical(f"op_{index}", list(space.ops))
    for index in range(space.max_layers - 1):
        params[f"width_{index}"] = trial.suggest_categorical(f"width_{index}", list(space.width_codes))
    for index in range(space.max_skips):
        params[f"skip_{index}_kind"] = trial.suggest_categorical(f"skip_{index}_kind", list(_SKIP_KINDS))
        params[f"skip_{index}_from"] = trial.suggest_int(f"skip_{index}_from", 0, space.max_layers - 1)
        params[f"skip_{index}_to"] = trial.suggest_int(f"skip_{index}_to", 1, space.max_layers)
    params["base"] = trial.suggest_categorical("base", list(space.base_widths))
    params["n_stages"] = trial.suggest_categorical("n_stages", list(space.stages))
    for stage in range(max(space.stages)):
        params[f"blocks_{stage}"] = trial.suggest_int(f"blocks_{stage}", 1, space.max_blocks_per_stage)
        params[f"mult_{stage}"] = trial.suggest_categorical(f"mult_{stage}", list(space.multipliers))
        params[f"mult_at_{stage}"] = trial.suggest_categorical(f"mult_at_{stage}", ["first", "last"])
    return decode(params, space)


def decode(params: Mapping[str, Any], space: SearchSpace) -> str:
    """The canonical ET-NAS encoding of a point of ``space`` (genes it does not use ignored).

    Raises :class:`~zoo_store._etnas.InvalidEncodingError` when the encoding is not a network
    (for example a group count that does not divide a channel count).

    >>> params = {"n_layers": 3, "op_0": 2, "width_0": 3, "op_1": 3, "width_1": 1,
    ...           "op_2": 1, "skip_0_kind": "a", "skip_0_from": 0, "skip_0_to": 2,
    ...           "skip_1_kind": "c", "skip_1_from": 1, "skip_1_to": 2, "base": 16,
    ...           "n_stages": 2, "blocks_0": 2, "mult_0": 2, "mult_at_0": "last",
    ...           "blocks_1": 1, "mult_1": 1}
    >>> decode(params, SearchSpace())
    '23311-a02c12_16_12-1'
    >>> decode({**params, "skip_1_to": 3}, SearchSpace())  # concat into the output: dropped
    '23311-a02_16_12-1'
    """
    from zoo_store._etnas import ETNASEncoding

    n_layers = int(params["n_layers"])
    layers = [(int(params[f"op_{i}"]), int(params[f"width_{i}"]) if i < n_layers - 1 else 2) for i in range(n_layers)]
    skips: list[tuple[str, int, int]] = []
    for index in range(space.max_skips):
        kind = params.get(f"skip_{index}_kind", "none")
        if kind == "none":
            continue
        source, target = int(params[f"skip_{index}_from"]), int(params[f"skip_{index}_to"])
        if source >= target or target > n_layers:
            continue  # positions the block does not have
        if (kind, source, target) == ("a", 0, n_layers) or (kind, source, target) in skips:
            continue  # the residual add is implicit; a repeated skip adds nothing
        if kind == "c" and target == n_layers:
            continue  # a concat into the block output would change its width
        skips.append((kind, source, target))
    macro = ""
    for stage in range(int(params["n_stages"])):
        blocks = ["1"] * int(params[f"blocks_{stage}"])
        multiplier = int(params[f"mult_{stage}"])
        if multiplier != 1:
            at = 0 if params.get(f"mult_at_{stage}", "first") == "first" else len(blocks) - 1
            blocks[at] = str(multiplier)
        macro += ("-" if stage else "") + "".join(blocks)
    encoding = ETNASEncoding(tuple(layers), tuple(skips), int(params["base"]), macro)
    return str(encoding)


def _final_channels(encoding: str) -> int:
    base, macro = encoding.split("_")[1:]
    channels = int(base)
    for char in macro:
        if char != "-":
            channels *= int(char)
    return channels


def sample_encodings(count: int, seed: int, space: SearchSpace | None = None) -> list[str]:
    """``count`` valid encodings drawn as NSGA-II's first generation would (seeded).

    Runs an in-memory study with ``NSGAIISampler(seed=seed)`` and prunes invalid points, the
    same as :func:`run_search` does, without training anything.
    """
    import optuna

    space = space or SearchSpace()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, count)),
    )
    found: list[str] = []
    while len(found) < count:
        trial = study.ask()
        encoding, reason = _propose(trial, space, set(found))
        if encoding is None:
            trial.set_user_attr("pruned_reason", reason)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        found.append(encoding)
        study.tell(trial, [0.0, 0.0])
    return found


def _propose(trial: optuna.trial.BaseTrial, space: SearchSpace, seen: set[str]) -> tuple[str | None, str]:
    """The trial's encoding, or ``(None, reason)`` when it must be pruned."""
    from zoo_store._etnas import InvalidEncodingError

    try:
        encoding = suggest_encoding(trial, space)
    except InvalidEncodingError as error:
        return None, f"invalid: {error.reason}"
    if _final_channels(encoding) > space.max_channels:
        return None, f"too wide: {_final_channels(encoding)} > {space.max_channels} channels"
    if encoding in seen:
        return None, "duplicate: already evaluated"
    macs = _count(encoding)[1]
    if macs / 1e6 > space.max_mmacs:
        return None, f"too large: {macs / 1e6:.1f} > {space.max_mmacs} MMACs at 32x32"
    return encoding, ""


def _count(encoding: str, num_classes: int = 10, image_size: int = 32) -> tuple[int, int]:
    import torch

    from zoo_store._etnas import ETNAS, count_params_and_macs

    with torch.device("meta"):  # shapes only: nothing is allocated or computed
        model = ETNAS(encoding, num_classes=num_classes)
    return count_params_and_macs(model, (3, image_size, image_size))


# ----------------------------------------------------------------------------------------------
# Results


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


# ----------------------------------------------------------------------------------------------
# The search


def _session_seed(seed: int, trials_so_far: int) -> int:
    """Sampler seed of a (re)started session: ``seed`` itself for a fresh study.

    A resumed session must not replay the random stream of the first one (it would propose the
    same architectures again), so it derives a new seed from ``seed`` and the study's length.
    """
    if trials_so_far == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _check_run_config(run_dir: Path, config: dict[str, Any]) -> None:
    path = run_dir / "run.json"
    if not path.exists():
        _write_json(path, config)
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    for key in ("seed", "recipe", "space", "population_size"):
        if stored.get(key) != config[key]:
            raise SearchConfigError(
                f"{run_dir} holds a search started with {key}={stored.get(key)!r}, not "
                f"{config[key]!r}; resume it with the same settings or use a new run directory"
            )


def _baseline_results(
    run_dir: Path,
    recipe: ProxyRecipe,
    names: tuple[str, ...],
    progress: Callable[[str], object],
) -> list[ArchitectureResult]:
    """Train and time each baseline with the proxy recipe; cached in ``baselines.json``."""
    import torch

    from zoo_store._etnas import count_params_and_macs
    from zoo_store.offline._proxy import build_baseline, load_source, measure_step_time, proxy_train

    path = run_dir / "baselines.json"
    stored: dict[str, Any] = {}
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("recipe_fingerprint") != recipe.fingerprint():
            stored = {}
    rows: dict[str, Any] = dict(stored.get("baselines", {}))
    data = load_source(recipe)
    for name in names:
        if name in rows:
            continue
        progress(f"[baseline] {name}: proxy training ({recipe.steps} steps)...")
        torch.manual_seed(recipe.seed)
        model = build_baseline(name, data.num_classes)
        params, macs = count_params_and_macs(model, (recipe.channels, recipe.image_size, recipe.image_size))
        outcome = proxy_train(model, recipe, data)
        timing = measure_step_time(model, recipe, data.num_classes)
        result = ArchitectureResult(
            name, name, True, params, macs, outcome.accuracy, timing.median_ms, None, outcome.train_seconds
        )
        rows[name] = asdict(result)
        _write_json(path, {"recipe_fingerprint": recipe.fingerprint(), "baselines": rows})
        progress(
            f"[baseline] {name}: acc={outcome.accuracy:.2f}%  "
            f"step={timing.median_ms:.1f} ms  ({outcome.train_seconds:.0f}s)"
        )
    return [ArchitectureResult(**rows[name]) for name in names if name in rows]


def _recover_interrupted(study: optuna.Study, progress: Callable[[str], object]) -> None:
    """Mark trials left RUNNING by a killed session as FAIL and queue their points again."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(dict(trial.params), skip_if_exists=False)
        progress(f"[resume] trial {trial.number} was interrupted; evaluating it again")


def _trial_result(trial: optuna.trial.FrozenTrial) -> ArchitectureResult:
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


def run_search(
    run_dir: str | Path,
    n_trials: int,
    seed: int = 0,
    proxy_steps: int = 300,
    batch_size: int = 64,
    baselines: bool | Sequence[str] = True,
    progress: Callable[[str], object] | None = print,
    *,
    source_uri: str = DEFAULT_SOURCE_URI,
    image_size: int = 32,
    population_size: int = 12,
    space: SearchSpace | None = None,
    device: str = "auto",
    timing_warmup: int = 3,
    timing_repeats: int = 10,
    threads: int | None = None,
    max_rejections: int = 500,
) -> SearchResult:
    """Run (or resume) the NAS in ``run_dir`` until it holds ``n_trials`` evaluated trials.

    Args:
        run_dir: the run directory (created if missing). Calling again on the same directory
            with the same settings resumes; more ``n_trials`` extends the search.
        n_trials: evaluated (COMPLETE) trials the study should hold when this returns.
        seed: seeds the sampler, the proxy training and the timing batch.
        proxy_steps: SGD steps of the proxy training.
        batch_size: training batch size, also the step-time batch size.
        baselines: also train and time the torchvision baselines (cached in the run dir);
            True for all of :data:`~zoo_store.offline._proxy.BASELINES`, or a sequence of their names.
        progress: called with one line per event (``None``: silent).
        source_uri: the source data (``nasoa_data`` URI).
        image_size: input size (32).
        population_size: NSGA-II population size.
        space: the search space (default :class:`SearchSpace`).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        timing_warmup: untimed steps before each step-time measurement.
        timing_repeats: timed steps (the step time is their median).
        threads: torch CPU threads for training and timing (default: ``NASOA_TORCH_THREADS``,
            else 1). Part of the run's settings: a resumed search must use the same count.
        max_rejections: give up after this many pruned proposals in a row.

    Returns:
        :class:`SearchResult`, also written to the run directory's files.
    """
    import optuna
    import torch

    from zoo_store._etnas import ETNAS
    from zoo_store.offline._proxy import device_description, load_source, measure_step_time, proxy_train

    say: Callable[[str], object] = progress or (lambda _line: None)
    space = space or SearchSpace()
    recipe = ProxyRecipe(
        source_uri=source_uri,
        steps=proxy_steps,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        device=device,
        timing_warmup=timing_warmup,
        timing_repeats=timing_repeats,
        **({} if threads is None else {"threads": threads}),
    )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_config(
        run_dir,
        {
            "seed": seed,
            "recipe": recipe.to_dict(),
            "recipe_fingerprint": recipe.fingerprint(),
            "space": space.to_dict(),
            "population_size": population_size,
            "device": device_description(device),
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "objectives": ["accuracy (maximize, %)", "step_ms (minimize)"],
        },
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    try:
        trials_so_far = len(optuna.load_study(study_name=_STUDY_NAME, storage=storage).get_trials(deepcopy=False))
    except KeyError:  # no study yet: a fresh run
        trials_so_far = 0
    sampler = optuna.samplers.NSGAIISampler(seed=_session_seed(seed, trials_so_far), population_size=population_size)
    study = optuna.create_study(
        study_name=_STUDY_NAME,
        storage=storage,
        sampler=sampler,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    _recover_interrupted(study, say)

    data = load_source(recipe)
    baseline_names = BASELINES if baselines is True else tuple(baselines or ())
    baseline_results = _baseline_results(run_dir, recipe, baseline_names, say)

    def completed() -> list[optuna.trial.FrozenTrial]:
        return study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])

    done = completed()
    seen = {str(t.user_attrs["encoding"]) for t in done}
    start_count = len(done)
    count = start_count
    pruned = 0
    rejections = 0
    if count < n_trials:
        say(f"[search] {count}/{n_trials} trials already evaluated in {run_dir}; {n_trials - count} to go")
    while count < n_trials:
        trial = study.ask()
        encoding, reason = _propose(trial, space, seen)
        if encoding is None:
            trial.set_user_attr("pruned_reason", reason)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            pruned += 1
            rejections += 1
            if rejections >= max_rejections:
                say(
                    f"[search] stopping: {rejections} proposals in a row were invalid or "
                    "duplicates; widen the search space or lower n_trials"
                )
                break
            continue
        rejections = 0
        try:
            torch.manual_seed(seed)
            model = ETNAS(encoding, num_classes=data.num_classes, in_chans=recipe.channels)
            params, macs = _count(encoding, data.num_classes, recipe.image_size)
            outcome = proxy_train(model, recipe, data)
            timing = measure_step_time(model, recipe, data.num_classes)
        except Exception as error:  # this architecture failed; the search goes on
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            say(f"[trial] {encoding} failed: {type(error).__name__}: {error}")
            continue
        # A KeyboardInterrupt (or a kill) leaves the trial RUNNING; the next call on this run
        # directory marks it FAIL and evaluates its architecture again.
        accuracy = outcome.accuracy if math.isfinite(outcome.accuracy) else 0.0
        for key, value in {
            "encoding": encoding,
            "params": params,
            "macs": macs,
            "train_seconds": round(outcome.train_seconds, 3),
            "final_loss": outcome.final_loss if math.isfinite(outcome.final_loss) else None,
            "diverged": outcome.diverged,
            "step_device": timing.device,
        }.items():
            trial.set_user_attr(key, value)
        study.tell(trial, [accuracy, timing.median_ms])
        seen.add(encoding)
        count += 1
        say(
            f"[trial {count}/{n_trials}] {encoding}  acc={accuracy:.2f}%  "
            f"step={timing.median_ms:.1f} ms  params={params / 1e6:.3f}M  "
            f"({outcome.train_seconds:.0f}s)"
        )

    result = _write_outputs(
        run_dir, study, recipe, seed, baseline_results, new_trials=count - start_count, pruned=pruned
    )
    say(
        f"[search] done: {len(result.evaluated)} evaluated, {len(result.front)} on the front; "
        f"wrote {', '.join(sorted(p.name for p in result.files.values()))} in {run_dir}"
    )
    return result


def load_search(run_dir: str | Path) -> SearchResult:
    """Read a run directory written by :func:`run_search` (no training, no writing)."""
    import optuna

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    recipe = ProxyRecipe.from_dict(config["recipe"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    study = optuna.load_study(study_name=_STUDY_NAME, storage=storage)
    evaluated = [_trial_result(t) for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])]
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


def _write_outputs(
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

    evaluated = [_trial_result(t) for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])]
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
    _write_json(
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
