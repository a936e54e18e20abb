"""Contracts shared by every NASOA package: logging setup, gRPC server extras."""

from __future__ import annotations

from nasoa_contracts._logging import setup_logging
from nasoa_contracts._reflection import enable_reflection, reflection_enabled

__all__ = ["enable_reflection", "reflection_enabled", "setup_logging"]
