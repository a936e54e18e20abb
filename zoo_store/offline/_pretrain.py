"""Pretraining zoo architectures on the source dataset and registering them with provenance.

The source data is ``builtin:patterns`` (procedurally generated classes), disjoint from every
fine-tuning task (``builtin:digits``, ``builtin:fashion-mnist``, ``builtin:shapes``). The
default zoo is built by::

    nasoa-zoo pretrain --default-zoo --zoo-dir zoo_store/default_zoo --overwrite

and architectures found by the NAS come in with ``--from-nas <search dir or front file>``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from zoo_store._entries import ZooEntry
    from zoo_store._store import ZooStore

__all__ = [
    "DEFAULT_SOURCE_URI",
    "DEFAULT_ZOO_SPECS",
    "PretrainRecipe",
    "PretrainSpec",
    "load_nas_specs",
    "pretrain_and_register",
    "pretrain_model",
]

DEFAULT_SOURCE_URI = "builtin:patterns?train=8000&test=2000&seed=0"


@dataclass(frozen=True)
class PretrainSpec:
    """One architecture to pretrain: zoo name, ET-NAS encoding, and where it came from."""

    name: str
    encoding: str
    search_run: str = "hand-picked"
    extra_provenance: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PretrainRecipe:
    """The pretraining recipe (the same for every model of a zoo)."""

    source_uri: str = DEFAULT_SOURCE_URI
    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    zero_init_residual: bool = False
    seed: int = 0
    input_size: int = 32
    threads: int = 1
    step_batch_size: int = 64

    def describe(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, wd={self.weight_decay}, nesterov) "
            f"{self.warmup_epochs} warm-up epochs then cosine, "
            f"{'zero-init residual BN, ' if self.zero_init_residual else ''}"
            f"batch {self.batch_size}, {self.epochs} epochs, {self.input_size}x{self.input_size}"
        )


# Hand-picked ET-NAS encodings (the released block designs with small base widths and fewer
# blocks): the slow end of the default zoo, next to the NAS front members (docs/ZOO.md).
DEFAULT_ZOO_SPECS: tuple[PretrainSpec, ...] = (
    PretrainSpec("etnas-z1", "031-_8_1-2-2-2"),
    PretrainSpec("etnas-z2", "031-_16_1-1-21-121"),
    PretrainSpec("etnas-z3", "031-_32_1-11-12-1"),
    PretrainSpec("etnas-z4", "031-_16_1-1-221-11121"),
    PretrainSpec("etnas-z5", "011-_24_2-211-2-11112"),
    PretrainSpec("etnas-z7", "02031-a02_16_111-2111-2111111-21"),
)


def zero_init_residual(model: nn.Module) -> int:
    """Zero the last BN scale of every block's last layer (Goyal et al. 2017), so each block
    starts as its shortcut; deep ET-NAS stacks then train from the first step. Returns the count."""
    from torch import nn

    count = 0
    for module in model.modules():
        layers = getattr(module, "module_list", None)
        if type(module).__name__ != "_Block" or not layers:
            continue
        norms = [m for m in layers[-1][0].modules() if isinstance(m, nn.BatchNorm2d)]
        if norms:
            nn.init.zeros_(norms[-1].weight)
            count += 1
    return count


def _evaluate(model: nn.Module, loader: Iterable[Any]) -> float:
    import torch

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += int(y.numel())
    return 100.0 * correct / max(total, 1)


def pretrain_model(
    encoding: str,
    recipe: PretrainRecipe,
    *,
    datasets: tuple[Any, Any, int] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, float, float]:
    """Train an ET-NAS encoding on the source data; returns (model, test accuracy %, seconds)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from zoo_store._etnas import ETNAS

    if datasets is None:
        datasets = load_source(recipe)
    train_ds, test_ds, num_classes = datasets
    torch.manual_seed(recipe.seed)
    model = ETNAS(encoding, num_classes=num_classes)
    if recipe.zero_init_residual:
        zero_init_residual(model)
    gen = torch.Generator().manual_seed(recipe.seed)
    train = DataLoader(train_ds, batch_size=recipe.batch_size, shuffle=True, generator=gen, drop_last=True)
    test = DataLoader(test_ds, batch_size=256)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=True,
    )
    total_steps = max(1, recipe.epochs * len(train))
    warmup = int(recipe.warmup_epochs * len(train))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(step - warmup, total_steps - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        running = 0.0
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
        if log:
            log(f"  epoch {epoch + 1}/{recipe.epochs} loss {running / max(1, len(train)):.3f}")
    seconds = time.perf_counter() - start
    accuracy = _evaluate(model, test)
    return model, accuracy, seconds


def load_source(recipe: PretrainRecipe) -> tuple[Any, Any, int]:
    """The source train/test datasets and class count (nasoa_data)."""
    import nasoa_data

    ref = nasoa_data.resolve(recipe.source_uri)
    return nasoa_data.make_torch_datasets(ref, image_size=recipe.input_size, channels=3)


def pretrain_and_register(
    store: ZooStore,
    specs: Iterable[PretrainSpec],
    recipe: PretrainRecipe | None = None,
    *,
    overwrite: bool = False,
    profile_devices: Iterable[str] = ("cpu",),
    log: Callable[[str], None] | None = print,
) -> list[ZooEntry]:
    """Pretrain each spec, store its checkpoint and entry (with provenance and step times)."""
    import torch

    from zoo_store._entries import ZooEntry, check_name
    from zoo_store._profile import device_class, measure_step_time
    from zoo_store._store import create_model_from_entry

    recipe = recipe or PretrainRecipe()
    specs = list(specs)
    for spec in specs:
        check_name(spec.name)
        if store.has(spec.name) and not overwrite:
            raise FileExistsError(f"zoo model {spec.name!r} already exists in {store.root}; pass --overwrite")
    torch.set_num_threads(recipe.threads)
    datasets = load_source(recipe)
    done = []
    for spec in specs:
        if log:
            log(f"pretraining {spec.name} ({spec.encoding}) on {recipe.source_uri}")
        model, accuracy, seconds = pretrain_model(spec.encoding, recipe, datasets=datasets, log=log)
        provenance = {
            "search_run": spec.search_run,
            "seed": str(recipe.seed),
            "source_data": recipe.source_uri,
            "epochs": str(recipe.epochs),
            "recipe": recipe.describe(),
            "train_seconds": f"{seconds:.1f}",
            "torch": torch.__version__.split("+")[0],
            "threads": str(recipe.threads),
            **spec.extra_provenance,
        }
        draft = ZooEntry(
            name=spec.name,
            family="etnas",
            architecture=spec.encoding,
            num_params=0,
            macs=0,
            input_size=recipe.input_size,
            step_batch_size=recipe.step_batch_size,
            source_accuracy=round(accuracy, 2),
            provenance=provenance,
        )
        entry = store.register(draft, state_dict=model.state_dict(), overwrite=overwrite)
        times = {}
        for dev in profile_devices:
            dev_class = device_class(dev)
            if dev_class == "cuda" and not torch.cuda.is_available():
                continue
            fresh = create_model_from_entry(entry, checkpoint_path=store.blob_path(entry.sha256))
            times[dev_class] = round(
                measure_step_time(
                    fresh,
                    batch_size=recipe.step_batch_size,
                    input_size=recipe.input_size,
                    device=dev_class,
                ),
                3,
            )
        entry = entry.replace(step_time_ms=times)
        store.put_entry(entry)
        if log:
            log(
                f"  {spec.name}: accuracy {accuracy:.2f}%, {entry.num_params / 1e6:.3f}M params, "
                f"{entry.macs / 1e6:.1f}M MACs, step {times} ms, trained in {seconds:.0f}s"
            )
        done.append(entry)
    return done


def load_nas_specs(path: str | os.PathLike[str], prefix: str = "etnas-nas") -> list[PretrainSpec]:
    """Pretrain specs from a NAS output: a JSON front file or a search directory holding one.

    Accepted JSON: a list of members, or an object with a ``front``/``pareto``/``pareto_front``/
    ``members`` list; each member is an encoding string or an object with ``encoding`` (and
    optionally ``name``, ``trial``/``number``). A text file with one encoding per line works too.
    """
    p = Path(path)
    if p.is_dir():
        for candidate in ("front.json", "pareto.json", "pareto_front.json", "result.json"):
            if (p / candidate).is_file():
                p = p / candidate
                break
        else:
            raise FileNotFoundError(f"no front.json/pareto.json in NAS output directory {path}")
    text = p.read_text()
    run = p.parent.name if p.parent.name else str(p)
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        data = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if isinstance(data, dict):
        run = str(data.get("search_run") or data.get("study_name") or data.get("run") or run)
        for key in ("front", "pareto", "pareto_front", "members"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            raise ValueError(f"{p}: no front/pareto/members list in the NAS output")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{p}: the NAS output lists no architectures")
    specs = []
    for i, member in enumerate(data, start=1):
        if isinstance(member, str):
            encoding, name, extra = member, f"{prefix}-{i}", {}
        elif isinstance(member, dict) and "encoding" in member:
            encoding = str(member["encoding"])
            trial = member.get("trial", member.get("number"))
            name = str(member.get("name") or f"{prefix}-{i}")
            if not name.startswith("etnas"):
                name = f"etnas-{name}"
            extra = {"search_trial": str(trial)} if trial is not None else {}
        else:
            raise ValueError(f"{p}: member {i} has no encoding")
        specs.append(PretrainSpec(name, encoding, search_run=f"{run} ({p})", extra_provenance=extra))
    return specs
