"""Architecture families: builders by name, and the classifier and stage helpers.

Like timm: architecture families are registered with a decorator and models are built by
family and architecture with :func:`build_model` (``"etnas"``: an ET-NAS encoding,
``"torchvision"``: a torchvision builder name). Torch is imported when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from zoo_store._checkpoints import InvalidCheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "build_model",
    "infer_num_classes",
    "list_families",
    "load_into_architecture",
    "register_family",
    "reset_classifier",
    "stage_modules",
]

ModelBuilder = Callable[..., "nn.Module"]
_FAMILIES: dict[str, ModelBuilder] = {}


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
