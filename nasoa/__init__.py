"""NASOA from Python: fine-tune a model for a dataset within a time budget, in one call.

.. code-block:: python

    import nasoa
    model = nasoa.fit("builtin:digits", "1m")   # a single-machine cluster, warm-started
    model.accuracy, model.plan, model.curve
    model.predict(images)                       # (class, probability) per image
    nasoa.leaderboard()                         # finished jobs as a pandas DataFrame

- :func:`fit`: plan, fine-tune and return the fine-tuned model (``FineTuned``).
- :class:`Client`: the adaptor service (submit, plan, wait, jobs, cancel, stats, report).
- :func:`leaderboard`, :func:`write_report`: finished jobs as a DataFrame, or an HTML page.
- :func:`job_record`, :func:`plan_record`: jobs and plans as plain values (what ``--json`` prints).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BudgetTooSmall": "nasoa._client",
    "Client": "nasoa._client",
    "DEVICE_CLASSES": "nasoa._client",
    "JobFailed": "nasoa._client",
    "ServiceUnreachable": "nasoa._client",
    "check_dataset": "nasoa._client",
    "parse_duration": "nasoa._client",
    "fit": "nasoa._fit",
    "leaderboard": "nasoa._fit",
    "local_cluster": "nasoa._fit",
    "iso_time": "nasoa._records",
    "job_record": "nasoa._records",
    "leaderboard_rows": "nasoa._records",
    "plan_record": "nasoa._records",
    "stats_record": "nasoa._records",
    "regrets": "nasoa._report",
    "write_report": "nasoa._report",
    "broker_name": "nasoa._workers",
    "queue_consumers": "nasoa._workers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nasoa' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
