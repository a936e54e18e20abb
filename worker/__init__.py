"""Fine-tuning workers: a Celery app whose thin tasks wrap plain PyTorch code.

- ``worker.celery``: the Celery app, configured from ``NASOA_*`` environment variables.
- ``worker.tasks``: the task wrappers (``nasoa.finetune``).
- ``worker._runner``: runs one job: checkpoint, fine-tuning, reporting to the adaptor.
- ``worker._finetune``: the fine-tuning itself, plain PyTorch, testable without Celery
  (``FinetuneSpec`` and ``run_finetune`` are exported, for schedulers that run jobs themselves).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EpochProgress": "worker._finetune",
    "FinetuneResult": "worker._finetune",
    "FinetuneSpec": "worker._finetune",
    "nasoa_home": "worker._config",
    "queue_for": "worker._config",
    "run_finetune": "worker._finetune",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
