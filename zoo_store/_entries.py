"""Zoo entries: the metadata of one model, name checks, and the facts measured from its weights."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo_store._families import infer_num_classes, load_into_architecture, stage_modules

if TYPE_CHECKING:
    import torch

__all__ = ["ModelNotFound", "ZooEntry", "check_name", "describe_architecture"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ModelNotFound(LookupError):
    """No zoo entry has this name. The message lists the available names."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = list(available)
        shown = ", ".join(self.available[:50]) or "(the zoo is empty)"
        more = f" and {len(self.available) - 50} more" if len(self.available) > 50 else ""
        super().__init__(f"unknown zoo model {name!r}; available: {shown}{more}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.available))

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: its architecture, measured costs, checkpoint and provenance.

    ``macs`` are multiply-accumulates of one image at ``input_size`` x ``input_size``.
    ``step_time_ms`` maps a device class (``"cpu"``, ``"cuda"``) to the measured time of one
    training step (forward + backward + SGD step) at ``step_batch_size``. ``num_stages`` is how
    many leading groups of :func:`stage_modules` can be frozen (stem and body stages; the head
    is never counted). ``sha256``/``size_bytes`` identify the safetensors checkpoint.
    """

    name: str
    family: str
    architecture: str
    num_params: int
    macs: int
    input_size: int = 32
    step_time_ms: Mapping[str, float] = field(default_factory=dict)
    step_batch_size: int = 64
    source_accuracy: float = 0.0
    sha256: str = ""
    size_bytes: int = 0
    num_stages: int = 0
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_time_ms", {str(k): float(v) for k, v in self.step_time_ms.items()})
        object.__setattr__(self, "provenance", {str(k): str(v) for k, v in self.provenance.items()})

    def __hash__(self) -> int:
        return hash((self.name, self.sha256))

    @property
    def encoding(self) -> str | None:
        """The ET-NAS encoding, or None for other families."""
        return self.architecture if self.family == "etnas" else None

    @property
    def num_classes(self) -> int | None:
        """Classifier outputs of the stored checkpoint (from provenance), if recorded."""
        value = self.provenance.get("num_classes")
        return int(value) if value and value.isdigit() else None

    def replace(self, **changes: Any) -> ZooEntry:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["step_time_ms"] = dict(sorted(self.step_time_ms.items()))
        data["provenance"] = dict(sorted(self.provenance.items()))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ZooEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ZooEntry fields: {', '.join(sorted(unknown))}")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ZooEntry:
        return cls.from_dict(json.loads(text))

    def to_proto(self) -> Any:
        from nasoa_api.v1 import zoo_pb2

        return zoo_pb2.ZooEntry(
            name=self.name,
            family=self.family,
            architecture=self.architecture,
            num_params=self.num_params,
            macs=self.macs,
            input_size=self.input_size,
            step_time_ms=dict(self.step_time_ms),
            step_batch_size=self.step_batch_size,
            source_accuracy=self.source_accuracy,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            num_stages=self.num_stages,
            provenance=dict(self.provenance),
        )

    @classmethod
    def from_proto(cls, msg: Any) -> ZooEntry:
        return cls(
            name=msg.name,
            family=msg.family,
            architecture=msg.architecture,
            num_params=int(msg.num_params),
            macs=int(msg.macs),
            input_size=int(msg.input_size),
            step_time_ms=dict(msg.step_time_ms),
            step_batch_size=int(msg.step_batch_size),
            source_accuracy=float(msg.source_accuracy),
            sha256=msg.sha256,
            size_bytes=int(msg.size_bytes),
            num_stages=int(msg.num_stages),
            provenance=dict(msg.provenance),
        )


def check_name(name: str) -> str:
    """Validate a zoo model name (letters, digits, ``._-``; it becomes a file name)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid zoo model name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def describe_architecture(
    family: str, architecture: str, state_dict: Mapping[str, torch.Tensor], input_size: int
) -> dict[str, int]:
    """Load the state dict into its architecture; return num_params, macs, num_stages, num_classes."""
    from zoo_store._etnas import count_params_and_macs

    model = load_into_architecture(family, architecture, state_dict)
    params, macs = count_params_and_macs(model, (3, input_size, input_size))
    return {
        "num_params": params,
        "macs": macs,
        "num_stages": len(stage_modules(model)) - 1,
        "num_classes": infer_num_classes(family, architecture, state_dict),
    }
