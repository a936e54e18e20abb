"""``nasoa-bench worker``: what the worker's fine-tuning path costs, and whether deadlines hold.

Two figures, in one process, on the CPU:

- throughput: images/s of :func:`worker._finetune.run_finetune` (what a worker runs for a
  job: deadline checks before each batch, a cancel check, one evaluation per epoch) against
  a bare PyTorch loop with the same model, data, batch size, optimizer and per-epoch
  evaluation, alternating the two (five runs each, the fastest kept: on a shared machine the
  others measure the neighbours);
- deadlines: ``jobs`` deadline-bound runs (more epochs than fit), each timed from the model's
  creation from its checkpoint as the worker's budget is, and the share that ended within
  budget x 1.05.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = ["WorkerBenchResult", "format_worker", "run_worker_benchmark"]

DATASET = "builtin:digits"
MODEL = "etnas-z1"
BATCH_SIZE = 64
LR = 0.05


@dataclass(frozen=True)
class WorkerBenchResult:
    model: str
    dataset: str
    batch_size: int
    epochs: int
    worker_images_per_s: float
    bare_images_per_s: float
    worker_vs_bare: float
    jobs: int
    within_budget: int
    within_budget_share: float
    worst_overrun: float
    budgets: list[float]
    seconds: list[float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _model(name: str) -> object:
    from zoo_store import create_model_from_entry, default_store

    store = default_store()
    return create_model_from_entry(store.get_entry(name), pretrained=True, checkpoint_path=store.checkpoint_path(name))


def _worker_run(epochs: int, deadline: float, model_name: str = MODEL) -> tuple[float, int, float]:
    """(seconds, images trained, seconds in training) of run_finetune, as a worker runs it."""
    from worker import FinetuneSpec, run_finetune

    start = time.monotonic()
    model = _model(model_name)
    spec = FinetuneSpec(DATASET, epochs=epochs, lr=LR, batch_size=BATCH_SIZE,
                        deadline_seconds=max(deadline - (time.monotonic() - start), 0.5), num_threads=1)
    cancel = _never_cancelled()
    result = run_finetune(spec, model, should_stop=cancel)
    return time.monotonic() - start, result.epochs_completed, result.seconds


def _never_cancelled() -> Callable[[], bool]:
    import threading

    event = threading.Event()  # what the worker's reporter thread sets on a cancellation
    return event.is_set


def _bare_run(epochs: int) -> float:
    """Seconds of a plain PyTorch loop: same model, data, batch, optimizer, one evaluation per epoch."""
    import torch
    from torch.utils.data import DataLoader

    from nasoa_data import make_torch_datasets, resolve

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.monotonic()
        model = _model(MODEL)
        train, test, classes = make_torch_datasets(resolve(DATASET), 32, channels=3)
        model.reset_classifier(classes)
        loader = DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(0))
        test_loader = DataLoader(test, batch_size=256)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss.item()
            model.eval()
            with torch.inference_mode():
                sum(int((model(x).argmax(1) == y).sum()) for x, y in test_loader)
        return time.monotonic() - start
    finally:
        torch.set_num_threads(previous)


def run_worker_benchmark(jobs: int = 30, epochs: int = 3, progress: Callable[[str], None] = print) -> WorkerBenchResult:
    from nasoa_data import make_torch_datasets, resolve

    train, _test, _classes = make_torch_datasets(resolve(DATASET), 32, channels=3)
    images = epochs * (len(train) // BATCH_SIZE) * BATCH_SIZE
    progress(f"throughput: {MODEL} on {DATASET}, batch {BATCH_SIZE}, {epochs} epochs, worker path vs bare loop x5")
    worker_s, bare_s = [], []
    _bare_run(1)  # warm-up: first-call costs belong to neither
    for _ in range(5):
        seconds, done, _ = _worker_run(epochs, deadline=3600.0)
        if done != epochs:
            raise RuntimeError(f"the worker path ran {done} of {epochs} epochs without a deadline")
        worker_s.append(seconds)
        bare_s.append(_bare_run(epochs))
    worker_rate = images / min(worker_s)
    bare_rate = images / min(bare_s)
    progress(f"deadlines: {jobs} deadline-bound runs of 3 models, budgets 4-12 s")
    budgets, seconds = [], []
    models = ("etnas-z1", "etnas-z3", "etnas-z5")
    for i in range(jobs):
        budget = 4.0 + (i * 5) % 9
        took, _done, _ = _worker_run(epochs=200, deadline=budget, model_name=models[i % len(models)])
        budgets.append(budget)
        seconds.append(round(took, 3))
    within = sum(s <= b * 1.05 for s, b in zip(seconds, budgets, strict=True))
    return WorkerBenchResult(
        model=MODEL,
        dataset=DATASET,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        worker_images_per_s=round(worker_rate, 1),
        bare_images_per_s=round(bare_rate, 1),
        worker_vs_bare=round(worker_rate / bare_rate, 3),
        jobs=jobs,
        within_budget=within,
        within_budget_share=round(within / jobs, 3),
        worst_overrun=round(max(s / b for s, b in zip(seconds, budgets, strict=True)), 3),
        budgets=budgets,
        seconds=seconds,
    )


def format_worker(r: WorkerBenchResult) -> str:
    return "\n".join([
        f"{r.model} on {r.dataset}, batch {r.batch_size}, {r.epochs} epochs (train + one evaluation per epoch):",
        f"  worker path {r.worker_images_per_s:.0f} images/s, bare PyTorch loop {r.bare_images_per_s:.0f} images/s "
        f"(worker/bare x{r.worker_vs_bare:.3f})",
        f"deadline-bound runs ending within budget x 1.05: {r.within_budget}/{r.jobs} "
        f"({100 * r.within_budget_share:.0f}%), worst seconds/budget x{r.worst_overrun:.3f}",
    ])
