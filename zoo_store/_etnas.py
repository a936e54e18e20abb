"""The ET-NAS network of an encoding (:class:`ETNAS`) and the params/MACs counter.

``ETNAS(...).state_dict()`` has the same keys and shapes as the model of the public reference
implementation (``etnas.py`` in NAS-OA/NASOA), so the released ET-NAS checkpoints load into it
with ``load_state_dict(state_dict, strict=True)``. The encoding itself is parsed and validated
by :class:`~zoo_store.ETNASEncoding`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from zoo_store._encoding import ETNASEncoding

if TYPE_CHECKING:
    from zoo_store._encoding import _BlockPlan, _SkipPlan

__all__ = ["ETNAS", "count_params_and_macs"]

_STEM_LENGTH = 6  # three (conv, BN) ops, each followed by a ReLU


# ----------------------------------------------------------------------------------------------
# Torch modules. The module tree (attribute names, nesting, order) fixes the state_dict keys and
# must stay as it is for the released checkpoints to load.


def _op(op: int, in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Op ``op`` followed by BN, as ``nn.Sequential(conv, bn)``."""
    conv: nn.Module
    if op == 1:
        conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    elif op == 6:
        conv = nn.Sequential(
            nn.Conv2d(
                in_channels,
                in_channels,
                3,
                stride=stride,
                padding=1,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )
    else:
        groups = {0: 1, 2: 2, 3: 4, 4: in_channels, 5: in_channels // 32}[op]
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            groups=groups,
            bias=False,
        )
    for module in conv.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    bn = nn.BatchNorm2d(out_channels)
    nn.init.constant_(bn.weight, 1.0)
    nn.init.constant_(bn.bias, 0.0)
    return nn.Sequential(conv, bn)


class _Skip(nn.Module):
    """A skip connection from position ``source`` to ``target`` of a block.

    ``forward`` takes the list of position tensors and replaces the target's tensor.
    """

    def __init__(self, plan: _SkipPlan) -> None:
        super().__init__()
        self.source = plan.source
        self.target = plan.target
        self.conv: nn.Module | None = None
        if plan.projection is not None:
            self.conv = _op(1, *plan.projection)

    def _source(self, outs: list[torch.Tensor]) -> torch.Tensor:
        x = outs[self.source]
        return x if self.conv is None else self.conv(x)


class _AddSkip(_Skip):
    def forward(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs[self.target] = self._source(outs) + outs[self.target]
        return outs


class _ConcatSkip(_Skip):
    def forward(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        # The source's channels come first.
        outs[self.target] = torch.cat([self._source(outs), outs[self.target]], dim=1)
        return outs


class _Block(nn.Module):
    """One block: ``module_list[i]`` is ``ModuleList([op_i, skips ending at position i+1...])``.

    A ReLU follows each layer's skips; the activated tensor is what later skips read.
    """

    def __init__(self, plan: _BlockPlan) -> None:
        super().__init__()
        self.module_list = nn.ModuleList()
        for layer in plan.layers:
            modules = nn.ModuleList([_op(layer.op, layer.in_channels, layer.out_channels, layer.stride)])
            for skip in layer.skips:
                modules.append(_AddSkip(skip) if skip.kind == "a" else _ConcatSkip(skip))
            self.module_list.append(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        current = x
        for modules in self.module_list:
            outs.append(modules[0](current))
            for skip in modules[1:]:
                skip(outs)
            current = F.relu(outs[-1])
            outs[-1] = current
        return current


class ETNAS(nn.Module):
    """The ET-NAS network of an encoding: stem, encoded blocks, global pool, linear classifier.

    Args:
        encoding: the architecture, a string such as ``OFFICIAL_ENCODINGS["ET-NAS-B"]`` or a
            parsed :class:`ETNASEncoding`; strings are parsed (and validated) first.
        num_classes: outputs of the classifier ``fc``; 0 replaces it with ``nn.Identity``, so the
            model returns the pooled features.
        in_chans: input image channels.

    ``layers`` holds the stem (``layers[0:6]``: three (conv, BN) ops, each followed by a ReLU),
    one module per macro block, then the global average pool; ``fc`` is the classifier. This is
    the reference implementation's layout, so the released checkpoints load with ``strict=True``.
    Convs are initialised kaiming-normal (fan out), BN weights to 1 and biases to 0.

    >>> model = ETNAS("031-_16_1-2", num_classes=10)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> model.num_features, [len(stage) for stage in model.stage_modules()]
    (32, [6, 1, 1, 2])
    """

    def __init__(self, encoding: str | ETNASEncoding, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        if isinstance(encoding, str):
            encoding = ETNASEncoding.parse(encoding)
        if not isinstance(encoding, ETNASEncoding):
            raise TypeError(f"encoding must be a str or an ETNASEncoding, got {type(encoding).__name__}")
        _check_count("num_classes", num_classes, minimum=0)
        _check_count("in_chans", in_chans, minimum=1)
        self.encoding = encoding
        self.num_classes = num_classes
        self.in_chans = in_chans

        width = encoding.base_channels
        modules: list[nn.Module] = [
            _op(0, in_chans, width // 2, 2),
            nn.ReLU(inplace=True),
            _op(0, width // 2, width // 2, 1),
            nn.ReLU(inplace=True),
            _op(0, width // 2, width, 2),
            nn.ReLU(inplace=True),
        ]
        for plan in encoding._block_plans():
            modules.append(_Block(plan))
            width = plan.out_channels
        modules.append(nn.AdaptiveAvgPool2d((1, 1)))
        self.layers = nn.Sequential(*modules)
        self.num_features = width
        self.fc: nn.Module = self._new_classifier(num_classes)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, shape ``(batch, num_features)``."""
        return torch.flatten(self.layers(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classifier head (``fc``)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a freshly initialised one with ``num_classes`` outputs.

        >>> model = ETNAS("031-_16_1-2", num_classes=10)
        >>> model.reset_classifier(5)
        >>> model.get_classifier()
        Linear(in_features=32, out_features=5, bias=True)
        """
        _check_count("num_classes", num_classes, minimum=0)
        self.num_classes = num_classes
        self.fc = self._new_classifier(num_classes)

    def stage_modules(self) -> list[list[nn.Module]]:
        """The modules grouped by stage, in forward order, for freezing the first k stages.

        Entry 0 is the stem (its three ops and ReLUs), then one entry per stage of the macro
        (``encoding.num_stages`` of them; a ``-`` in the macro starts a new stage), and last the
        head (global pool and ``fc``). Every parameter is in exactly one entry. Freezing
        ``stage_modules()[:k]`` with ``k <= encoding.num_stages + 1`` leaves the head trainable.
        """
        layers = list(self.layers)
        stages = [layers[:_STEM_LENGTH]]
        start = _STEM_LENGTH
        for size in self.encoding.blocks_per_stage:
            stages.append(layers[start : start + size])
            start += size
        stages.append([*layers[start:], self.fc])
        return stages

    def extra_repr(self) -> str:
        return f"encoding={str(self.encoding)!r}"


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def count_params_and_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> tuple[int, int]:
    """Parameter count and multiply-accumulates of one ``input_size`` image through ``model``.

    MACs are those of ``nn.Conv2d`` (output elements x in_channels / groups x kernel area) and
    ``nn.Linear`` (output elements x in_features) modules, measured with forward hooks on one
    forward pass of a zero image; biases, BN, activations, pooling and additions are not
    counted. The pass runs in eval mode under ``torch.no_grad()`` and the modules' training
    flags are restored afterwards, so BN running statistics are untouched. The input is put on
    the device and dtype of the model's first parameter (a model on the ``meta`` device is
    counted without computing anything).

    >>> count_params_and_macs(nn.Conv2d(3, 8, 3, padding=1, bias=False), (3, 4, 4))
    (216, 3456)
    >>> count_params_and_macs(nn.Linear(10, 2), (1, 1, 10))
    (22, 20)
    """
    params = sum(parameter.numel() for parameter in model.parameters())
    macs = 0

    def count_conv(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(module, nn.Conv2d)
        kernel_h, kernel_w = module.kernel_size
        macs += output.numel() * (module.in_channels // module.groups) * kernel_h * kernel_w

    def count_linear(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(module, nn.Linear)
        macs += output.numel() * module.in_features

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    training = {module: module.training for module in model.modules()}
    handles = []
    try:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                handles.append(module.register_forward_hook(count_conv))
            elif isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(count_linear))
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    return params, macs
