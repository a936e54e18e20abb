"""Fine-tuning one pretrained model on one dataset under a hard deadline (plain PyTorch).

No Celery and no gRPC here: the task wrappers call :func:`run_finetune` and forward its
progress and result.  torch is imported inside the functions, so importing this module (in a
Celery parent process, say) initialises neither torch threads nor CUDA.

A run is defined by its whole planned schedule (``FinetuneSpec.epochs``, with the cosine
learning rate over all of them).  It may stop after any epoch (``stop_after_epochs``) with a
:class:`~worker._checkpoints.TrainingCheckpoint` and continue later, on any worker
(``resume=``), the same as if it had never stopped: each epoch's data order is a pure function
of (seed, epoch), and weights, optimiser, scheduler and RNG states travel in the checkpoint.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker._checkpoints import TrainingCheckpoint, cloned, run_fingerprint

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "EpochProgress",
    "EpochShuffle",
    "FinetuneCancelled",
    "FinetuneResult",
    "FinetuneSpec",
    "OPTIMIZERS",
    "run_finetune",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SGD_MOMENTUM = 0.9
EVAL_BATCH_SIZE = 256  # forward-only: bigger batches are faster and memory is not an issue
# Deadline arithmetic.  A batch may run SAFETY_FACTOR times slower than the running estimate
# (a noisy neighbour, a slow last batch); SAFETY_SECONDS covers the rest (returning, timers).
SAFETY_FACTOR = 1.5
SAFETY_SECONDS = 0.05
# Until one evaluation has been measured, a forward-only eval batch is taken to cost this
# fraction of a training batch of the same size (forward+backward+step is ~3x a forward).
EVAL_COST_FRACTION = 0.5


class FinetuneCancelled(Exception):
    """Raised by :func:`run_finetune` when ``should_stop()`` returned True."""


@dataclass(frozen=True)
class FinetuneSpec:
    """What to fine-tune on and how (the regime the scheduler chose).

    ``frozen_stages``: the first k stages of ``model.stage_modules()`` (stem first) get no
    gradient and keep their BatchNorm statistics; the head is always trained.  The learning
    rate follows a cosine from ``lr`` to 0 over ``epochs`` (stepped per batch).
    ``deadline_seconds`` counts from the call to :func:`run_finetune`, data loading included.

    >>> FinetuneSpec("builtin:digits", epochs=2, lr=0.05).optimizer
    'sgd'
    >>> FinetuneSpec("builtin:digits", epochs=0, lr=0.05)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be an integer >= 1, got 0
    """

    dataset_uri: str
    epochs: int
    lr: float
    batch_size: int = 64
    frozen_stages: int = 0
    optimizer: str = "sgd"  # sgd | adam | adamw
    weight_decay: float = 1e-4
    deadline_seconds: float = 60.0
    seed: int = 0
    image_size: int = 32
    data_root: str | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        def finite(name: str, value: Any, minimum: float, inclusive: bool) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
            if not ok:
                op = ">=" if inclusive else ">"
                raise ValueError(f"{name} must be a finite number {op} {minimum}, got {value!r}")

        if not isinstance(self.dataset_uri, str) or not self.dataset_uri:
            raise ValueError(f"dataset_uri must be a non-empty string, got {self.dataset_uri!r}")
        positive_int("epochs", self.epochs)
        finite("lr", self.lr, 0.0, inclusive=False)
        positive_int("batch_size", self.batch_size)
        positive_int("frozen_stages", self.frozen_stages, minimum=0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        finite("weight_decay", self.weight_decay, 0.0, inclusive=True)
        finite("deadline_seconds", self.deadline_seconds, 0.0, inclusive=False)
        positive_int("seed", self.seed, minimum=0)
        positive_int("image_size", self.image_size, minimum=8)
        if self.num_threads is not None:
            positive_int("num_threads", self.num_threads)


@dataclass(frozen=True)
class EpochProgress:
    """One finished epoch: validation accuracy (percent) and seconds since the call started
    (for a resumed run: since the run started, the earlier stages' seconds included)."""

    epoch: int  # 1-based
    accuracy: float
    seconds: float
    train_loss: float


@dataclass(frozen=True)
class FinetuneResult:
    """The outcome of :func:`run_finetune`.

    ``curve`` has one validation accuracy per completed epoch.  The model is returned with
    the weights of its best validation accuracy (``validation_accuracy``; ``best_epoch`` is
    that epoch, or 0 for the weights at a deadline that stopped training mid-epoch, when they
    scored best).  ``accuracy`` (percent) is the test split's, measured once, on those
    weights.  ``seconds`` is the whole call, data loading and evaluation included.

    A resumed run's ``curve`` is the whole run's, the checkpoint's epochs first
    (``resumed_epochs`` of them), with cumulative seconds; ``epochs_completed`` counts them
    all, and ``seconds`` this call alone.  ``checkpoint`` is set when the run
    stopped as planned (``stop_after_epochs``) before the end of its schedule: continue it with
    ``run_finetune(..., resume=result.checkpoint)``.
    """

    accuracy: float
    seconds: float
    curve: tuple[EpochProgress, ...]
    epochs_completed: int
    stopped_by_deadline: bool
    num_classes: int
    validation_accuracy: float = 0.0
    best_epoch: int = 0
    class_names: tuple[str, ...] = ()
    split_sizes: tuple[int, int, int] = (0, 0, 0)  # train (fitted), validation, test
    dataset_uri: str = ""  # canonical
    checkpoint: TrainingCheckpoint | None = None
    resumed_epochs: int = 0


def run_finetune(
    spec: FinetuneSpec,
    model: nn.Module,
    progress: Callable[[EpochProgress], None] | None = None,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    *,
    stop_after_epochs: int = 0,
    resume: TrainingCheckpoint | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``spec.dataset_uri`` and evaluate it.

    ``model`` must offer ``reset_classifier(num_classes)`` and ``stage_modules()`` (a list of
    lists of modules, stem first, head excluded).  It is left on ``device`` in eval mode.

    Each epoch ends with an evaluation on the validation split; the best weights are kept and
    the test split is scored once, at the end, on them (see :class:`FinetuneResult`).
    Training stops early, with ``stopped_by_deadline=True``, when the next batch plus the final
    evaluations would not fit before the deadline; batch and evaluation times are measured as it
    goes.  The deadline cannot undercut loading the data and one evaluation.
    ``progress`` is called after each epoch's evaluation; ``should_stop`` is polled before every
    batch and raises :class:`FinetuneCancelled` when it returns True.

    ``stop_after_epochs`` (0: the whole schedule) ends training after that epoch of the
    schedule and returns a checkpoint with the result.  ``resume`` continues the run of a
    checkpoint: ``model`` is then a fresh copy of the same pretrained model, and ``spec`` the
    run's spec (its ``deadline_seconds``, ``data_root`` and ``num_threads`` may differ; the
    deadline counts from this call).  ``progress`` sees only the epochs this call trains.
    Raises ``nasoa_data.DatasetError`` for a bad dataset and ``ValueError`` for a model with
    fewer stages than ``frozen_stages``, or a checkpoint of another run.
    """
    start = time.monotonic()
    import torch

    if isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int) or stop_after_epochs < 0:
        raise ValueError(f"stop_after_epochs must be an integer >= 0, got {stop_after_epochs!r}")
    if resume is not None and resume.epoch >= spec.epochs:
        raise ValueError(f"the checkpoint is at epoch {resume.epoch} of a {spec.epochs}-epoch schedule: "
                         "nothing is left to resume")  # fmt: skip
    if resume is not None and 0 < stop_after_epochs <= resume.epoch:
        raise ValueError(f"stop_after_epochs={stop_after_epochs}, but the checkpoint is already at epoch "
                         f"{resume.epoch}")  # fmt: skip
    last_epoch = min(stop_after_epochs or spec.epochs, spec.epochs)

    previous_threads = torch.get_num_threads()
    if spec.num_threads is not None:
        torch.set_num_threads(spec.num_threads)  # process-wide: restored below
    try:
        where = torch.device(device)
        cuda = [where.index if where.index is not None else torch.cuda.current_device()] if where.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # seed without disturbing the caller's RNG
            torch.manual_seed(spec.seed)
            return _Run(spec, model, progress, where, should_stop, start).run(last_epoch, resume)
    finally:
        if spec.num_threads is not None:
            torch.set_num_threads(previous_threads)


class _Run:
    """State of one fine-tuning call (kept together so the deadline logic reads linearly)."""

    def __init__(
        self,
        spec: FinetuneSpec,
        model: nn.Module,
        progress: Callable[[EpochProgress], None] | None,
        device: torch.device,
        should_stop: Callable[[], bool] | None,
        start: float,
    ) -> None:
        self.spec = spec
        self.model = model
        self.progress = progress
        self.device = device
        self.should_stop = should_stop
        self.start = start
        self.deadline = start + spec.deadline_seconds
        self.batch_seconds: float | None = None  # running estimate of one training batch
        self.batches_done = 0
        self.eval_seconds_per_sample: float | None = None  # last measured evaluation

    def run(self, last_epoch: int, resume: TrainingCheckpoint | None) -> FinetuneResult:
        import torch
        from torch.utils.data import DataLoader

        from nasoa_data import make_torch_splits, resolve

        spec, model = self.spec, self.model
        ref = resolve(spec.dataset_uri, spec.data_root)
        train_ds, val_ds, test_ds, num_classes = make_torch_splits(ref, spec.image_size, channels=3)
        pin = self.device.type == "cuda"
        # A last batch of one sample would break BatchNorm in train mode: drop the remainder
        # (reshuffled every epoch, so every sample is still seen).
        drop_last = len(train_ds) > spec.batch_size
        self.shuffle = EpochShuffle(len(train_ds), spec.seed)
        self.train_loader = DataLoader(
            train_ds, batch_size=spec.batch_size, sampler=self.shuffle, drop_last=drop_last,
            generator=torch.Generator().manual_seed(spec.seed), num_workers=0, pin_memory=pin,
        )  # fmt: skip
        def eval_loader(ds: Any) -> DataLoader[Any]:
            return DataLoader(ds, batch_size=max(EVAL_BATCH_SIZE, spec.batch_size), shuffle=False,
                              num_workers=0, pin_memory=pin)  # fmt: skip

        self.val_loader, self.test_loader = eval_loader(val_ds), eval_loader(test_ds)
        self.num_eval = len(val_ds) + len(test_ds)  # the final evaluations: validation and test

        model.reset_classifier(num_classes)
        model.to(self.device)
        self.frozen = self._freeze(spec.frozen_stages)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _make_optimizer(spec, params)
        total_steps = spec.epochs * len(self.train_loader)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        loss_fn = torch.nn.CrossEntropyLoss()
        fingerprint = run_fingerprint(spec, model.state_dict())

        curve: list[EpochProgress] = []
        accuracy: float | None = None  # validation accuracy of the model as it is now, if evaluated
        best: tuple[float, int, dict[str, Any]] | None = None  # (validation accuracy, epoch, weights)
        stopped = False
        seconds_before = 0.0  # of the run's earlier stages
        first_epoch = 1
        if resume is not None:
            resume.check_matches(fingerprint)
            model.load_state_dict(resume.weights)
            optimizer.load_state_dict(resume.optimizer)
            scheduler.load_state_dict(resume.scheduler)
            _set_rng_state(resume.rng, self.device)
            curve = list(resume.curve)
            seconds_before = curve[-1].seconds if curve else 0.0
            best = (resume.best_accuracy, resume.best_epoch, dict(resume.best_weights))
            first_epoch = resume.epoch + 1
        checkpoint: TrainingCheckpoint | None = None
        for epoch in range(first_epoch, last_epoch + 1):
            self.shuffle.set_epoch(epoch)
            self._train_mode()
            loss_sum, seen = 0.0, 0
            tick = time.monotonic()
            for x, y in self.train_loader:  # a batch's time includes loading it
                if self._must_stop():
                    stopped = True
                    break
                accuracy = None
                x = x.to(self.device, non_blocking=pin)
                y = y.to(self.device, non_blocking=pin)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.item()) * len(y)  # .item() syncs: timings are real
                seen += len(y)
                now = time.monotonic()
                self._observe_batch(now - tick)
                tick = now
            if stopped:
                break
            accuracy = self._evaluate(self.val_loader)
            best = self._keep_better(best, accuracy, epoch)
            point = EpochProgress(epoch, accuracy, seconds_before + time.monotonic() - self.start,
                                  loss_sum / max(seen, 1))  # fmt: skip
            curve.append(point)
            if self.progress is not None:
                self.progress(point)
        if not stopped and last_epoch < spec.epochs:  # stopped as planned: keep what continuing needs
            assert best is not None
            checkpoint = TrainingCheckpoint(  # copies: the model gets its best weights back below
                fingerprint=fingerprint, epoch=last_epoch, weights=cloned(model.state_dict()),
                optimizer=cloned(optimizer.state_dict()), scheduler=scheduler.state_dict(),
                rng=_rng_state(self.device), curve=tuple(curve), best_accuracy=best[0], best_epoch=best[1],
                best_weights=best[2],
            )  # fmt: skip
        if accuracy is None:  # stopped mid-epoch (or before any epoch): these weights may be best
            best = self._keep_better(best, self._evaluate(self.val_loader), 0)
        assert best is not None
        model.load_state_dict(best[2])
        test_accuracy = self._evaluate(self.test_loader)  # once, on the weights kept
        return FinetuneResult(
            accuracy=test_accuracy,
            seconds=time.monotonic() - self.start,
            curve=tuple(curve),
            epochs_completed=len(curve),
            stopped_by_deadline=stopped,
            num_classes=num_classes,
            validation_accuracy=best[0],
            best_epoch=best[1],
            class_names=ref.class_names,
            split_sizes=(len(train_ds), len(val_ds), len(test_ds)),
            dataset_uri=ref.uri,
            checkpoint=checkpoint,
            resumed_epochs=resume.epoch if resume is not None else 0,
        )

    # -- pieces ---------------------------------------------------------------------------

    def _keep_better(
        self, best: tuple[float, int, dict[str, Any]] | None, accuracy: float, epoch: int
    ) -> tuple[float, int, dict[str, Any]]:
        """The best so far: ties keep the earlier weights (fewer epochs, same validation score)."""
        if best is not None and accuracy <= best[0]:
            return best
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return accuracy, epoch, weights

    def _freeze(self, k: int) -> list[nn.Module]:
        stages = list(self.model.stage_modules())
        if k > len(stages):
            raise ValueError(f"frozen_stages={k}, but the model has only {len(stages)} stages")
        for p in self.model.parameters():  # a reused model may carry flags from a past run
            p.requires_grad_(True)
        frozen = [m for stage in stages[:k] for m in stage]
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        return frozen

    def _train_mode(self) -> None:
        self.model.train()
        for m in self.frozen:
            m.eval()  # frozen BatchNorm keeps its pretrained running statistics

    def _observe_batch(self, seconds: float) -> None:
        self.batches_done += 1
        if self.batches_done <= 2:  # the second batch replaces the first, which pays warm-up
            self.batch_seconds = seconds  # (lazy init, CUDA kernels, allocator)
        else:  # follow drift quickly, but let one outlier move the estimate only partly
            assert self.batch_seconds is not None
            self.batch_seconds = 0.7 * self.batch_seconds + 0.3 * seconds

    def _eval_estimate(self) -> float:
        """Seconds of the final evaluations (validation, then test on the kept weights)."""
        if self.eval_seconds_per_sample is not None:
            return self.num_eval * self.eval_seconds_per_sample
        assert self.batch_seconds is not None
        per_sample = self.batch_seconds / self.spec.batch_size
        return self.num_eval * per_sample * EVAL_COST_FRACTION

    def _must_stop(self) -> bool:
        """True when the deadline leaves no room for another batch and the final evaluations."""
        if self.should_stop is not None and self.should_stop():
            raise FinetuneCancelled("fine-tuning cancelled by the caller")
        if self.batch_seconds is None:  # nothing measured yet: always try one batch
            return time.monotonic() >= self.deadline
        need = SAFETY_FACTOR * (self.batch_seconds + self._eval_estimate()) + SAFETY_SECONDS
        return time.monotonic() + need > self.deadline

    def _evaluate(self, loader: Any) -> float:
        import torch

        began = time.monotonic()
        self.model.eval()
        correct = total = 0
        with torch.inference_mode():
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                correct += int((self.model(x).argmax(dim=1) == y).sum().item())
                total += len(y)
        self.eval_seconds_per_sample = (time.monotonic() - began) / max(total, 1)
        return 100.0 * correct / max(total, 1)


class EpochShuffle:
    """A sampler whose order in each epoch is a pure function of (seed, epoch), so that a run
    resumed at any epoch sees the same data order as one that never stopped."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        import torch

        digest = hashlib.sha256(f"shuffle:{self.seed}:{self.epoch}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    import torch

    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore the RNG; a CUDA state only on CUDA (a run moved between device kinds cannot
    repeat its random numbers exactly, and needs none of ours but dropout's)."""
    import torch

    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _make_optimizer(spec: FinetuneSpec, params: list[Any]) -> torch.optim.Optimizer:
    import torch

    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=SGD_MOMENTUM, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
