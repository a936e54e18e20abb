"""The zoo registry: architecture families, zoo entries, and the on-disk ``ZooStore``.

Like timm: architecture families are registered with a decorator, models are created by name
with :func:`create_model`, and :func:`list_models` lists them by fnmatch pattern. Each entry is a
frozen :class:`ZooEntry` with its metadata (architecture, params, MACs, measured step time per
device class, source accuracy, checkpoint sha256, provenance).

A :class:`ZooStore` is a directory::

    <root>/entries/<name>.json            one ZooEntry per model
    <root>/blobs/<sha256>.safetensors     content-addressed checkpoints

Every write is atomic (temp file, fsync, ``os.replace``) and every checkpoint load verifies the
full sha256. The module-level functions use the default store: ``$NASOA_ZOO_DIR`` if set, else
the committed ``zoo_store/default_zoo/``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_store._checkpoints import (
    InvalidCheckpointError,
    atomic_write_bytes,
    fsync_dir,
    load_safetensors,
    save_safetensors,
    sha256_file,
    validate_safetensors_header,
    verify_file,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DEFAULT_ZOO_DIR",
    "ModelNotFound",
    "ZooEntry",
    "ZooStore",
    "build_model",
    "create_model",
    "default_store",
    "get_entry",
    "list_families",
    "list_models",
    "register_family",
    "reset_classifier",
    "stage_modules",
]

DEFAULT_ZOO_DIR = Path(__file__).resolve().parent / "default_zoo"
ENV_ZOO_DIR = "NASOA_ZOO_DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

ModelBuilder = Callable[..., "nn.Module"]
_FAMILIES: dict[str, ModelBuilder] = {}


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


# --------------------------------------------------------------------------- families


def register_family(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register an architecture family builder: ``builder(architecture, num_classes) -> nn.Module``.

    >>> @register_family("toy")
    ... def _build_toy(architecture: str, num_classes: int) -> "nn.Module":
    ...     import torch.nn as nn
    ...     return nn.Linear(int(architecture), num_classes)
    >>> build_model("toy", "4", num_classes=2)
    Linear(in_features=4, out_features=2, bias=True)
    >>> _ = _FAMILIES.pop("toy")
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        _FAMILIES[name] = builder
        return builder

    return decorator


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def build_model(family: str, architecture: str, num_classes: int = 1000) -> nn.Module:
    """Build an untrained model of an architecture family (``"etnas"`` or ``"torchvision"``).

    Raises ``ValueError`` for an unknown family or architecture (for ET-NAS, an
    ``InvalidEncodingError`` naming the bad position).
    """
    builder = _FAMILIES.get(family)
    if builder is None:
        raise ValueError(f"unknown architecture family {family!r}; known: {', '.join(list_families())}")
    return builder(architecture, num_classes)


@register_family("etnas")
def _build_etnas(architecture: str, num_classes: int) -> nn.Module:
    from zoo_store._etnas import ETNAS

    return ETNAS(architecture, num_classes=num_classes)


@register_family("torchvision")
def _build_torchvision(architecture: str, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if architecture not in known:
        raise ValueError(
            f"unknown torchvision classification architecture {architecture!r}; e.g. resnet18, "
            "mobilenet_v3_small, regnet_x_400mf, efficientnet_b0"
        )
    # weights=None: never download anything; weights come from a local file.
    return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)


def _classifier_name(model: nn.Module) -> str:
    """Dotted name of the model's classifier: ``fc`` for ET-NAS, else its last ``nn.Linear``."""
    from torch import nn

    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no linear classifier")
    return last


def reset_classifier(model: nn.Module, num_classes: int) -> None:
    """Replace the model's classifier with a fresh one with ``num_classes`` outputs."""
    from torch import nn

    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return
    name = _classifier_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    assert isinstance(old, nn.Linear)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def stage_modules(model: nn.Module) -> list[list[nn.Module]]:
    """The model's modules grouped by stage, in forward order: stem, body stages..., head.

    Freezing ``stage_modules(model)[:k]`` for ``k <= entry.num_stages`` freezes the first k
    groups and always leaves the head trainable. ET-NAS models define this themselves; for
    torchvision ResNet, RegNet, MobileNet and EfficientNet the groups follow their own stages.
    """
    if hasattr(model, "stage_modules"):
        return [list(group) for group in model.stage_modules()]
    children = dict(model.named_children())
    if "layer1" in children:  # ResNet / ResNeXt / Wide ResNet
        stem = [children[k] for k in ("conv1", "bn1", "relu", "maxpool") if k in children]
        body = [[children[f"layer{i}"]] for i in range(1, 5) if f"layer{i}" in children]
        return [stem, *body, [children["avgpool"], children["fc"]]]
    if "trunk_output" in children:  # RegNet
        body = [[block] for block in children["trunk_output"].children()]
        return [[children["stem"]], *body, [children["avgpool"], children["fc"]]]
    if "features" in children and "classifier" in children:  # MobileNet, EfficientNet, ...
        feats = list(children["features"].children())
        head = [m for k, m in children.items() if k not in ("features",)]
        if len(feats) >= 3:
            body = [[m] for m in feats[1:-1]]
            body[-1].append(feats[-1])
            return [[feats[0]], *body, head]
        return [feats, head]
    # Fallback: every child but the classifier is one group.
    cls_top = _classifier_name(model).split(".")[0]
    groups = [[m] for k, m in children.items() if k != cls_top]
    return [*groups, [children[cls_top]]]


def infer_num_classes(family: str, architecture: str, state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of classifier outputs of a state dict of this architecture."""
    import torch

    with torch.device("meta"):
        probe = build_model(family, architecture, num_classes=7)
    key = f"{_classifier_name(probe)}.weight"
    if key not in state_dict:
        raise InvalidCheckpointError(
            f"the checkpoint has no classifier weight {key!r}; it does not match {family} architecture {architecture!r}"
        )
    return int(state_dict[key].shape[0])


def load_into_architecture(family: str, architecture: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Build the architecture and load the state dict into it strictly.

    Raises ``InvalidCheckpointError`` naming missing/unexpected keys or shape mismatches.
    """
    num_classes = infer_num_classes(family, architecture, state_dict)
    model = build_model(family, architecture, num_classes=num_classes)
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:4])
        raise InvalidCheckpointError(
            f"the checkpoint does not fit {family} architecture {architecture!r}: {detail[:600]}"
        ) from None
    return model


# --------------------------------------------------------------------------- entries


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


# --------------------------------------------------------------------------- store


class ZooStore:
    """A zoo on disk: ``entries/<name>.json`` and ``blobs/<sha256>.safetensors``.

    Thread-safe for one process (writes hold a lock); every write is atomic, so readers in other
    processes see either the old or the new file. Checkpoints are verified at every load.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ZooStore({str(self.root)!r})"

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    def blob_path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"invalid sha256 {sha256!r}")
        return self.blobs_dir / f"{sha256}.safetensors"

    def _entry_path(self, name: str) -> Path:
        return self.entries_dir / f"{check_name(name)}.json"

    # ---- reading

    def names(self) -> list[str]:
        if not self.entries_dir.is_dir():
            return []
        return sorted(p.stem for p in self.entries_dir.glob("*.json") if not p.name.startswith("."))

    def list_models(self, pattern: str = "*") -> list[str]:
        """Names matching the fnmatch pattern (all when empty), sorted."""
        pattern = pattern or "*"
        return [n for n in self.names() if fnmatch.fnmatchcase(n, pattern)]

    def list_entries(self, pattern: str = "*") -> list[ZooEntry]:
        return [self.get_entry(n) for n in self.list_models(pattern)]

    def has(self, name: str) -> bool:
        return _NAME_RE.match(name or "") is not None and self._entry_path(name).is_file()

    def get_entry(self, name: str) -> ZooEntry:
        """The entry named ``name``; raises ``ModelNotFound`` listing the available names."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ModelNotFound(str(name), self.names())
        try:
            text = self._entry_path(name).read_text()
        except FileNotFoundError:
            raise ModelNotFound(name, self.names()) from None
        return ZooEntry.from_json(text)

    def checkpoint_path(self, name: str, verify: bool = True) -> Path:
        """Path of the entry's checkpoint blob, its sha256 verified unless ``verify=False``."""
        entry = self.get_entry(name)
        path = self.blob_path(entry.sha256)
        if verify:
            verify_file(path, entry.sha256, entry.size_bytes)
        return path

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, after a full sha256 check (``ChecksumMismatch`` if corrupt)."""
        entry = self.get_entry(name)
        return load_safetensors(self.blob_path(entry.sha256), entry.sha256, entry.size_bytes)

    def create_model(
        self,
        name: str,
        num_classes: int | None = None,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
    ) -> nn.Module:
        """Build the entry's architecture, load its verified weights, set the classifier size."""
        return create_model_from_entry(
            self.get_entry(name),
            num_classes=num_classes,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path
            if checkpoint_path is not None
            else (self.blob_path(self.get_entry(name).sha256) if pretrained else None),
        )

    # ---- writing

    def put_entry(self, entry: ZooEntry) -> None:
        """Write (or overwrite) an entry's JSON atomically. Its blob must already be stored."""
        check_name(entry.name)
        with self._lock:
            atomic_write_bytes(self._entry_path(entry.name), entry.to_json().encode())

    def add_blob(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Copy a safetensors file into the blob store (validated, atomic); its (sha256, size)."""
        validate_safetensors_header(path)
        sha = sha256_file(path)
        dest = self.blob_path(sha)
        if dest.is_file() and sha256_file(dest) == sha:
            return sha, dest.stat().st_size
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob.", suffix=".tmp", dir=self.blobs_dir)
        os.fchmod(fd, 0o644)
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if sha256_file(tmp) != sha:
                raise InvalidCheckpointError(f"{path} changed while it was being copied")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.blobs_dir)
        return sha, dest.stat().st_size

    def add_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int]:
        """Store a state dict as a safetensors blob; its (sha256, size)."""
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob.", suffix=".safetensors", dir=self.blobs_dir)
        os.close(fd)
        try:
            sha, size = save_safetensors(state_dict, tmp)
            os.replace(tmp, self.blob_path(sha))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.blobs_dir)
        return sha, size

    def register(
        self,
        entry: ZooEntry,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> ZooEntry:
        """Add a model: store its checkpoint, check it loads into the architecture, write the entry.

        Exactly one of ``state_dict``/``checkpoint_path`` (a safetensors file) is given. The
        stored entry gets the checkpoint's sha256/size and the params, MACs, stage count and
        class count measured from the loaded model; the other fields are kept from ``entry``.
        Raises ``FileExistsError`` if the name is taken and ``overwrite`` is false.
        """
        check_name(entry.name)
        if (state_dict is None) == (checkpoint_path is None):
            raise ValueError("give exactly one of state_dict or checkpoint_path")
        if self.has(entry.name) and not overwrite:
            raise FileExistsError(f"zoo model {entry.name!r} already exists in {self.root}")
        if state_dict is None:
            sha, size = self.add_blob(checkpoint_path)  # type: ignore[arg-type]
        else:
            sha, size = self.add_state_dict(state_dict)
        weights = load_safetensors(self.blob_path(sha), sha, size)
        facts = describe_architecture(entry.family, entry.architecture, weights, entry.input_size)
        provenance = dict(entry.provenance)
        provenance["num_classes"] = str(facts.pop("num_classes"))
        final = entry.replace(sha256=sha, size_bytes=size, provenance=provenance, **facts)
        self.put_entry(final)
        return final

    def remove(self, name: str) -> None:
        """Delete an entry (its blob is kept while other entries use it)."""
        entry = self.get_entry(name)
        with self._lock:
            self._entry_path(name).unlink()
            fsync_dir(self.entries_dir)
            if not any(e.sha256 == entry.sha256 for e in self.list_entries()):
                self.blob_path(entry.sha256).unlink(missing_ok=True)

    def update_step_time(self, name: str, device_class: str, ms: float, batch_size: int) -> ZooEntry:
        entry = self.get_entry(name)
        times = dict(entry.step_time_ms) if entry.step_batch_size == batch_size else {}
        times[device_class] = round(float(ms), 3)
        updated = entry.replace(step_time_ms=times, step_batch_size=batch_size)
        self.put_entry(updated)
        return updated


def create_model_from_entry(
    entry: ZooEntry,
    num_classes: int | None = None,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build ``entry``'s architecture; with ``pretrained``, load ``checkpoint_path`` (sha-verified).

    The checkpoint is loaded strictly with its own classifier size, then the classifier is
    replaced when ``num_classes`` differs. Workers call this with the path from their
    :class:`~zoo_store.CheckpointCache`.
    """
    if not pretrained:
        return build_model(entry.family, entry.architecture, num_classes=num_classes or 1000)
    if checkpoint_path is None:
        raise ValueError(f"pretrained=True needs the checkpoint of {entry.name!r}")
    weights = load_safetensors(checkpoint_path, entry.sha256, entry.size_bytes or None)
    model = load_into_architecture(entry.family, entry.architecture, weights)
    if num_classes is not None and num_classes != infer_num_classes(entry.family, entry.architecture, weights):
        reset_classifier(model, num_classes)
    return model


# --------------------------------------------------------------------------- default store

_default_lock = threading.Lock()
_default: tuple[str, ZooStore] | None = None


def default_store() -> ZooStore:
    """The store at ``$NASOA_ZOO_DIR``, or the committed ``zoo_store/default_zoo/``."""
    global _default
    root = os.environ.get(ENV_ZOO_DIR) or str(DEFAULT_ZOO_DIR)
    with _default_lock:
        if _default is None or _default[0] != root:
            _default = (root, ZooStore(root))
        return _default[1]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the default store's models matching an fnmatch pattern, sorted."""
    return default_store().list_models(pattern)


def get_entry(name: str) -> ZooEntry:
    """The default store's entry; raises ``ModelNotFound`` listing the available names."""
    return default_store().get_entry(name)


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Create a zoo model by name from the default store (timm-style).

    With ``pretrained`` the checkpoint (the store's blob, or ``checkpoint_path``) is verified by
    sha256 and loaded; ``num_classes`` replaces the classifier when it differs from the source.
    """
    return default_store().create_model(
        name, num_classes=num_classes, pretrained=pretrained, checkpoint_path=checkpoint_path
    )
