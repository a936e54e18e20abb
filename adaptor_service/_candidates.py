"""The candidate space: zoo models crossed with a grid of training regimes.

The grid comes from a TOML file (``NASOA_CANDIDATES``, default ``candidates.toml`` beside
this module). Each candidate carries its model's descriptors and a physics estimate of its
time, ``prior_seconds`` = steps x the zoo entry's measured step time, which the time
predictor then corrects.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nasoa_contracts import (
    DEFAULT_REGIME,
    Candidate,
    InvalidArgument,
    NotFound,
    TaskSpec,
    TrainingRegime,
    require_finite,
)

DEFAULT_SPACE_FILE = Path(__file__).with_name("candidates.toml")

__all__ = ["CandidateSpace", "CandidateTable", "ModelInfo", "RegimeGrid"]


@dataclass(frozen=True)
class ModelInfo:
    """What the adaptor needs to know of a zoo entry."""

    name: str
    step_time_ms: dict[str, float] = field(default_factory=dict)
    step_batch_size: int = 64
    num_params: int = 0
    macs: int = 0
    source_accuracy: float = 0.0
    num_stages: int = 1

    def step_seconds(self, device_class: str, batch_size: int) -> float | None:
        """Seconds per training step at ``batch_size``, scaled linearly from the profile."""
        ms = self.step_time_ms.get(device_class)
        if not ms:
            return None
        return ms / 1000.0 * batch_size / max(self.step_batch_size, 1)

    def features(self) -> dict[str, float]:
        feats = {"source_accuracy": self.source_accuracy, "num_stages": float(self.num_stages)}
        if self.num_params:
            feats["log_params"] = math.log(self.num_params)
        if self.macs:
            feats["log_macs"] = math.log(self.macs)
        return feats


@dataclass(frozen=True)
class RegimeGrid:
    """The hyperparameter grid crossed with every model."""

    learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    epochs: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 20)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    frozen_stages: tuple[int, ...] = (0, 1, 2)
    optimizers: tuple[str, ...] = ("sgd", "adamw")
    weight_decay: float = DEFAULT_REGIME.weight_decay

    @classmethod
    def from_toml(cls, path: str | Path) -> RegimeGrid:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidArgument(f"candidate space file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"candidate space file {path}: {exc}") from None
        grid = data.get("grid", {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(grid) - known)
        if unknown:
            raise InvalidArgument(f"{path}: unknown keys in [grid]: {', '.join(unknown)}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in grid.items()}
        out = cls(**values)
        for name in ("learning_rates", "epochs", "batch_sizes", "frozen_stages", "optimizers"):
            if not getattr(out, name):
                raise InvalidArgument(f"{path}: [grid] {name} must not be empty")
        return out

    def regimes(self) -> Iterable[tuple[dict[str, float | str], int]]:
        for lr, bs, frozen, opt, epochs in itertools.product(
            self.learning_rates, self.batch_sizes, self.frozen_stages, self.optimizers, self.epochs
        ):
            hp: dict[str, float | str] = {
                "lr": lr,
                "batch_size": bs,
                "frozen_stages": frozen,
                "optimizer": opt,
                "weight_decay": self.weight_decay,
            }
            yield hp, epochs


class CandidateSpace:
    """Crosses the zoo's models with the regime grid, for one task at a time.

    >>> space = CandidateSpace([ModelInfo("m", {"cpu": 10.0}, num_stages=3)],
    ...                        RegimeGrid(epochs=(1,), learning_rates=(0.1,), batch_sizes=(50,),
    ...                                   frozen_stages=(0,), optimizers=("sgd",)))
    >>> task = TaskSpec("builtin:digits", 30, {"num_samples": 1000})
    >>> [round(c.prior_seconds, 3) for c in space.candidates(task)]
    [0.169]
    """

    def __init__(self, models: Sequence[ModelInfo], grid: RegimeGrid | None = None) -> None:
        self.models = {m.name: m for m in models}
        self.grid = grid or RegimeGrid()
        self._regimes = list(self.grid.regimes())
        # Candidates depend on the task only through its size and device: requests of one
        # dataset reuse them (a few thousand frozen dataclasses cost tens of ms to build).
        self._cache: dict[tuple[object, ...], list[Candidate]] = {}
        # Validated once; a task's candidates are copies that differ only in prior_seconds.
        self._templates: dict[str, tuple[list[Candidate], list[tuple[int, int]]]] = {}
        #: Whether no two candidates share a key (a grid file may repeat a value).
        self.unique_keys = len({(repr(hp), e) for hp, e in self._regimes}) == len(self._regimes)

    def __len__(self) -> int:
        return len(self._regimes) * len(self.models)

    def model_names(self) -> list[str]:
        return sorted(self.models)

    def check_models(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise NotFound(
                f"unknown model {', '.join(map(repr, unknown))}; available: {', '.join(self.model_names())}"
            )

    def prior_seconds(self, task: TaskSpec, model: ModelInfo, batch_size: int, epochs: int) -> float | None:
        step = model.step_seconds(task.device_class, batch_size)
        n_train = task.meta_features.get("num_samples")
        if step is None or not n_train:
            return None
        n_test = task.meta_features.get("num_test", 0.25 * n_train)
        steps = math.ceil(n_train / batch_size) * epochs
        # Evaluation after each epoch: a forward pass costs about a third of a training step.
        eval_steps = math.ceil(n_test / batch_size) * epochs / 3.0
        return (steps + eval_steps) * step

    def complete(self, task: TaskSpec, candidate: Candidate) -> Candidate:
        """``candidate`` with its model's descriptors and physics prior, as the space makes them.

        Past runs read from a log carry neither; completing them makes their features the
        same as those of the service's own candidates. Unknown models are returned as given.
        """
        model = self.models.get(candidate.model)
        if model is None:
            return candidate
        batch = TrainingRegime.from_hparams(candidate.hparams).batch_size
        prior = self.prior_seconds(task, model, batch, candidate.epochs)
        return Candidate(candidate.model, dict(candidate.hparams), candidate.epochs, model.features(), prior)

    def candidates(self, task: TaskSpec, models: Sequence[str] = ()) -> list[Candidate]:
        if models:
            self.check_models(models)
        meta = task.meta_features
        key = (task.device_class, meta.get("num_samples"), meta.get("num_test"), tuple(models))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= 16:
                self._cache.clear()
            cached = self._cache[key] = self.table(task, models).materialize()
        return list(cached)

    def table(self, task: TaskSpec, models: Sequence[str] = ()) -> CandidateTable:
        """``candidates(task, models)`` without making them: each is made when it is read.

        A task's candidates are the space's templates with the task's physics priors;
        keeping only the priors spares the garbage collector thousands of objects per task.
        """
        if models:
            self.check_models(models)
        templates: list[Candidate] = []
        priors: list[float | None] = []
        for name in models or self.model_names():
            model = self.models[name]
            model_templates, keys = self._model_templates(model)
            # A prior depends on (batch size, epochs) only: a few dozen per model, not thousands.
            known = {}
            for batch, epochs in dict.fromkeys(keys):
                prior = self.prior_seconds(task, model, batch, epochs)
                known[(batch, epochs)] = None if prior is None else require_finite("prior_seconds", prior)
            templates += model_templates
            priors += map(known.__getitem__, keys)
        return CandidateTable(templates, priors)

    def _model_templates(self, model: ModelInfo) -> tuple[list[Candidate], list[tuple[int, int]]]:
        """The model's candidates without prior, and the (batch size, epochs) of each."""
        found = self._templates.get(model.name)
        if found is None:
            feats = model.features()
            templates = [
                Candidate(model.name, hp, epochs, feats, None)
                for hp, epochs in self._regimes
                if int(hp["frozen_stages"]) < model.num_stages
            ]
            keys = [(int(t.hparams["batch_size"]), t.epochs) for t in templates]
            found = self._templates[model.name] = (templates, keys)
        return found


class CandidateTable(Sequence[Candidate]):
    """One task's candidates, each made on access from a template and its prior."""

    def __init__(self, templates: list[Candidate], priors: list[float | None]) -> None:
        self.templates = templates  #: the candidates without ``prior_seconds``; the same for every task
        self.priors = priors

    def __len__(self) -> int:
        return len(self.templates)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _with_prior(self.templates[i], self.priors[i])

    def materialize(self) -> list[Candidate]:
        return list(map(_with_prior, self.templates, self.priors))


def _with_prior(template: Candidate, prior: float | None) -> Candidate:
    """``template`` with a validated ``prior_seconds``, without validating the rest again."""
    out = object.__new__(Candidate)
    out.__dict__.update(template.__dict__)
    out.__dict__["prior_seconds"] = prior
    return out
