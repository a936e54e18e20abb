"""Domain objects shared by every part of NASOA: what a task, a candidate, a plan and an observation are.

These are plain frozen dataclasses. The gRPC layer converts them to and from protobuf
messages; nothing past that boundary sees a loose dict or a proto message.

Units: accuracy is in percent (0-100), time in seconds.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from nasoa_contracts._errors import InvalidArgument

HParamValue = float | int | str


def _frozen(mapping: Mapping[str, HParamValue] | None) -> Mapping[str, HParamValue]:
    return MappingProxyType(dict(sorted((mapping or {}).items())))


# Larger numbers are no real dataset size, rate or time; they would overflow the models.
MAX_MAGNITUDE = 1e12


def require_finite(name: str, value: float, *, positive: bool = False) -> float:
    """Return ``value`` as float, or raise InvalidArgument naming ``name``.

    >>> require_finite("budget", 3)
    3.0
    >>> require_finite("budget", -1, positive=True)
    Traceback (most recent call last):
    ...
    nasoa_contracts._errors.InvalidArgument: budget must be a positive number, got -1
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
    if positive and number <= 0:
        raise InvalidArgument(f"{name} must be a positive number, got {value!r}")
    if abs(number) > MAX_MAGNITUDE:
        raise InvalidArgument(f"{name} must be at most {MAX_MAGNITUDE:g} in magnitude, got {value!r}")
    return number


@dataclass(frozen=True)
class TaskSpec:
    """A fine-tuning request: a dataset, its meta-features and a time budget."""

    dataset_uri: str
    budget_seconds: float
    meta_features: Mapping[str, float] = field(default_factory=dict)
    task_id: str = ""
    device_class: str = "cpu"

    def __post_init__(self) -> None:
        if not self.dataset_uri or len(self.dataset_uri) > 4096:
            raise InvalidArgument("dataset_uri must be a non-empty string of at most 4096 chars")
        object.__setattr__(
            self, "budget_seconds", require_finite("budget_seconds", self.budget_seconds, positive=True)
        )
        meta = {}
        for key, value in (self.meta_features or {}).items():
            meta[str(key)] = require_finite(f"meta_features[{key!r}]", value)
        object.__setattr__(self, "meta_features", MappingProxyType(dict(sorted(meta.items()))))
        if not self.task_id:
            object.__setattr__(self, "task_id", self.dataset_uri)
        if not self.device_class:
            object.__setattr__(self, "device_class", "cpu")

    # Mapping proxies keep the fields read-only but neither hash nor pickle: do both by value.
    def __hash__(self) -> int:
        return hash((self.dataset_uri, self.budget_seconds, tuple(self.meta_features.items()), self.task_id,
                     self.device_class))

    def __reduce__(self) -> tuple[object, ...]:
        return (TaskSpec, (self.dataset_uri, self.budget_seconds, dict(self.meta_features), self.task_id,
                           self.device_class))


@dataclass(frozen=True)
class Candidate:
    """One thing the adaptor can run: a zoo model and a full training regime.

    ``model_features`` describe the model (params, MACs, measured step time...), and
    ``prior_seconds`` is the physics estimate of the run's time (steps x step time), when
    the caller knows it.
    """

    model: str
    hparams: Mapping[str, HParamValue] = field(default_factory=dict)
    epochs: int = 1
    model_features: Mapping[str, float] = field(default_factory=dict)
    prior_seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise InvalidArgument("candidate model name must not be empty")
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise InvalidArgument(f"epochs must be a positive integer, got {self.epochs!r}")
        object.__setattr__(self, "epochs", int(self.epochs))
        hparams = dict(self.hparams or {})
        for k, v in hparams.items():
            if not isinstance(v, str):
                require_finite(f"hparams[{k!r}]", v)  # validated; ints stay ints
        features = {k: require_finite(f"model_features[{k!r}]", v) for k, v in (self.model_features or {}).items()}
        if self.prior_seconds is not None:
            object.__setattr__(self, "prior_seconds", require_finite("prior_seconds", self.prior_seconds))
        object.__setattr__(self, "hparams", _frozen(hparams))  # type: ignore[arg-type]
        object.__setattr__(self, "model_features", _frozen(features))

    def __hash__(self) -> int:
        return hash((self.key, tuple(self.model_features.items()), self.prior_seconds))

    def __reduce__(self) -> tuple[object, ...]:
        return (Candidate, (self.model, dict(self.hparams), self.epochs, dict(self.model_features),
                            self.prior_seconds))

    @property
    def key(self) -> str:
        """A stable identity of the candidate (model, hyperparameters and epochs)."""
        payload = json.dumps([self.model, dict(self.hparams), self.epochs], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def describe(self) -> str:
        hp = " ".join(f"{k}={v}" for k, v in self.hparams.items())
        return f"{self.model} epochs={self.epochs} {hp}".strip()


@dataclass(frozen=True)
class Prediction:
    """Predicted accuracy (percent) and time (seconds), each with a standard deviation."""

    accuracy: float
    accuracy_std: float
    seconds: float
    seconds_std: float


@dataclass(frozen=True)
class Alternative:
    """A candidate that was considered, and why it lost to the plan (or why it won)."""

    candidate: Candidate
    prediction: Prediction
    reason: str


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule: each run trains up to ``stop_after_epochs`` of its schedule.

    Each run's candidate holds its full planned length (its learning-rate schedule spans
    it); ``stop_after_epochs`` 0 means the whole schedule. The ``keep`` runs predicted best
    from their curves continue to the next stage.
    """

    runs: tuple[Candidate, ...]
    predictions: tuple[Prediction, ...]
    stop_after_epochs: int = 0
    keep: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))
        object.__setattr__(self, "predictions", tuple(self.predictions))
        if len(self.runs) != len(self.predictions):
            raise InvalidArgument(f"a stage needs one prediction per run, got {len(self.runs)} runs and "
                                  f"{len(self.predictions)} predictions")


@dataclass(frozen=True)
class Plan:
    """The chosen candidate with its predictions, and the runners-up.

    A one-shot plan runs ``candidate``. A staged plan (``stages``, probe-then-commit) runs
    its stages in turn as child jobs; ``candidate`` is then the run predicted to win, with
    its full schedule. ``planned_seconds`` is the predicted worker-seconds of all stages.
    """

    candidate: Candidate
    prediction: Prediction
    policy: str
    time_margin: float
    alternatives: tuple[Alternative, ...] = ()
    feasible: bool = True
    stages: tuple[Stage, ...] = ()
    planned_seconds: float = 0.0

    @property
    def staged(self) -> bool:
        """True for a schedule of more than one stage."""
        return len(self.stages) > 1

    def total_seconds(self) -> float:
        """Predicted worker-seconds of the plan, margin excluded."""
        return self.planned_seconds or self.prediction.seconds


@dataclass(frozen=True)
class CurvePoint:
    """The state of a run after ``epoch`` epochs: accuracy (percent), cumulative seconds."""

    epoch: int
    accuracy: float
    seconds: float


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Observation:
    """The outcome of one run, sent back by a worker (or replayed from a log).

    ``curve`` holds the validation accuracy after each epoch with the cumulative time;
    ``accuracy`` is the test accuracy of the weights kept (measured once) and ``seconds`` the
    total time used.  ``artifact_id``/``artifact_sha256`` name the stored fine-tuned model.
    """

    job_id: str
    task: TaskSpec
    candidate: Candidate
    accuracy: float
    seconds: float
    curve: tuple[CurvePoint, ...] = ()
    status: str = "ok"
    message: str = ""
    artifact_id: str = ""
    artifact_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.job_id:
            raise InvalidArgument("observation job_id must not be empty")
        object.__setattr__(self, "accuracy", require_finite("accuracy", self.accuracy))
        object.__setattr__(self, "seconds", require_finite("seconds", self.seconds))
        if not 0.0 <= self.accuracy <= 100.0:
            raise InvalidArgument(f"accuracy must be in [0, 100] percent, got {self.accuracy}")
        if self.seconds < 0:
            raise InvalidArgument(f"seconds must be >= 0, got {self.seconds}")
        object.__setattr__(self, "curve", tuple(self.curve))
        if self.artifact_id or self.artifact_sha256:
            hexdigits = set("0123456789abcdef")
            if len(self.artifact_sha256) != 64 or not set(self.artifact_sha256) <= hexdigits:
                raise InvalidArgument(f"artifact_sha256 must be 64 lowercase hex digits, got {self.artifact_sha256!r}")
            if self.artifact_id != self.artifact_sha256[:16]:
                raise InvalidArgument(f"artifact_id must be the first 16 hex digits of artifact_sha256, got {self.artifact_id!r}")
            if self.status == "failed":
                raise InvalidArgument("a failed run has no artifact")


@dataclass(frozen=True)
class JobEvent:
    """One step of a job's life, as WatchJob streams it."""

    job_id: str
    seq: int
    kind: str  # "state", "progress" or "result"
    state: JobState
    message: str = ""
    epoch: int = 0
    accuracy: float = 0.0
    seconds: float = 0.0
    timestamp: float = 0.0


@dataclass
class Job:
    """A submitted task with its plan, its state and (when done) its result."""

    job_id: str
    task: TaskSpec
    plan: Plan
    state: JobState = JobState.QUEUED
    created_at: float = 0.0
    updated_at: float = 0.0
    result: Observation | None = None
    message: str = ""
    # Staged plans: a parent job runs its stages as child jobs, one per run and stage.
    parent_job_id: str = ""
    stage: int = 0
    stop_after_epochs: int = 0  # stop after this many epochs of the schedule (0: all of it)
    resume_from_job_id: str = ""  # continue from the training checkpoint this job stored
    child_job_ids: tuple[str, ...] = ()
