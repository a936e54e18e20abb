"""Pretrained models for the worker: zoo entry and checkpoint through ZooService.

The checkpoint lands in a local cache whose copies are sha256-verified on every use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker._config import WorkerSettings

if TYPE_CHECKING:
    import torch


def load_pretrained(name: str, settings: WorkerSettings) -> torch.nn.Module:
    """Build zoo model ``name`` with its verified pretrained weights (source classifier)."""
    from clients._client import make_channel
    from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc
    from zoo_store import CheckpointCache, ZooEntry, create_model_from_entry, fetch_checkpoint

    metadata = [("authorization", f"Bearer {settings.token}")] if settings.token else []
    with make_channel(settings.zoo_address) as channel:
        stub = zoo_pb2_grpc.ZooServiceStub(channel)
        entry = ZooEntry.from_proto(
            stub.GetModel(zoo_pb2.GetModelRequest(name=name), timeout=settings.rpc_timeout, metadata=metadata)
        )
        path = fetch_checkpoint(stub, entry, CheckpointCache(settings.cache_dir / "checkpoints"))
    return create_model_from_entry(entry, pretrained=True, checkpoint_path=path)
