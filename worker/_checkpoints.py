"""Training checkpoints: everything a stopped run needs to continue as if it never stopped.

A :class:`TrainingCheckpoint` holds the current weights (not only the best), the optimiser's
and the learning-rate scheduler's state, the RNG states, the epochs done and their curve, and
the best validation weights so far.  The data order needs no state: each epoch's shuffle is a
pure function of (seed, epoch).

It travels as one safetensors file, never a pickle.  Tensors are stored under structured keys::

    model/<name>              current weights and buffers
    best/<name>               the best validation weights so far
    optimizer/<index>/<key>   per-parameter optimiser state (momentum buffers, Adam moments)
    rng/cpu, rng/cuda         torch RNG states (uint8)

and the rest is JSON in the header's metadata: optimiser param groups and scalar state, the
scheduler's state_dict, the epoch, the curve, the best accuracy and epoch, and the
fingerprint of the run (spec and model structure) that a resume must match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from worker._finetune import EpochProgress, FinetuneSpec

__all__ = ["CHECKPOINT_FORMAT", "TrainingCheckpoint", "cloned", "run_fingerprint"]

CHECKPOINT_FORMAT = "nasoa-training-checkpoint/1"
_META_KEY = "nasoa_checkpoint"
# The spec fields that define a run: its schedule, its data and its regime.  The deadline, the
# data's location on disk and the thread count may differ between the stages of one run.
RUN_FIELDS = ("dataset_uri", "epochs", "lr", "batch_size", "frozen_stages", "optimizer", "weight_decay", "seed",
              "image_size")  # fmt: skip


def run_fingerprint(spec: FinetuneSpec, model_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it: the spec's run fields and the
    model's structure (every tensor's name, shape and dtype, as a sha256)."""
    structure = json.dumps([(k, list(v.shape), str(v.dtype)) for k, v in model_state.items()])
    run = {name: getattr(spec, name) for name in RUN_FIELDS}
    return {**run, "model_structure": hashlib.sha256(structure.encode()).hexdigest()}


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A run stopped after ``epoch`` epochs of its schedule (see the module docstring).

    ``curve`` holds one point per epoch done, with seconds cumulative over the run's stages.
    A run's checkpoint keeps its tensors on the training device; :meth:`from_bytes` gives them
    on the CPU.  :meth:`to_bytes` and :meth:`from_bytes` round-trip exactly.
    """

    fingerprint: dict[str, Any]
    epoch: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch's optimizer.state_dict() form
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]  # "cpu" and, from a CUDA run, "cuda"
    curve: tuple[EpochProgress, ...]
    best_accuracy: float
    best_epoch: int
    best_weights: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def check_matches(self, fingerprint: Mapping[str, Any]) -> None:
        """ValueError naming what differs when this checkpoint belongs to another run."""
        keys = set(fingerprint) | set(self.fingerprint)
        differ = sorted(k for k in keys if fingerprint.get(k) != self.fingerprint.get(k))
        if differ:
            what = ", ".join(f"{k} {self.fingerprint.get(k)!r} (resumed with {fingerprint.get(k)!r})" for k in differ)
            raise ValueError(f"the training checkpoint belongs to another run: {what}; resume it with the same "
                             "spec and model it was made with")  # fmt: skip

    # ---- serialisation

    def to_bytes(self) -> bytes:
        """One safetensors file: the tensors under structured keys, the rest as JSON metadata."""
        from safetensors.torch import save

        tensors: dict[str, torch.Tensor] = {}
        tensors.update(_prefixed("model", self.weights))
        tensors.update(_prefixed("best", self.best_weights))
        tensors.update(_prefixed("rng", self.rng))
        scalars: dict[str, dict[str, Any]] = {}
        for index, state in self.optimizer["state"].items():
            for key, value in state.items():
                if _is_tensor(value):
                    tensors[f"optimizer/{index}/{key}"] = _cpu_copy(value)
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "optimizer_param_groups": self.optimizer["param_groups"],
            "optimizer_scalars": scalars,
            "scheduler": self.scheduler,
            "curve": [[p.epoch, p.accuracy, p.seconds, p.train_loss] for p in self.curve],
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
        }
        return bytes(save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True, allow_nan=False)}))

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingCheckpoint:
        """The checkpoint in ``data``; ValueError when it is not one (truncated, corrupt, foreign)."""
        from safetensors.torch import load

        from worker._finetune import EpochProgress

        meta = _metadata(data)
        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own error type for damaged data
            raise ValueError(f"not a training checkpoint: the safetensors data is damaged ({exc})") from None
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            prefix, _, rest = key.partition("/")
            groups.setdefault(prefix, {})[rest] = tensor
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in groups.get("optimizer", {}).items():
            index, _, name = key.partition("/")
            state.setdefault(int(index), {})[name] = tensor
        for index, scalars in meta["optimizer_scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        param_groups = [
            {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
            for group in meta["optimizer_param_groups"]
        ]  # JSON turned the groups' tuples (Adam's betas) into lists
        return cls(
            fingerprint=meta["fingerprint"],
            epoch=int(meta["epoch"]),
            weights=groups.get("model", {}),
            optimizer={"state": dict(sorted(state.items())), "param_groups": param_groups},
            scheduler=meta["scheduler"],
            rng=groups.get("rng", {}),
            curve=tuple(EpochProgress(int(e), float(a), float(s), float(loss)) for e, a, s, loss in meta["curve"]),
            best_accuracy=float(meta["best_accuracy"]),
            best_epoch=int(meta["best_epoch"]),
            best_weights=groups.get("best", {}),
        )


def cloned(tree: Any) -> Any:
    """``tree`` (dicts, lists and tuples of tensors and scalars) with every tensor copied."""
    if _is_tensor(tree):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: cloned(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cloned(v) for v in tree)
    return tree


def _is_tensor(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    # A copy of its own: safetensors refuses tensors that share memory (tied weights).
    return tensor.detach().to("cpu", copy=True).contiguous()


def _prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{name}": _cpu_copy(t) for name, t in tensors.items()}


def _metadata(data: bytes) -> dict[str, Any]:
    """The JSON metadata in a safetensors header, checked to be a training checkpoint's."""
    if len(data) < 8:
        raise ValueError(f"not a training checkpoint: {len(data)} bytes")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("not a training checkpoint: the safetensors header runs past the data (truncated?)")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a training checkpoint: its header has no readable metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"not a training checkpoint of format {CHECKPOINT_FORMAT}: found {found!r}")
    return meta
