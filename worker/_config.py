"""The worker's settings (``nasoa_contracts.WorkerSettings``) as the worker uses them."""

from __future__ import annotations

from nasoa_contracts import WorkerSettings, load_settings

__all__ = ["worker_settings"]


def worker_settings() -> WorkerSettings:
    """The settings from ``NASOA_*`` variables and ``NASOA_CONFIG``; one-line errors."""
    return load_settings(WorkerSettings)
