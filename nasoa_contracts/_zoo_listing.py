"""The zoo's listing as every reader gets it: one ListModels call with a deadline and the token."""

from __future__ import annotations

from typing import Any

import grpc

from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc
from nasoa_contracts._channels import bearer_metadata
from nasoa_contracts._errors import error_from_rpc

__all__ = ["list_zoo_models"]


def list_zoo_models(
    channel_or_stub: Any, pattern: str = "", token: str = "", timeout: float = 30.0
) -> list[zoo_pb2.ZooEntry]:
    """The zoo entries (wire messages) whose names match the fnmatch ``pattern`` (all when empty)."""
    stub = channel_or_stub if hasattr(channel_or_stub, "ListModels") else zoo_pb2_grpc.ZooServiceStub(channel_or_stub)
    try:
        reply = stub.ListModels(zoo_pb2.ListModelsRequest(pattern=pattern), timeout=timeout,
                                metadata=bearer_metadata(token))
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None
    return list(reply.models)
