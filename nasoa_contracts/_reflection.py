"""gRPC server reflection (for ``grpcurl``), switched on for every server by ``NASOA_REFLECTION``."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["enable_reflection"]


def enable_reflection(server: object, service_names: Iterable[str]) -> None:
    """Register reflection for ``service_names`` (plus health and reflection itself)."""
    from grpc_health.v1 import health
    from grpc_reflection.v1alpha import reflection

    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(tuple(dict.fromkeys(names)), server)
