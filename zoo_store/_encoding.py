"""ET-NAS architecture encodings: parsing, validation and the block plans, without torch.

An ET-NAS architecture is one string, ``BLOCK_BASECHANNELS_MACRO`` (PAPER.md, "ET-NAS
architecture encoding"):

- ``BLOCK`` is ``LAYERS-SKIPS``, the one block design repeated everywhere. ``LAYERS`` is a
  sequence of (op index, width code) digit pairs whose last pair is cut short: the last layer
  is written with its op digit only, its width code is always 2. ``SKIPS`` is a sequence of
  triples ``a`` (add) or ``c`` (concat), from-position, to-position, where position 0 is the
  block input and position ``i`` is the output of layer ``i``.
- ``BASECHANNELS`` is the width ``C`` of the stem (3x3 convs of widths C/2, C/2, C).
- ``MACRO`` has one digit per block, the block's channel multiplier (1, 2 or 4); a ``-`` in
  front of a digit makes that block stride 2 and starts a new stage.

:class:`ETNASEncoding` is the parsed, validated form of the string; the network it describes
is :class:`~zoo_store.ETNAS`. This module does not import torch, so encodings can be checked
anywhere (clients, the NAS sampler) without it.

>>> encoding = ETNASEncoding.parse(OFFICIAL_ENCODINGS["ET-NAS-B"])
>>> encoding.block_layers, encoding.base_channels, encoding.num_blocks, encoding.num_stages
(((0, 3), (1, 2)), 32, 10, 4)
>>> str(encoding)
'031-_32_1-1-221-11121'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

__all__ = ["OFFICIAL_ENCODINGS", "ETNASEncoding", "InvalidEncodingError"]

OFFICIAL_ENCODINGS: dict[str, str] = {
    "ET-NAS-A": "2-_32_2-11-112-1121112",
    "ET-NAS-B": "031-_32_1-1-221-11121",
    "ET-NAS-C": "011-_32_2-211-2-111122",
    "ET-NAS-D": "031-_64_1-1-221-11121",
    "ET-NAS-E": "10001-_64_4-111-11122-1111111111111112",
    "ET-NAS-F": "011-_64_21-211-121-11111121",
    "ET-NAS-G": "10001-_64_4-111111111-211112111112-11111",
    "ET-NAS-H": "211-_64_41-211-121-11111121",
    "ET-NAS-I": "02031-a02_64_111-2111-21111111111111111111111-211",
    "ET-NAS-J": "211-_64_411-2111-21111111111111111111111-211",
    "ET-NAS-K": "02031-a02_64_1121-111111111111111111111111111-21111111211111-1",
    "ET-NAS-L": "23311-a02c12_64_211-2111-21111111111111111111111-211",
}
"""The twelve released ET-NAS models (the Pareto front of the search), by name."""

# Op index -> what it is, for error messages. The index order is fixed by the released models.
_OP_NAMES = (
    "conv3x3",
    "conv1x1",
    "conv3x3 with 2 groups",
    "conv3x3 with 4 groups",
    "depthwise conv3x3",
    "conv3x3 with 32 channels per group",
    "depthwise-separable conv3x3",
)
_DIGITS = "0123456789"
_OP_DIGITS = "0123456"
_WIDTH_DIGITS = "01234"
_MULTIPLIER_DIGITS = "124"
# Skip positions are single digits, so a block has at most 9 layers (positions 0..9).
_MAX_LAYERS = 9


class InvalidEncodingError(ValueError):
    """An ET-NAS encoding string (or :class:`ETNASEncoding` fields) that is not valid.

    ``position`` is the 0-based index of the offending character in ``encoding`` (``None`` when
    no single character is at fault) and ``reason`` says what was expected there.

    >>> error = InvalidEncodingError("031-_32_1x1", 9, "expected a digit, got 'x'")
    >>> print(error)
    invalid ET-NAS encoding '031-_32_1x1': position 9: expected a digit, got 'x'
    >>> error.position
    9
    """

    def __init__(self, encoding: str, position: int | None, reason: str) -> None:
        self.encoding = encoding
        self.position = position
        self.reason = reason
        where = "" if position is None else f"position {position}: "
        super().__init__(f"invalid ET-NAS encoding {encoding!r}: {where}{reason}")

    def __reduce__(
        self,
    ) -> tuple[type[InvalidEncodingError], tuple[str, int | None, str]]:
        # Keeps the error picklable (it crosses process boundaries, e.g. in Celery results).
        return (type(self), (self.encoding, self.position, self.reason))


# ----------------------------------------------------------------------------------------------
# Block plans: the channel and stride bookkeeping, without torch. Used both to validate an
# encoding (group counts must divide channel counts) and to build the modules.


@dataclass(frozen=True)
class _SkipPlan:
    kind: str  # "a" (add) or "c" (concat)
    source: int
    target: int
    # (in channels, out channels, stride) of the 1x1 conv + BN that matches the source to the
    # target, or None when the shapes already match.
    projection: tuple[int, int, int] | None


@dataclass(frozen=True)
class _LayerPlan:
    op: int
    in_channels: int
    out_channels: int
    stride: int
    skips: tuple[_SkipPlan, ...]  # the skips that end at this layer's output, in order


@dataclass(frozen=True)
class _BlockPlan:
    in_channels: int
    out_channels: int
    layers: tuple[_LayerPlan, ...]


def _plan_block(
    block_layers: tuple[tuple[int, int], ...],
    skips: tuple[tuple[str, int, int], ...],
    in_channels: int,
    multiplier: int,
    stride: int,
) -> _BlockPlan:
    """Channels and strides of every layer and skip of one block.

    - Layer width is ``out_channels * 2**width_code // 4``.
    - The stride goes to the first layer that is not a 1x1 conv (the last layer if all are).
    - Skips are applied in the order of their to-position (stable for equal ones), then the
      residual add from position 0 to the block output, which is always there.
    - An add projects the source with a 1x1 conv + BN when strides or channels differ; a concat
      only when strides differ (keeping the source's channels) and widens the target position,
      hence the input of the next layer.
    """
    out_channels = in_channels * multiplier
    num_layers = len(block_layers)
    stride_layer = next((i for i, (op, _) in enumerate(block_layers[:-1]) if op != 1), num_layers - 1)
    # Stride of position p relative to the block input: positions after the strided layer.
    position_stride = [1 if p <= stride_layer else stride for p in range(num_layers + 1)]
    ordered = sorted(skips, key=lambda skip: skip[2]) + [("a", 0, num_layers)]
    channels = [in_channels]
    layers: list[_LayerPlan] = []
    for index, (op, width_code) in enumerate(block_layers):
        layer_in = channels[-1]
        layer_out = out_channels * 2**width_code // 4
        channels.append(layer_out)
        target = index + 1
        skip_plans: list[_SkipPlan] = []
        for kind, source, to in ordered:
            if to != target:
                continue
            ratio = position_stride[target] // position_stride[source]
            projection: tuple[int, int, int] | None = None
            if kind == "a":
                if ratio != 1 or channels[source] != channels[target]:
                    projection = (channels[source], channels[target], ratio)
            else:
                if ratio != 1:
                    projection = (channels[source], channels[source], ratio)
                channels[target] += channels[source]
            skip_plans.append(_SkipPlan(kind, source, target, projection))
        layers.append(
            _LayerPlan(
                op=op,
                in_channels=layer_in,
                out_channels=layer_out,
                stride=stride if index == stride_layer else 1,
                skips=tuple(skip_plans),
            )
        )
    return _BlockPlan(in_channels, channels[-1], tuple(layers))


def _macro_blocks(macro: str) -> list[tuple[int, int, int]]:
    """``(offset in macro, channel multiplier, stride)`` of each block of a valid macro."""
    blocks = []
    stride = 1
    for offset, char in enumerate(macro):
        if char == "-":
            stride = 2
        else:
            blocks.append((offset, int(char), stride))
            stride = 1
    return blocks


def _plan_blocks(
    block_layers: tuple[tuple[int, int], ...],
    skips: tuple[tuple[str, int, int], ...],
    base_channels: int,
    macro: str,
) -> list[_BlockPlan]:
    plans = []
    channels = base_channels
    for _, multiplier, stride in _macro_blocks(macro):
        plan = _plan_block(block_layers, skips, channels, multiplier, stride)
        plans.append(plan)
        channels = plan.out_channels
    return plans


def _group_problem(op: int, in_channels: int, out_channels: int) -> str | None:
    """Why op ``op`` cannot map ``in_channels`` to ``out_channels``, or None if it can."""
    if out_channels < 1:
        return "a layer needs at least one output channel"
    if op in (2, 3):
        groups = 2 if op == 2 else 4
        if in_channels % groups or out_channels % groups:
            return f"both channel counts must be divisible by its {groups} groups"
    elif op == 4:
        if out_channels % in_channels:
            return (
                "its groups equal the input channels, so the output channels must be a multiple of the input channels"
            )
    elif op == 5:
        groups = in_channels // 32
        if groups == 0:
            return "it needs at least 32 input channels (one group per 32 input channels)"
        if in_channels % groups or out_channels % groups:
            return f"both channel counts must be divisible by its {groups} groups (input channels // 32)"
    return None


# ----------------------------------------------------------------------------------------------
# Parsing


def _got(text: str, position: int) -> str:
    return repr(text[position]) if position < len(text) else "end of string"


def _parse_fields(
    text: str,
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[str, int, int], ...], int, str]:
    """Validate ``text`` and return ``(block_layers, skips, base_channels, macro)``."""

    def fail(position: int, reason: str) -> NoReturn:
        raise InvalidEncodingError(text, position, reason)

    def expected(position: int, what: str) -> NoReturn:
        fail(position, f"expected {what}, got {_got(text, position)}")

    # BLOCK part: text[:block_end], LAYERS then optionally '-' and SKIPS.
    first_underscore = text.find("_")
    block_end = first_underscore if first_underscore >= 0 else len(text)
    dash = text.find("-", 0, block_end)
    layers_end = dash if dash >= 0 else block_end
    layer_text = text[:layers_end]
    for position, char in enumerate(layer_text):
        if position % 2 == 0 and char not in _OP_DIGITS:
            expected(position, "an op digit '0'-'6' in the block's layers")
        if position % 2 == 1 and char not in _WIDTH_DIGITS:
            expected(position, "a width code '0'-'4' in the block's layers")
    if len(layer_text) % 2 == 0:
        expected(
            layers_end,
            "an op digit '0'-'6' for the block's last layer (its width code is implicit)",
        )
    num_layers = len(layer_text) // 2 + 1
    if num_layers > _MAX_LAYERS:
        fail(
            2 * _MAX_LAYERS,
            f"a block has at most {_MAX_LAYERS} layers (skip positions are single digits), got {num_layers}",
        )
    block_layers = tuple(
        (
            int(layer_text[2 * i]),
            int(layer_text[2 * i + 1]) if 2 * i + 1 < len(layer_text) else 2,
        )
        for i in range(num_layers)
    )

    skips: list[tuple[str, int, int]] = []
    position = layers_end + 1
    while position < block_end:
        if text[position] not in "ac":
            expected(position, "a skip kind 'a' (add) or 'c' (concat)")
        if position + 1 >= block_end or text[position + 1] not in _DIGITS:
            expected(position + 1, "a skip's from-position digit")
        if position + 2 >= block_end or text[position + 2] not in _DIGITS:
            expected(position + 2, "a skip's to-position digit")
        kind, source, target = (
            text[position],
            int(text[position + 1]),
            int(text[position + 2]),
        )
        triple = text[position : position + 3]
        if target > num_layers:
            fail(
                position + 2,
                f"skip {triple!r} ends at position {target}, but the block has {num_layers} "
                f"layers (positions 0-{num_layers})",
            )
        if source >= target:
            fail(
                position + 1,
                f"skip {triple!r} must go forward: its from-position {source} is not before its to-position {target}",
            )
        if kind == "c" and target == num_layers:
            fail(
                position,
                f"concat skip {triple!r} ends at the block output (position {num_layers}), "
                "which would change the block's output channels; use an add ('a') there",
            )
        skips.append((kind, source, target))
        position += 3

    # BASECHANNELS part.
    if first_underscore < 0:
        expected(len(text), "'_' and the base channel count after the block part")
    second_underscore = text.find("_", first_underscore + 1)
    base_end = second_underscore if second_underscore >= 0 else len(text)
    base_text = text[first_underscore + 1 : base_end]
    if not base_text:
        expected(first_underscore + 1, "the base channel count (a positive even integer)")
    for position, char in enumerate(base_text, start=first_underscore + 1):
        if char not in _DIGITS:
            expected(position, "a digit of the base channel count")
    base_channels = int(base_text)
    if base_channels == 0 or base_channels % 2:
        fail(
            first_underscore + 1,
            f"the base channel count must be a positive even integer, got {base_channels}",
        )

    # MACRO part.
    if second_underscore < 0:
        expected(len(text), "'_' and the macro part after the base channel count")
    macro_start = second_underscore + 1
    macro = text[macro_start:]
    if not macro:
        expected(macro_start, "'1', '2', '4' or '-' in the macro part")
    position = macro_start
    while position < len(text):
        if text[position] == "-":
            if position + 1 >= len(text) or text[position + 1] not in _MULTIPLIER_DIGITS:
                expected(position + 1, "'1', '2' or '4' after '-' in the macro part")
            position += 2
        elif text[position] in _MULTIPLIER_DIGITS:
            position += 1
        else:
            expected(position, "'1', '2', '4' or '-' in the macro part")

    # Every op must be able to map its channels (group counts dividing channel counts).
    skip_tuple = tuple(skips)
    plans = _plan_blocks(block_layers, skip_tuple, base_channels, macro)
    for (offset, _, _), plan in zip(_macro_blocks(macro), plans, strict=True):
        for index, layer in enumerate(plan.layers):
            problem = _group_problem(layer.op, layer.in_channels, layer.out_channels)
            if problem is not None:
                fail(
                    2 * index,
                    f"layer {index} ({_OP_NAMES[layer.op]}) of the block at macro position "
                    f"{macro_start + offset} would map {layer.in_channels} to "
                    f"{layer.out_channels} channels, but {problem}; choose another base "
                    "channel count, width code or op",
                )
    return block_layers, skip_tuple, base_channels, macro


@dataclass(frozen=True)
class ETNASEncoding:
    """A parsed and validated ET-NAS architecture encoding.

    Build one with :meth:`parse`; ``str()`` gives the canonical string back. Constructing it
    from fields validates them the same way (lists are accepted and stored as tuples).

    Attributes:
        block_layers: ``(op index, width code)`` of each layer of the block, including the last
            layer, whose width code is always 2 (it is implicit in the string).
        skips: ``(kind, from-position, to-position)`` of each skip connection, as written;
            kind is ``"a"`` (add) or ``"c"`` (concat). The residual add from the block input to
            the block output is implicit and not listed.
        base_channels: width of the stem's output (the stem widths are C/2, C/2, C).
        macro: one channel multiplier digit per block, ``-`` before a stride-2 block.

    >>> encoding = ETNASEncoding.parse("23311-a02c12_64_211-2111-21111111111111111111111-211")
    >>> encoding.block_layers
    ((2, 3), (3, 1), (1, 2))
    >>> encoding.skips
    (('a', 0, 2), ('c', 1, 2))
    >>> encoding.num_layers, encoding.num_blocks, encoding.num_stages
    (3, 33, 4)
    >>> encoding.blocks_per_stage
    (3, 4, 23, 3)
    >>> str(ETNASEncoding(((0, 3), (1, 2)), (), 32, "1-2"))
    '031-_32_1-2'
    >>> str(ETNASEncoding.parse("2_32_2"))  # the canonical form always writes the '-'
    '2-_32_2'
    """

    block_layers: tuple[tuple[int, int], ...]
    skips: tuple[tuple[str, int, int], ...]
    base_channels: int
    macro: str

    def __post_init__(self) -> None:
        try:
            block_layers = tuple(tuple(layer) for layer in self.block_layers)
            skips = tuple(tuple(skip) for skip in self.skips)
        except TypeError as error:
            raise TypeError(
                "block_layers and skips must be sequences of (op, width code) pairs and (kind, from, to) triples"
            ) from error
        object.__setattr__(self, "block_layers", block_layers)
        object.__setattr__(self, "skips", skips)
        text = self._format()
        fields = _parse_fields(text)
        if fields != (block_layers, skips, self.base_channels, self.macro):
            raise InvalidEncodingError(
                text,
                None,
                f"the fields {block_layers!r}, {skips!r}, {self.base_channels!r}, "
                f"{self.macro!r} do not describe an encoding (op indices are 0-6, width codes "
                "0-4, the last layer's width code is 2, skips are (kind, from, to) with kind "
                "'a' or 'c')",
            )
        # Store the parsed values, so that the fields are plain ints and strings.
        object.__setattr__(self, "block_layers", fields[0])
        object.__setattr__(self, "skips", fields[1])
        object.__setattr__(self, "base_channels", fields[2])
        object.__setattr__(self, "macro", fields[3])

    @classmethod
    def parse(cls, text: str) -> ETNASEncoding:
        """Parse and validate an encoding string such as ``'031-_64_1-1-221-11121'``.

        Raises :class:`InvalidEncodingError`, naming the position of the first bad character
        and what was expected there.

        >>> try:
        ...     ETNASEncoding.parse("031-_32_1x1")
        ... except InvalidEncodingError as error:
        ...     print(error)
        invalid ET-NAS encoding '031-_32_1x1': position 9: expected '1', '2', '4' or '-' in the macro part, got 'x'
        >>> try:
        ...     ETNASEncoding.parse("031-a05_32_1")
        ... except InvalidEncodingError as error:
        ...     print(error.position, error.reason)
        6 skip 'a05' ends at position 5, but the block has 2 layers (positions 0-2)
        """
        if not isinstance(text, str):
            raise TypeError(f"an ET-NAS encoding is a str, got {type(text).__name__}")
        return cls(*_parse_fields(text))

    def _format(self) -> str:
        layer_digits = "".join(f"{op}{width}" for op, width in self.block_layers)[:-1]
        skip_text = "".join(f"{kind}{source}{target}" for kind, source, target in self.skips)
        return f"{layer_digits}-{skip_text}_{self.base_channels}_{self.macro}"

    def __str__(self) -> str:
        return self._format()

    @property
    def num_layers(self) -> int:
        """Number of layers in the block."""
        return len(self.block_layers)

    @property
    def num_blocks(self) -> int:
        """Number of blocks in the network (digits of the macro part)."""
        return sum(char != "-" for char in self.macro)

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        """Number of blocks of each stage; a ``-`` (stride 2) in the macro starts a stage."""
        return tuple(len(group) for group in self.macro.split("-") if group)

    @property
    def num_stages(self) -> int:
        """Number of stages after the stem (the stem is not counted)."""
        return len(self.blocks_per_stage)

    def _block_plans(self) -> list[_BlockPlan]:
        return _plan_blocks(self.block_layers, self.skips, self.base_channels, self.macro)

