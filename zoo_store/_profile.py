"""Measured training step time: forward + backward + SGD step at a fixed batch size.

The zoo's second objective (and the adaptor's time model) is the time of one training step on
the device class that will run it, measured rather than estimated from MACs: a few warm-up
steps, then the median of N timed steps.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from zoo_store._entries import ZooEntry
    from zoo_store._store import ZooStore

__all__ = ["DEFAULT_STEP_BATCH_SIZE", "device_class", "measure_step_time", "profile_entries"]

DEFAULT_STEP_BATCH_SIZE = 64


def device_class(device: str | None = None) -> str:
    """``"cuda"`` or ``"cpu"``: the given device's class, or the best available one."""
    if device is None:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use cpu or cuda")
    return kind


def measure_step_time(
    model: nn.Module,
    *,
    batch_size: int = DEFAULT_STEP_BATCH_SIZE,
    input_size: int = 32,
    num_classes: int = 10,
    device: str = "cpu",
    warmup: int = 3,
    steps: int = 10,
) -> float:
    """Median milliseconds of one SGD training step of ``model`` on random data.

    The model's own classifier is used; targets are drawn below ``num_classes`` (clipped to the
    classifier's size). The model is trained in place on ``device`` and left there, in train
    mode, so pass a copy if its weights matter.
    """
    import torch
    from torch import nn

    if steps < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("steps >= 1, warmup >= 0 and batch_size >= 1 are required")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available here")
    model = model.to(dev).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, input_size, input_size, generator=gen).to(dev)
    with torch.no_grad():
        out_dim = model(x[:2]).shape[1]
    y = torch.randint(0, max(1, min(num_classes, out_dim)), (batch_size,), generator=gen).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def profile_entries(
    store: ZooStore,
    names: list[str] | None = None,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    warmup: int = 3,
    steps: int = 10,
) -> list[ZooEntry]:
    """Measure and store the step time of the named entries (all when empty) on ``device``."""
    from zoo_store._store import create_model_from_entry

    dev_class = device_class(device)
    updated = []
    for name in names or store.list_models():
        entry = store.get_entry(name)
        model = create_model_from_entry(entry, pretrained=True, checkpoint_path=store.blob_path(entry.sha256))
        bs = batch_size or entry.step_batch_size or DEFAULT_STEP_BATCH_SIZE
        ms = measure_step_time(
            model,
            batch_size=bs,
            input_size=entry.input_size,
            device=dev_class,
            warmup=warmup,
            steps=steps,
        )
        updated.append(store.update_step_time(name, dev_class, ms, bs))
    return updated
