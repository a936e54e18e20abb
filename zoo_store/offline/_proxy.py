"""The proxy training recipe: one short, fixed training budget shared by everything it ranks.

The offline NAS scores every candidate architecture by its accuracy after a *proxy* training:
a small, fixed number of SGD steps on the source data (``builtin:patterns``, procedurally
generated classes), from a fixed seed, at 32x32 input. The torchvision baselines (ResNet-18,
MobileNetV3-small, RegNetX-400MF) are trained with exactly the same recipe, from random
initialisation and with their architecture as torchvision defines it (only ``num_classes`` is
set), so that accuracies and step times are comparable. :class:`ProxyRecipe` is that recipe;
its :meth:`~ProxyRecipe.fingerprint` identifies it in run directories and benchmark reports.

The second objective, the training step time, is measured by :func:`measure_step_time`: one
SGD step (forward, backward, optimiser update) on a fixed batch at the recipe's batch size and
input size, repeated after a warm-up, reporting the median.

>>> recipe = ProxyRecipe(steps=200, batch_size=64)
>>> recipe.fingerprint() == ProxyRecipe(steps=200, batch_size=64).fingerprint()
True
>>> recipe.fingerprint() == ProxyRecipe(steps=300, batch_size=64).fingerprint()
False
>>> [round(recipe.learning_rate_at(step), 4) for step in (0, 9, 10, 104, 199)]
[0.005, 0.05, 0.05, 0.025, 0.0]
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported lazily: `nasoa-zoo --help` must start fast.
    import torch
    from torch import nn

__all__ = [
    "BASELINES",
    "DEFAULT_SOURCE_URI",
    "ProxyRecipe",
    "ProxyResult",
    "SourceData",
    "StepTiming",
    "build_baseline",
    "device_description",
    "load_source",
    "measure_interleaved",
    "measure_step_time",
    "proxy_train",
    "resolve_device",
    "threads_of",
]

#: Source data of the proxy training: generated classes, disjoint from every fine-tuning task.
DEFAULT_SOURCE_URI = os.environ.get("NASOA_PROXY_SOURCE", "builtin:patterns?train=4096&test=1024&seed=0")

#: The torchvision baselines, by torchvision builder name (random init, ``num_classes`` set).
BASELINES: tuple[str, ...] = ("resnet18", "mobilenet_v3_small", "regnet_x_400mf")


@dataclass(frozen=True)
class ProxyRecipe:
    """How a model is proxy-trained and timed. Everything that affects the two numbers.

    Attributes:
        source_uri: the source dataset (``nasoa_data`` URI).
        steps: SGD steps of the proxy training.
        batch_size: training batch size, also the batch size of the step-time measurement.
        image_size: input height and width.
        channels: input channels.
        lr: peak learning rate (linear warm-up over ``warmup_fraction`` of the steps, then
            cosine decay to 0).
        momentum: SGD (Nesterov) momentum.
        weight_decay: L2 weight decay on every parameter.
        warmup_fraction: fraction of ``steps`` spent warming up.
        seed: seed of weight initialisation and batch order.
        timing_warmup: untimed steps before the step-time measurement.
        timing_repeats: timed steps; the step time is their median.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present).
        threads: torch intra-op threads for training and timing (0: torch's default). The
            default, 1 (``NASOA_TORCH_THREADS``), keeps CPU timings stable on a shared
            machine, where OpenMP threads waiting on a descheduled sibling inflate step times
            erratically.

    Only the fields that change what a model learns enter :meth:`fingerprint`; ``device``,
    ``threads`` and the timing fields change only how fast it goes.
    """

    source_uri: str = DEFAULT_SOURCE_URI
    steps: int = 300
    batch_size: int = 64
    image_size: int = 32
    channels: int = 3
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.05
    seed: int = 0
    timing_warmup: int = 3
    timing_repeats: int = 10
    device: str = "auto"
    threads: int = int(os.environ.get("NASOA_TORCH_THREADS", "1"))

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "image_size", "channels", "timing_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProxyRecipe.{name} must be an integer >= 1, got {value!r}")
        if self.timing_warmup < 0:
            raise ValueError(f"ProxyRecipe.timing_warmup must be >= 0, got {self.timing_warmup}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"ProxyRecipe.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"ProxyRecipe.device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ProxyRecipe:
        return cls(**data)  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """Short stable hash of the training part of the recipe (see the class docstring)."""
        fields = self.to_dict()
        for name in ("device", "threads", "timing_warmup", "timing_repeats"):
            fields.pop(name)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def learning_rate_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based): linear warm-up, then cosine to 0."""
        warmup = max(1, round(self.warmup_fraction * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup + 1) / max(1, self.steps - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class StepTiming:
    """A measured training step time (ms): the median of the per-round medians."""

    median_ms: float
    round_medians_ms: tuple[float, ...]
    batch_size: int
    image_size: int
    device: str


@dataclass(frozen=True)
class ProxyResult:
    """Outcome of one proxy training: top-1 accuracy (%) on the source test split."""

    accuracy: float
    final_loss: float
    train_seconds: float
    diverged: bool


@dataclass(frozen=True)
class SourceData:
    """The source dataset: the augmented training set and the test split as tensors.

    ``train`` yields ``(normalised CHW tensor, label)`` with ``nasoa_data``'s light
    augmentation (random crop, drawn from torch's global RNG); the test split is held as
    tensors, since it is not augmented.
    """

    train: Any
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    uri: str

    def train_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        items = [self.train[int(i)] for i in index]
        return (torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.long))


@contextlib.contextmanager
def threads_of(recipe: ProxyRecipe) -> Iterator[None]:
    """Run the body with ``recipe.threads`` torch threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SOURCE_CACHE: dict[tuple[str, int, int], SourceData] = {}


def resolve_device(name: str = "auto") -> str:
    """``"cuda"`` when asked for (or ``"auto"`` and present), else ``"cpu"``."""
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def device_description(device: str = "auto") -> str:
    """What the step times were measured on, e.g. ``'cpu: AMD EPYC (2 cores)'``."""
    import torch

    device = resolve_device(device)
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {model} ({os.cpu_count()} cores)"


def load_source(recipe: ProxyRecipe) -> SourceData:
    """The recipe's source data (cached per process)."""
    import torch

    key = (recipe.source_uri, recipe.image_size, recipe.channels)
    cached = _SOURCE_CACHE.get(key)
    if cached is not None:
        return cached
    from nasoa_data import make_torch_datasets, resolve

    train_ds, test_ds, num_classes = make_torch_datasets(
        resolve(recipe.source_uri), image_size=recipe.image_size, channels=recipe.channels
    )
    test = [test_ds[i] for i in range(len(test_ds))]  # type: ignore[arg-type]
    data = SourceData(
        train=train_ds,
        test_x=torch.stack([x for x, _ in test]),
        test_y=torch.tensor([int(y) for _, y in test], dtype=torch.long),
        num_classes=int(num_classes),
        uri=recipe.source_uri,
    )
    _SOURCE_CACHE[key] = data
    return data


def build_baseline(name: str, num_classes: int) -> nn.Module:
    """A torchvision baseline, random init, architecture as-is, ``num_classes`` outputs.

    >>> model = build_baseline("resnet18", 10)
    >>> model.fc.out_features
    10
    """
    import torchvision.models as tvm

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    builder: Callable[..., nn.Module] = getattr(tvm, name)
    return builder(weights=None, num_classes=num_classes)


def _evaluate(model: nn.Module, data: SourceData, device: str, batch_size: int = 256) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.test_y), batch_size):
            x = data.test_x[start : start + batch_size].to(device)
            y = data.test_y[start : start + batch_size].to(device)
            correct += int((model(x).argmax(dim=1) == y).sum())
    return 100.0 * correct / max(1, len(data.test_y))


def proxy_train(model: nn.Module, recipe: ProxyRecipe, data: SourceData | None = None) -> ProxyResult:
    """Train ``model`` (in place) with the proxy recipe; return its source test accuracy.

    Batches are drawn without replacement from a permutation reshuffled every epoch by a
    generator seeded with ``recipe.seed``; initialise the model after ``torch.manual_seed``
    for a fully seeded run. A loss that turns non-finite stops the training early
    (``diverged=True``); the accuracy is still measured.
    """

    with threads_of(recipe):
        return _proxy_train(model, recipe, data or load_source(recipe))


def _proxy_train(model: nn.Module, recipe: ProxyRecipe, data: SourceData) -> ProxyResult:
    import torch
    from torch import nn as tnn

    device = resolve_device(recipe.device)
    model.to(device)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    loss_fn = tnn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)  # the augmentation draws from the global RNG
    count = len(data.train)
    order = torch.randperm(count, generator=generator)
    cursor = 0
    loss_value = float("nan")
    diverged = False
    started = time.perf_counter()
    for step in range(recipe.steps):
        if cursor + recipe.batch_size > count:
            order = torch.randperm(count, generator=generator)
            cursor = 0
        index = order[cursor : cursor + recipe.batch_size]
        cursor += recipe.batch_size
        x, y = data.train_batch(index)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == recipe.steps - 1:
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                diverged = True
                break
    seconds = time.perf_counter() - started
    accuracy = _evaluate(model, data, device)
    return ProxyResult(accuracy=accuracy, final_loss=loss_value, train_seconds=seconds, diverged=diverged)


def _timed_median(model: nn.Module, recipe: ProxyRecipe, num_classes: int, warmup: int, repeats: int) -> float:
    """One measurement with the project's step-time profiler (:mod:`zoo_store._profile`)."""
    from zoo_store._profile import measure_step_time as profile_step_time

    with threads_of(recipe):
        return profile_step_time(
            model,
            batch_size=recipe.batch_size,
            input_size=recipe.image_size,
            num_classes=num_classes,
            device=resolve_device(recipe.device),
            warmup=warmup,
            steps=repeats,
        )


def measure_step_time(
    model: nn.Module,
    recipe: ProxyRecipe,
    num_classes: int,
    *,
    warmup: int | None = None,
    repeats: int | None = None,
) -> StepTiming:
    """Median wall time (ms) of one training step of ``model`` at the recipe's batch size.

    A step is ``zero_grad``, forward, cross-entropy, backward and an SGD update on a fixed
    random batch, timed by :func:`zoo_store._profile.measure_step_time` (the same profiler
    that records the zoo entries' step times). The model is copied first, so its weights are
    not touched.
    """
    median = _timed_median(
        copy.deepcopy(model),
        recipe,
        num_classes,
        recipe.timing_warmup if warmup is None else warmup,
        recipe.timing_repeats if repeats is None else repeats,
    )
    return StepTiming(
        median_ms=median,
        round_medians_ms=(round(median, 4),),
        batch_size=recipe.batch_size,
        image_size=recipe.image_size,
        device=device_description(recipe.device),
    )


def measure_interleaved(
    models: Sequence[nn.Module],
    recipe: ProxyRecipe,
    num_classes: int,
    *,
    rounds: int = 3,
    warmup: int | None = None,
    repeats: int | None = None,
) -> list[StepTiming]:
    """Step times of several models measured in turns (round-robin), in this process.

    Each of ``rounds`` rounds measures every model once (warm-up, then the median of the
    timed steps); a model's step time is the median of its round medians. Interleaving spreads
    slow drifts of the machine (thermal, other load) evenly over the models being compared.
    """
    copies = [copy.deepcopy(model) for model in models]
    medians: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for index, model in enumerate(copies):
            medians[index].append(
                _timed_median(
                    model,
                    recipe,
                    num_classes,
                    recipe.timing_warmup if warmup is None else warmup,
                    recipe.timing_repeats if repeats is None else repeats,
                )
            )
    description = device_description(recipe.device)
    return [
        StepTiming(
            median_ms=statistics.median(values),
            round_medians_ms=tuple(round(value, 4) for value in values),
            batch_size=recipe.batch_size,
            image_size=recipe.image_size,
            device=description,
        )
        for values in medians
    ]
