"""The joint ET-NAS search space: Optuna genes, their decoding into encodings, and pruning.

A point of the space is a fixed set of Optuna parameters (:func:`suggest_encoding`), decoded
into an ET-NAS encoding string (:func:`decode`); :func:`propose` prunes the points that are
not networks, too wide, too large or already evaluated.

>>> space = SearchSpace()
>>> params = {"n_layers": 2, "op_0": 0, "width_0": 3, "op_1": 1, "base": 32,
...           "n_stages": 4, "blocks_0": 1, "blocks_1": 1, "blocks_2": 2, "blocks_3": 3,
...           "mult_0": 1, "mult_1": 2, "mult_2": 2, "mult_3": 2,
...           "mult_at_1": "first", "mult_at_2": "first", "mult_at_3": "last",
...           "skip_0_kind": "none", "skip_1_kind": "none"}
>>> decode(params, space)
'031-_32_1-2-21-112'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SearchSpace",
    "decode",
    "encoding_params_and_macs",
    "propose",
    "sample_encodings",
    "suggest_encoding",
]

_SKIP_KINDS = ("none", "a", "c")


@dataclass(frozen=True)
class SearchSpace:
    """The joint block-level and macro-level space, and the size limits of a candidate.

    Attributes:
        max_layers: layers per block are 1..max_layers (at most 4: skip genes address
            positions 0-4).
        ops: op indices a layer may use (PAPER.md: 0 conv3x3 ... 6 depthwise-separable).
        width_codes: width codes of the non-last layers (the last is always 2).
        max_skips: skip genes per block (each: none, add or concat, from, to).
        base_widths: stem output widths C.
        stages: numbers of stages after the stem (the first stage keeps the stem's stride).
        max_blocks_per_stage: blocks per stage are 1..this.
        multipliers: channel multiplier of a stage (1, 2 or 4), applied on its first or last
            block; stage 0 may also multiply.
        max_channels: a candidate whose last block is wider is pruned.
        max_mmacs: a candidate over this many MMACs per 32x32 image is pruned (it would cost
            more proxy-training time than the search can afford).
    """

    max_layers: int = 4
    ops: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    width_codes: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_skips: int = 2
    base_widths: tuple[int, ...] = (8, 16, 24, 32)
    stages: tuple[int, ...] = (2, 3, 4)
    max_blocks_per_stage: int = 3
    multipliers: tuple[int, ...] = (1, 2, 4)
    max_channels: int = 512
    max_mmacs: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_layers <= 4:
            raise ValueError(f"max_layers must be 1-4, got {self.max_layers}")
        if not set(self.ops) <= set(range(7)) or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of 0-6, got {self.ops}")
        if not set(self.width_codes) <= set(range(5)) or not self.width_codes:
            raise ValueError(f"width_codes must be a subset of 0-4, got {self.width_codes}")
        if not set(self.stages) <= {1, 2, 3, 4} or not self.stages:
            raise ValueError(f"stages must be a subset of 1-4, got {self.stages}")

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def suggest_encoding(trial: optuna.trial.BaseTrial, space: SearchSpace) -> str:
    """Suggest every gene of ``space`` on ``trial`` and return the decoded encoding string.

    All genes are suggested on every trial (also those the point does not use), so the
    search space is the same for all trials and NSGA-II's crossover sees every gene.
    Raises :class:`~zoo_store._etnas.InvalidEncodingError` for a point that is not a network.
    """
    params: dict[str, Any] = {"n_layers": trial.suggest_int("n_layers", 1, space.max_layers)}
    for index in range(space.max_layers):
        params[f"op_{index}"] = trial.suggest_categorical(f"op_{index}", list(space.ops))
    for index in range(space.max_layers - 1):
        params[f"width_{index}"] = trial.suggest_categorical(f"width_{index}", list(space.width_codes))
    for index in range(space.max_skips):
        params[f"skip_{index}_kind"] = trial.suggest_categorical(f"skip_{index}_kind", list(_SKIP_KINDS))
        params[f"skip_{index}_from"] = trial.suggest_int(f"skip_{index}_from", 0, space.max_layers - 1)
        params[f"skip_{index}_to"] = trial.suggest_int(f"skip_{index}_to", 1, space.max_layers)
    params["base"] = trial.suggest_categorical("base", list(space.base_widths))
    params["n_stages"] = trial.suggest_categorical("n_stages", list(space.stages))
    for stage in range(max(space.stages)):
        params[f"blocks_{stage}"] = trial.suggest_int(f"blocks_{stage}", 1, space.max_blocks_per_stage)
        params[f"mult_{stage}"] = trial.suggest_categorical(f"mult_{stage}", list(space.multipliers))
        params[f"mult_at_{stage}"] = trial.suggest_categorical(f"mult_at_{stage}", ["first", "last"])
    return decode(params, space)


def decode(params: Mapping[str, Any], space: SearchSpace) -> str:
    """The canonical ET-NAS encoding of a point of ``space`` (genes it does not use ignored).

    Raises :class:`~zoo_store._etnas.InvalidEncodingError` when the encoding is not a network
    (for example a group count that does not divide a channel count).

    >>> params = {"n_layers": 3, "op_0": 2, "width_0": 3, "op_1": 3, "width_1": 1,
    ...           "op_2": 1, "skip_0_kind": "a", "skip_0_from": 0, "skip_0_to": 2,
    ...           "skip_1_kind": "c", "skip_1_from": 1, "skip_1_to": 2, "base": 16,
    ...           "n_stages": 2, "blocks_0": 2, "mult_0": 2, "mult_at_0": "last",
    ...           "blocks_1": 1, "mult_1": 1}
    >>> decode(params, SearchSpace())
    '23311-a02c12_16_12-1'
    >>> decode({**params, "skip_1_to": 3}, SearchSpace())  # concat into the output: dropped
    '23311-a02_16_12-1'
    """
    from zoo_store._encoding import ETNASEncoding

    n_layers = int(params["n_layers"])
    layers = [(int(params[f"op_{i}"]), int(params[f"width_{i}"]) if i < n_layers - 1 else 2) for i in range(n_layers)]
    skips: list[tuple[str, int, int]] = []
    for index in range(space.max_skips):
        kind = params.get(f"skip_{index}_kind", "none")
        if kind == "none":
            continue
        source, target = int(params[f"skip_{index}_from"]), int(params[f"skip_{index}_to"])
        if source >= target or target > n_layers:
            continue  # positions the block does not have
        if (kind, source, target) == ("a", 0, n_layers) or (kind, source, target) in skips:
            continue  # the residual add is implicit; a repeated skip adds nothing
        if kind == "c" and target == n_layers:
            continue  # a concat into the block output would change its width
        skips.append((kind, source, target))
    macro = ""
    for stage in range(int(params["n_stages"])):
        blocks = ["1"] * int(params[f"blocks_{stage}"])
        multiplier = int(params[f"mult_{stage}"])
        if multiplier != 1:
            at = 0 if params.get(f"mult_at_{stage}", "first") == "first" else len(blocks) - 1
            blocks[at] = str(multiplier)
        macro += ("-" if stage else "") + "".join(blocks)
    encoding = ETNASEncoding(tuple(layers), tuple(skips), int(params["base"]), macro)
    return str(encoding)


def _final_channels(encoding: str) -> int:
    base, macro = encoding.split("_")[1:]
    channels = int(base)
    for char in macro:
        if char != "-":
            channels *= int(char)
    return channels


def sample_encodings(count: int, seed: int, space: SearchSpace | None = None) -> list[str]:
    """``count`` valid encodings drawn as NSGA-II's first generation would (seeded).

    Runs an in-memory study with ``NSGAIISampler(seed=seed)`` and prunes invalid points, the
    same as :func:`run_search` does, without training anything.
    """
    import optuna

    space = space or SearchSpace()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, count)),
    )
    found: list[str] = []
    while len(found) < count:
        trial = study.ask()
        encoding, reason = propose(trial, space, set(found))
        if encoding is None:
            trial.set_user_attr("pruned_reason", reason)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        found.append(encoding)
        study.tell(trial, [0.0, 0.0])
    return found


def propose(trial: optuna.trial.BaseTrial, space: SearchSpace, seen: set[str]) -> tuple[str | None, str]:
    """The trial's encoding, or ``(None, reason)`` when it must be pruned."""
    from zoo_store._encoding import InvalidEncodingError

    try:
        encoding = suggest_encoding(trial, space)
    except InvalidEncodingError as error:
        return None, f"invalid: {error.reason}"
    if _final_channels(encoding) > space.max_channels:
        return None, f"too wide: {_final_channels(encoding)} > {space.max_channels} channels"
    if encoding in seen:
        return None, "duplicate: already evaluated"
    macs = encoding_params_and_macs(encoding)[1]
    if macs / 1e6 > space.max_mmacs:
        return None, f"too large: {macs / 1e6:.1f} > {space.max_mmacs} MMACs at 32x32"
    return encoding, ""


def encoding_params_and_macs(encoding: str, num_classes: int = 10, image_size: int = 32) -> tuple[int, int]:
    import torch

    from zoo_store._etnas import ETNAS, count_params_and_macs

    with torch.device("meta"):  # shapes only: nothing is allocated or computed
        model = ETNAS(encoding, num_classes=num_classes)
    return count_params_and_macs(model, (3, image_size, image_size))
