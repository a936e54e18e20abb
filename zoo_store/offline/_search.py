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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_store.offline._proxy import BASELINES, DEFAULT_SOURCE_URI, ProxyRecipe
from zoo_store.offline._results import (
    STUDY_NAME,
    ArchitectureResult,
    SearchResult,
    write_json,
    write_outputs,
)
from zoo_store.offline._space import SearchSpace, encoding_params_and_macs, propose

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchConfigError", "run_search"]


class SearchConfigError(ValueError):
    """A run directory that was started with other settings than the ones given now."""


def _session_seed(seed: int, trials_so_far: int) -> int:
    """Sampler seed of a (re)started session: ``seed`` itself for a fresh study.

    A resumed session must not replay the random stream of the first one (it would propose the
    same architectures again), so it derives a new seed from ``seed`` and the study's length.
    """
    if trials_so_far == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


def _check_run_config(run_dir: Path, config: dict[str, Any]) -> None:
    path = run_dir / "run.json"
    if not path.exists():
        write_json(path, config)
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
        write_json(path, {"recipe_fingerprint": recipe.fingerprint(), "baselines": rows})
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
        trials_so_far = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials(deepcopy=False))
    except KeyError:  # no study yet: a fresh run
        trials_so_far = 0
    sampler = optuna.samplers.NSGAIISampler(seed=_session_seed(seed, trials_so_far), population_size=population_size)
    study = optuna.create_study(
        study_name=STUDY_NAME,
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
        encoding, reason = propose(trial, space, seen)
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
            params, macs = encoding_params_and_macs(encoding, data.num_classes, recipe.image_size)
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

    result = write_outputs(
        run_dir, study, recipe, seed, baseline_results, new_trials=count - start_count, pruned=pruned
    )
    say(
        f"[search] done: {len(result.evaluated)} evaluated, {len(result.front)} on the front; "
        f"wrote {', '.join(sorted(p.name for p in result.files.values()))} in {run_dir}"
    )
    return result
