"""The adaptor: online predictors of accuracy and time, a schedule generator, durable jobs.

Layers, from the wire inwards:
- ``adaptor_service.server``: the gRPC server (``nasoa-adaptor``), a thin servicer;
- ``Adaptor``: the plain-Python core, also embeddable by other schedulers;
- predictors (River), schedule generators, candidate space, stores.

Names are loaded lazily (PEP 562), so importing the domain types stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Adaptor": "_adaptor",
    "AdaptorStats": "_adaptor",
    "DispatchError": "_adaptor",
    "Dispatcher": "_adaptor",
    "CeleryDispatcher": "_dispatch",
    "AccuracyPredictor": "_predictors",
    "TimePredictor": "_predictors",
    "make_features": "_predictors",
    "BestPriorRanker": "_best_prior",
    "HpSpace": "_best_prior",
    "HedgeDecision": "_hedge",
    "PolicyHedge": "_hedge",
    "ScheduleGenerator": "_schedulers",
    "OneShotGenerator": "_schedulers",
    "RandomGenerator": "_schedulers",
    "FixedDefaultGenerator": "_schedulers",
    "ScoredCandidate": "_schedulers",
    "make_generator": "_schedulers",
    "CandidateSpace": "_candidates",
    "ModelInfo": "_candidates",
    "RegimeGrid": "_candidates",
    "JobStore": "_stores",
    "MemoryStore": "_stores",
    "SQLStore": "_stores",
    "open_store": "_stores",
    "Alternative": "_types",
    "Candidate": "_types",
    "CurvePoint": "_types",
    "FailedPrecondition": "_types",
    "InvalidArgument": "_types",
    "Job": "_types",
    "JobEvent": "_types",
    "JobState": "_types",
    "NotFound": "_types",
    "Observation": "_types",
    "Plan": "_types",
    "Prediction": "_types",
    "TaskSpec": "_types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adaptor_service' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"adaptor_service.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
