"""The training regime: the hyperparameters of one fine-tuning run, and their defaults.

One place for the defaults: a candidate that leaves a hyperparameter out gets it from here,
the worker trains with it, and the fixed-default policy is this regime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from nasoa_contracts._errors import InvalidArgument

__all__ = ["DEFAULT_REGIME", "OPTIMIZERS", "TrainingRegime"]

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class TrainingRegime:
    """A regime's hyperparameters (the learning rate is the peak of a cosine schedule).

    >>> TrainingRegime.from_hparams({"lr": 0.1, "optimizer": "adamw"}).batch_size
    64
    """

    lr: float = 0.01
    batch_size: int = 64
    frozen_stages: int = 0
    optimizer: str = "sgd"  # sgd uses momentum 0.9
    weight_decay: float = 1e-4

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, float | int | str]) -> TrainingRegime:
        """The regime of a candidate's hyperparameters, the defaults where it has none."""
        try:
            return cls(
                lr=float(hparams.get("lr", cls.lr)),
                batch_size=int(hparams.get("batch_size", cls.batch_size)),
                frozen_stages=int(hparams.get("frozen_stages", cls.frozen_stages)),
                optimizer=str(hparams.get("optimizer", cls.optimizer)),
                weight_decay=float(hparams.get("weight_decay", cls.weight_decay)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"hyperparameters {dict(hparams)!r} are not a training regime: {exc}") from None

    def as_hparams(self) -> dict[str, float | int | str]:
        return asdict(self)


DEFAULT_REGIME = TrainingRegime()
