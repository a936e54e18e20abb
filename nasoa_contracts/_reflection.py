"""gRPC server reflection (for ``grpcurl``), switched on for every server by one setting.

``NASOA_REFLECTION``: ``1`` registers reflection on the adaptor and the zoo servers; unset or
``0`` leaves it off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["enable_reflection", "reflection_enabled"]


def reflection_enabled() -> bool:
    value = os.environ.get("NASOA_REFLECTION", "0").strip().lower()
    if value not in ("0", "1", "true", "false", ""):
        raise ValueError(f"NASOA_REFLECTION must be 1 or 0, got {value!r}")
    return value in ("1", "true")


def enable_reflection(server: object, service_names: Iterable[str]) -> None:
    """Register reflection for ``service_names`` (plus health and reflection itself)."""
    from grpc_health.v1 import health
    from grpc_reflection.v1alpha import reflection

    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(tuple(dict.fromkeys(names)), server)
