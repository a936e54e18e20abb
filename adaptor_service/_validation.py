"""Checks of every field a caller sends (Submit, Recommend, Observe), done by the server.

The domain types already refuse what cannot be represented (NaN, negative budgets, empty
names); these checks refuse what the service cannot or must not act on: datasets outside
the data root or of an unknown kind, device classes no worker serves, models it does not
know, and sizes past the :class:`~adaptor_service._limits.Limits`. Each error is one line
that names the field and says what is allowed.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import urllib.parse
from collections.abc import Collection, Sequence

from adaptor_service._limits import Limits
from nasoa_contracts import Candidate, InvalidArgument, NotFound, Observation, Plan, TaskSpec

__all__ = [
    "OPTIMIZERS",
    "RESULT_STATUSES",
    "check_budget_covers",
    "check_candidate_count",
    "check_candidates",
    "check_dataset_uri",
    "check_observation",
    "check_task",
    "not_learned_reason",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
# "incomplete": the run ended before its first epoch; it is recorded, never learned.
RESULT_STATUSES = ("", "ok", "deadline", "stopped", "failed", "incomplete")
# (low, high, integer) of the hyperparameters the workers read.
HPARAM_RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (1e-8, 10.0, False),
    "batch_size": (1, 65_536, True),
    "frozen_stages": (0, 64, True),
    "weight_decay": (0.0, 1.0, False),
}
_KEY = re.compile(r"^[A-Za-z0-9_.:=/+-]+$")
_DEVICE = re.compile(r"^[a-z0-9_-]{1,32}$")


def check_task(task: TaskSpec, limits: Limits) -> None:
    """Refuse a task the service cannot plan or run (InvalidArgument)."""
    check_dataset_uri(task.dataset_uri, limits.data_root)
    if not limits.min_budget_seconds <= task.budget_seconds <= limits.max_budget_seconds:
        raise InvalidArgument(
            f"task.budget_seconds must be between {limits.min_budget_seconds:g} and "
            f"{limits.max_budget_seconds:g} s (NASOA_MIN/MAX_BUDGET_SECONDS), got {task.budget_seconds:g}"
        )
    if len(task.meta_features) > limits.max_meta_features:
        raise InvalidArgument(
            f"task.meta_features has {len(task.meta_features)} keys; at most {limits.max_meta_features} "
            "are accepted (NASOA_MAX_META_FEATURES)"
        )
    for key in task.meta_features:
        _check_key("task.meta_features", key, limits)
    if len(task.task_id) > limits.max_text_chars:
        raise InvalidArgument(f"task.task_id must be at most {limits.max_text_chars} characters")
    if not _DEVICE.match(task.device_class) or task.device_class not in limits.device_classes:
        raise InvalidArgument(
            f"task.device_class must be one of {', '.join(limits.device_classes)} (NASOA_DEVICE_CLASSES), "
            f"got {task.device_class[:40]!r}"
        )


def check_dataset_uri(uri: str, data_root: str | None = None) -> None:
    """``builtin:NAME`` with a known name, or an absolute folder (``file://`` or a path).

    With a data root (``NASOA_DATA_ROOT``), a folder must lie inside it. Nothing is read
    here: the workers, not the adaptor, may be the ones that see the files.

    >>> check_dataset_uri("builtin:digits")
    >>> check_dataset_uri("../../etc")
    Traceback (most recent call last):
    ...
    nasoa_contracts._errors.InvalidArgument: task.dataset_uri: a folder must be an absolute path or file:///path, got '../../etc'
    >>> check_dataset_uri("/data/x/../../etc", data_root="/data")
    Traceback (most recent call last):
    ...
    nasoa_contracts._errors.InvalidArgument: task.dataset_uri: '..' is not allowed in a dataset path, got '/data/x/../../etc'
    """
    if uri.startswith("builtin:"):
        from nasoa_data import DatasetError, resolve

        try:
            resolve(uri)  # name and query only: built-in data is loaded by the workers
        except DatasetError as exc:
            raise InvalidArgument(f"task.dataset_uri: {exc}") from None
        return
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"task.dataset_uri: file:// URIs must be local, got {uri[:200]!r}")
        path = urllib.parse.unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # "C:" would be a drive letter, not a scheme
        raise InvalidArgument(
            f"task.dataset_uri: scheme {parsed.scheme!r} is not served; use builtin:NAME, "
            f"file:///path or an absolute path, got {uri[:200]!r}"
        )
    else:
        path = uri.split("?", 1)[0]
    if not path.startswith("/"):
        raise InvalidArgument(f"task.dataset_uri: a folder must be an absolute path or file:///path, got {uri[:200]!r}")
    if ".." in path.split("/"):
        raise InvalidArgument(f"task.dataset_uri: '..' is not allowed in a dataset path, got {uri[:200]!r}")
    root = data_root or ""
    if root:
        root_path = posixpath.normpath(os.path.abspath(root))
        normal = posixpath.normpath(path)
        if os.path.exists(normal):
            normal, root_path = os.path.realpath(normal), os.path.realpath(root_path)
        if normal != root_path and not normal.startswith(root_path.rstrip("/") + "/"):
            raise InvalidArgument(
                f"task.dataset_uri: {path[:200]!r} is outside the data root {root_path} (NASOA_DATA_ROOT)"
            )


def check_candidates(
    candidates: Sequence[Candidate], limits: Limits, known_models: Collection[str] | None = None
) -> None:
    """Refuse a Recommend's candidate list that is too long or holds an unusable candidate."""
    check_candidate_count(len(candidates), limits)
    for i, candidate in enumerate(candidates):
        _check_candidate(f"candidates[{i}]", candidate, limits, known_models)


def check_candidate_count(count: int, limits: Limits) -> None:
    """Refuse more than ``limits.max_candidates`` (checked before the candidates are even read)."""
    if count > limits.max_candidates:
        raise InvalidArgument(
            f"{count} candidates given; at most {limits.max_candidates} are accepted (NASOA_MAX_CANDIDATES)"
        )


def _check_candidate(where: str, c: Candidate, limits: Limits, known_models: Collection[str] | None) -> None:
    if len(c.model) > limits.max_key_chars * 4:
        raise InvalidArgument(f"{where}.model must be at most {limits.max_key_chars * 4} characters")
    if known_models is not None and c.model not in known_models:
        raise NotFound(f"{where}.model {c.model[:80]!r} is not a model of this service's zoo")
    if c.epochs > limits.max_epochs:
        raise InvalidArgument(f"{where}.epochs must be at most {limits.max_epochs} (NASOA_MAX_EPOCHS), got {c.epochs}")
    if len(c.hparams) > limits.max_hparams:
        raise InvalidArgument(f"{where}.hparams has {len(c.hparams)} keys; at most {limits.max_hparams} (NASOA_MAX_HPARAMS)")
    if len(c.model_features) > limits.max_meta_features:
        raise InvalidArgument(f"{where}.model_features has more than {limits.max_meta_features} keys")
    for key, value in c.hparams.items():
        _check_key(f"{where}.hparams", key, limits)
        if key == "optimizer":
            if value not in OPTIMIZERS:
                raise InvalidArgument(f"{where}.hparams['optimizer'] must be one of {', '.join(OPTIMIZERS)}, got {value!r}")
        elif key in HPARAM_RANGES:
            low, high, integer = HPARAM_RANGES[key]
            ok = not isinstance(value, str) and low <= value <= high and (not integer or float(value).is_integer())
            if not ok:
                kind = "an integer" if integer else "a number"
                raise InvalidArgument(f"{where}.hparams[{key!r}] must be {kind} in [{low:g}, {high:g}], got {value!r}")
        elif isinstance(value, str) and len(value) > limits.max_key_chars:
            raise InvalidArgument(f"{where}.hparams[{key!r}] must be at most {limits.max_key_chars} characters")
    for key in c.model_features:
        _check_key(f"{where}.model_features", key, limits)


def check_observation(obs: Observation, limits: Limits, known_models: Collection[str] | None = None) -> None:
    """Refuse a result the service must not record (InvalidArgument)."""
    if obs.status not in RESULT_STATUSES:
        allowed = ", ".join(repr(s) for s in RESULT_STATUSES)
        raise InvalidArgument(f"result.status must be one of {allowed}, got {obs.status[:40]!r}")
    if not 0.0 <= obs.accuracy <= 100.0:
        raise InvalidArgument(f"result.accuracy must be a percentage in [0, 100], got {obs.accuracy!r}")
    if not 0.0 <= obs.seconds <= limits.max_budget_seconds * 10:
        raise InvalidArgument(f"result.seconds must be in [0, {limits.max_budget_seconds * 10:g}], got {obs.seconds!r}")
    if len(obs.message) > limits.max_text_chars:
        raise InvalidArgument(f"result.message must be at most {limits.max_text_chars} characters")
    if len(obs.curve) > limits.max_curve_points:
        raise InvalidArgument(
            f"result.curve has {len(obs.curve)} points; at most {limits.max_curve_points} are accepted "
            "(NASOA_MAX_CURVE_POINTS)"
        )
    last = -1
    for i, point in enumerate(obs.curve):  # epoch 0: an evaluation before training
        if not 0 <= point.epoch <= limits.max_epochs or point.epoch <= last:
            raise InvalidArgument(
                f"result.curve[{i}].epoch must increase from 0 to at most {limits.max_epochs}, got {point.epoch}"
            )
        last = point.epoch
        if not (math.isfinite(point.accuracy) and 0.0 <= point.accuracy <= 100.0):
            raise InvalidArgument(f"result.curve[{i}].accuracy must be in [0, 100], got {point.accuracy!r}")
        if not (math.isfinite(point.seconds) and point.seconds >= 0):
            raise InvalidArgument(f"result.curve[{i}].seconds must be >= 0, got {point.seconds!r}")
    if len(obs.task.meta_features) > limits.max_meta_features:
        raise InvalidArgument(f"task.meta_features has more than {limits.max_meta_features} keys (NASOA_MAX_META_FEATURES)")
    for key in obs.task.meta_features:
        _check_key("task.meta_features", key, limits)
    _check_candidate("candidate", obs.candidate, limits, known_models)


def check_budget_covers(task: TaskSpec, plan: Plan) -> None:
    """Refuse a Submit whose budget cannot cover even the plan (the fastest run when none fits).

    A run's predicted time covers loading the model, its epochs and the evaluation; a
    budget below that of a one-epoch plan would end before its first epoch, and such a run
    teaches nothing. Only a confident shortfall is refused: the prediction less two
    standard deviations must still exceed the budget.
    """
    p = plan.prediction
    if not (math.isfinite(p.seconds) and math.isfinite(p.seconds_std)) or plan.candidate.epochs > 1:
        return
    if p.seconds - 2 * max(p.seconds_std, 0.0) > task.budget_seconds:
        raise InvalidArgument(
            f"task.budget_seconds {task.budget_seconds:g} is below the predicted time of the fastest run, "
            f"{p.seconds:.1f} +- {p.seconds_std:.1f} s for {plan.candidate.model} (model load, one epoch and "
            f"evaluation): give at least {math.ceil(p.seconds)} s"
        )


def not_learned_reason(obs: Observation) -> str:
    """Why a recorded result is kept out of the models ('' when it is learned)."""
    if obs.status == "failed":
        return "the run failed"
    if obs.status == "incomplete" or (obs.status == "deadline" and not obs.curve):
        return "the run ended before its first epoch"
    return ""


def _check_key(where: str, key: str, limits: Limits) -> None:
    if not key or len(key) > limits.max_key_chars or not _KEY.match(key):
        raise InvalidArgument(
            f"{where} key {key[:40]!r} must be 1-{limits.max_key_chars} characters of letters, digits and _.:=/+-"
        )
