"""Tests of the ET-NAS encoding (zoo_store._encoding) and model (zoo_store._etnas)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo_store import (
    ETNAS,
    OFFICIAL_ENCODINGS,
    ETNASEncoding,
    InvalidEncodingError,
    count_params_and_macs,
)

# Params (millions) and GMACs at 224x224 with 1000 classes, per architecture. These are the
# README figures with the known swap of E/F and G/H undone (PAPER.md).
REFERENCE_FIGURES = {
    "ET-NAS-A": (2.6, 0.23),
    "ET-NAS-B": (3.9, 0.39),
    "ET-NAS-C": (7.1, 0.58),
    "ET-NAS-D": (15.2, 1.55),
    "ET-NAS-E": (28.4, 2.31),
    "ET-NAS-F": (21.4, 2.61),
    "ET-NAS-G": (44.0, 5.33),
    "ET-NAS-H": (49.3, 5.68),
    "ET-NAS-I": (72.4, 13.13),
    "ET-NAS-J": (103.0, 18.16),
    "ET-NAS-K": (87.3, 27.51),
    "ET-NAS-L": (130.4, 23.46),
}

# A small encoding with an add skip that needs a strided projection and a concat skip.
TINY = "03111-a02c12_16_1-2-1"
# Every op kind except plain conv3x3: 6 separable, 4 depthwise, 5 (32 channels per group),
# 3 (4 groups), 2 (2 groups) and 1 (1x1).
ALL_OPS = "62425132221-_64_1-2"


def test_official_encodings_are_the_twelve_released_models() -> None:
    assert list(OFFICIAL_ENCODINGS) == [f"ET-NAS-{letter}" for letter in "ABCDEFGHIJKL"]


@pytest.mark.parametrize("name", list(OFFICIAL_ENCODINGS))
def test_official_encoding_parses_round_trips_and_matches_published_size(name: str) -> None:
    text = OFFICIAL_ENCODINGS[name]
    encoding = ETNASEncoding.parse(text)
    assert str(encoding) == text
    assert ETNASEncoding.parse(str(encoding)) == encoding
    assert encoding.block_layers[-1][1] == 2
    assert encoding.num_blocks == len(text.split("_")[2].replace("-", ""))

    # Built on the meta device, the 224x224 forward of the counting hooks computes shapes
    # only, which keeps this fast for the 20+ GMAC models. test_meta_count_equals_cpu_count
    # checks that this gives the same numbers as a real CPU forward.
    with torch.device("meta"):
        model = ETNAS(text, num_classes=1000)
    params, macs = count_params_and_macs(model, (3, 224, 224))
    expected_params_m, expected_gmacs = REFERENCE_FIGURES[name]
    assert params / 1e6 == pytest.approx(expected_params_m, rel=0.03)
    assert macs / 1e9 == pytest.approx(expected_gmacs, rel=0.03)


@pytest.mark.parametrize("name", ["ET-NAS-A", "ET-NAS-B"])
def test_meta_count_equals_cpu_count(name: str) -> None:
    torch.manual_seed(0)
    model = ETNAS(OFFICIAL_ENCODINGS[name])
    with torch.device("meta"):
        meta_model = ETNAS(OFFICIAL_ENCODINGS[name])
    assert count_params_and_macs(model) == count_params_and_macs(meta_model)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# state_dict layout. The expected keys and shapes are derived by hand from the reference
# implementation's module tree: layers = [stem op, ReLU, stem op, ReLU, stem op, ReLU,
# block..., pool], an op is Sequential(conv, bn), a block is module_list[layer] =
# ModuleList([op, skip...]) and a skip keeps its optional 1x1 conv + BN under `conv`.

BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def op_shapes(prefix: str, conv_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shapes of an op Sequential(conv, bn) at ``prefix``."""
    out_channels = conv_shape[0]
    shapes = {f"{prefix}.0.weight": conv_shape}
    for name in BN_BUFFERS:
        shapes[f"{prefix}.1.{name}"] = () if name == "num_batches_tracked" else (out_channels,)
    return shapes


def macro_blocks(macro: str) -> list[tuple[int, int]]:
    """(channel multiplier, stride) per block."""
    blocks, stride = [], 1
    for char in macro:
        if char == "-":
            stride = 2
        else:
            blocks.append((int(char), stride))
            stride = 1
    return blocks


def expected_shapes(text: str, block_shapes, num_classes: int = 1000) -> dict:
    _, base, macro = text.split("_")
    width = int(base)
    shapes = {}
    shapes |= op_shapes("layers.0", (width // 2, 3, 3, 3))
    shapes |= op_shapes("layers.2", (width // 2, width // 2, 3, 3))
    shapes |= op_shapes("layers.4", (width, width // 2, 3, 3))
    for index, (multiplier, stride) in enumerate(macro_blocks(macro)):
        prefix = f"layers.{6 + index}.module_list"
        shapes |= block_shapes(prefix, width, width * multiplier, stride)
        width *= multiplier
    shapes["fc.weight"] = (num_classes, width)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def et_nas_b_block(prefix: str, cin: int, cout: int, stride: int) -> dict:
    # "031-": conv3x3 to 2x width (strided: first non-1x1 layer), conv1x1 back to the output
    # width, then the residual add 0 -> 2, projected when channels or stride differ.
    shapes = op_shapes(f"{prefix}.0.0", (2 * cout, cin, 3, 3))
    shapes |= op_shapes(f"{prefix}.1.0", (cout, 2 * cout, 1, 1))
    if cin != cout or stride != 1:
        shapes |= op_shapes(f"{prefix}.1.1.conv", (cout, cin, 1, 1))
    return shapes


def et_nas_l_block(prefix: str, cin: int, cout: int, stride: int) -> dict:
    # "23311-a02c12": layer 0 conv3x3/2 groups to 2x width (strided), layer 1 conv3x3/4 groups
    # to 0.5x width, then at position 2 the add from 0 (projected when channels or stride
    # differ) and the concat from 1 (same stride: no conv), which widens layer 2's input to
    # 0.5x + 2x; layer 2 conv1x1 to the output width; residual add 0 -> 3.
    shapes = op_shapes(f"{prefix}.0.0", (2 * cout, cin // 2, 3, 3))
    shapes |= op_shapes(f"{prefix}.1.0", (cout // 2, 2 * cout // 4, 3, 3))
    if cin != cout // 2 or stride != 1:
        shapes |= op_shapes(f"{prefix}.1.1.conv", (cout // 2, cin, 1, 1))
    shapes |= op_shapes(f"{prefix}.2.0", (cout, cout // 2 + 2 * cout, 1, 1))
    if cin != cout or stride != 1:
        shapes |= op_shapes(f"{prefix}.2.1.conv", (cout, cin, 1, 1))
    return shapes


@pytest.mark.parametrize(
    ("name", "block_shapes"),
    [("ET-NAS-B", et_nas_b_block), ("ET-NAS-L", et_nas_l_block)],
)
def test_state_dict_matches_reference_layout(name: str, block_shapes) -> None:
    text = OFFICIAL_ENCODINGS[name]
    with torch.device("meta"):
        model = ETNAS(text)
    actual = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert actual == expected_shapes(text, block_shapes)
    # A few keys spelled out.
    assert actual["layers.0.0.weight"] == (16 if name == "ET-NAS-B" else 32, 3, 3, 3)
    assert "layers.6.module_list.0.0.0.weight" in actual
    assert "layers.6.module_list.0.0.1.running_var" in actual
    assert "fc.weight" in actual


def test_state_dict_keys_of_skip_and_separable_ops() -> None:
    keys = set(ETNAS(ALL_OPS, num_classes=10).state_dict())
    # Op 6 is Sequential(Sequential(depthwise, pointwise), bn).
    assert {
        "layers.6.module_list.0.0.0.0.weight",
        "layers.6.module_list.0.0.0.1.weight",
    } <= keys
    # Six layers; in the stride-2 block the residual add 0 -> 6 needs a projection.
    assert "layers.7.module_list.5.1.conv.0.weight" in keys
    assert "layers.6.module_list.5.1.conv.0.weight" not in keys
    assert "layers.6.module_list.6.0.0.weight" not in keys


def test_state_dict_round_trip_strict() -> None:
    torch.manual_seed(0)
    source = ETNAS(TINY, num_classes=10).eval()
    torch.manual_seed(1)
    target = ETNAS(TINY, num_classes=10).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def test_encoding_fields() -> None:
    encoding = ETNASEncoding.parse(OFFICIAL_ENCODINGS["ET-NAS-L"])
    assert encoding.block_layers == ((2, 3), (3, 1), (1, 2))
    assert encoding.skips == (("a", 0, 2), ("c", 1, 2))
    assert encoding.base_channels == 64
    assert encoding.macro == "211-2111-21111111111111111111111-211"
    assert encoding.num_blocks == 33
    assert encoding.num_stages == 4
    assert encoding.blocks_per_stage == (3, 4, 23, 3)
    a = ETNASEncoding.parse(OFFICIAL_ENCODINGS["ET-NAS-A"])
    assert a.block_layers == ((2, 2),)
    assert a.skips == ()


def test_encoding_canonical_form_and_construction_from_fields() -> None:
    assert str(ETNASEncoding.parse("031_032_-21")) == "031-_32_-21"
    built = ETNASEncoding([[0, 3], [1, 2]], [["a", 0, 1]], 32, "1-2")
    assert built == ETNASEncoding.parse("031-a01_32_1-2")
    assert hash(built) == hash(ETNASEncoding.parse("031-a01_32_1-2"))
    assert ETNASEncoding.parse("1-_32_-1-1").num_stages == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((((7, 3), (1, 2)), (), 32, "1"), "position 0"),
        ((((0, 3), (1, 3)), (), 32, "1"), "the last layer's width code is 2"),
        ((((0, 3), (1, 2)), (("x", 0, 1),), 32, "1"), "expected a skip kind"),
        ((((0, 3), (1, 2)), (), 31, "1"), "positive even integer"),
        ((((0, 3), (1, 2)), (), 32, ""), "macro part"),
    ],
)
def test_invalid_fields(fields: tuple, message: str) -> None:
    with pytest.raises(InvalidEncodingError, match=message):
        ETNASEncoding(*fields)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        # bad op digit / width code
        ("731-_32_1", 0, "expected an op digit '0'-'6' in the block's layers, got '7'"),
        ("051-_32_1", 1, "expected a width code '0'-'4' in the block's layers, got '5'"),
        ("0x1-_32_1", 1, "expected a width code"),
        ("03-_32_1", 2, "for the block's last layer (its width code is implicit), got '-'"),
        ("-_32_1", 0, "expected an op digit"),
        ("0" * 19 + "-_32_1", 18, "at most 9 layers"),
        # bad macro characters, empty macro
        ("031-_32_1x1", 9, "expected '1', '2', '4' or '-' in the macro part, got 'x'"),
        ("031-_32_3", 8, "got '3'"),
        ("031-_32_1-", 10, "expected '1', '2' or '4' after '-' in the macro part"),
        ("031-_32_1--2", 10, "got '-'"),
        ("031-_32_1_1", 9, "got '_'"),
        ("031-_32_", 8, "in the macro part, got end of string"),
        # missing parts
        ("031-_32", 7, "expected '_' and the macro part"),
        ("031-", 4, "expected '_' and the base channel count"),
        ("", 0, "got end of string"),
        # base channels
        ("031-__1", 5, "expected the base channel count"),
        ("031-_3a_1", 6, "expected a digit of the base channel count, got 'a'"),
        ("031-_33_1", 5, "positive even integer, got 33"),
        ("031-_0_1", 5, "positive even integer, got 0"),
        # skips
        ("031-a05_32_1", 6, "ends at position 5, but the block has 2 layers"),
        ("031-a10_32_1", 5, "must go forward"),
        ("031-a11_32_1", 5, "must go forward"),
        ("031-x01_32_1", 4, "expected a skip kind 'a' (add) or 'c' (concat), got 'x'"),
        ("031-a0_32_1", 6, "expected a skip's to-position digit, got '_'"),
        ("031-ab1_32_1", 5, "from-position digit, got 'b'"),
        ("031-c02_32_1", 4, "concat skip 'c02' ends at the block output"),
        # group counts that do not divide the channel counts
        ("3-_18_1", 0, "map 18 to 18 channels, but both channel counts must be divisible by its 4"),
        ("211-_18_1", 0, "would map 18 to 9 channels, but both channel counts must be divisible"),
        ("01211-_18_1", 2, "layer 1 (conv3x3 with 2 groups) of the block at macro position 10"),
        ("5-_16_1", 0, "at least 32 input channels"),
        ("034-_32_1", 2, "output channels must be a multiple of the input channels"),
    ],
)
def test_invalid_encoding_names_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(InvalidEncodingError) as caught:
        ETNASEncoding.parse(text)
    error = caught.value
    assert error.position == position
    assert error.encoding == text
    assert fragment in error.reason
    assert str(error).startswith(f"invalid ET-NAS encoding {text!r}: position {position}: ")


def test_invalid_encoding_error_example_message_and_pickling() -> None:
    with pytest.raises(InvalidEncodingError) as caught:
        ETNAS("031-_32_1x1")
    error = caught.value
    assert isinstance(error, ValueError)
    assert str(error) == (
        "invalid ET-NAS encoding '031-_32_1x1': position 9: expected '1', '2', '4' or '-' in the macro part, got 'x'"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.encoding, copy.position, copy.reason, str(copy)) == (
        error.encoding,
        error.position,
        error.reason,
        str(error),
    )


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        ETNASEncoding.parse(b"031-_32_1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ETNAS(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The module


@pytest.mark.parametrize("text", [TINY, ALL_OPS])
def test_forward_backward_small_input(text: str) -> None:
    torch.manual_seed(0)
    model = ETNAS(text, num_classes=10)
    assert model.encoding == ETNASEncoding.parse(text)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert model.forward_features(x).shape == (2, model.num_features)


def test_in_chans() -> None:
    model = ETNAS(TINY, num_classes=4, in_chans=1)
    assert model.layers[0][0].in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_stage_modules_cover_every_parameter_once() -> None:
    model = ETNAS(TINY, num_classes=10)
    stages = model.stage_modules()
    # stem, the three macro stages ("1", "2", "1"), head
    assert len(stages) == model.encoding.num_stages + 2 == 5
    assert [len(stage) for stage in stages] == [6, 1, 1, 1, 2]
    seen = [id(p) for stage in stages for module in stage for p in module.parameters()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    assert stages[-1][-1] is model.fc

    # Freezing the first two stages (stem and stage 1) leaves the rest trainable.
    for stage in stages[:2]:
        for module in stage:
            module.requires_grad_(False)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for index, stage in enumerate(stages):
        for module in stage:
            for parameter in module.parameters():
                assert (parameter.grad is None) == (index < 2)


def test_stage_modules_with_leading_stride_two_block() -> None:
    model = ETNAS("031-_16_-1-2", num_classes=3)
    assert [len(stage) for stage in model.stage_modules()] == [6, 1, 1, 2]


def test_reset_classifier() -> None:
    model = ETNAS(TINY, num_classes=10)
    assert model.get_classifier() is model.fc
    assert model.num_features == 32
    model.reset_classifier(5)
    assert isinstance(model.fc, nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (32, 5)
    assert model.num_classes == 5
    assert model.get_classifier() is model.fc
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    with pytest.raises(ValueError):
        model.reset_classifier(-1)


def test_weight_init() -> None:
    torch.manual_seed(0)
    model = ETNAS(OFFICIAL_ENCODINGS["ET-NAS-A"])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    # kaiming normal, fan out: std = sqrt(2 / (out_channels * kernel area))
    conv = model.layers[6].module_list[0][0][0]
    assert isinstance(conv, nn.Conv2d)
    fan_out = conv.out_channels * 9
    expected_std = (2.0 / fan_out) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Counting


def test_count_params_and_macs_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1, groups=4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    params, macs = count_params_and_macs(model, (3, 16, 16))
    assert params == 3 * 8 * 9 + 2 * 8 + (8 * 2 * 9 + 8) + (8 * 5 + 5)
    assert macs == 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8 * 2 * 9 + 8 * 5


def test_count_leaves_model_state_alone() -> None:
    model = ETNAS(TINY, num_classes=10)
    model.train()
    model.layers[2].eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    count_params_and_macs(model, (3, 32, 32))
    assert model.training
    assert not model.layers[2].training
    assert all(module.training for module in model.layers[4].modules())
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    # No hooks left behind.
    assert all(not module._forward_hooks for module in model.modules())


def test_parsing_an_encoding_does_not_import_torch() -> None:
    # Clients and the NAS sampler validate encodings without paying for torch.
    code = (
        "import sys, zoo_store; "
        "[zoo_store.ETNASEncoding.parse(text) for text in zoo_store.OFFICIAL_ENCODINGS.values()]; "
        "sys.exit('torch' in sys.modules)"
    )
    probe = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert probe.returncode == 0
