"""Pretrained models for the worker: zoo entry and checkpoint through ZooService.

The checkpoint lands in a local cache whose copies are sha256-verified on every use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasoa_contracts import WorkerSettings, make_channel

if TYPE_CHECKING:
    import torch


def load_pretrained(name: str, settings: WorkerSettings) -> torch.nn.Module:
    """Build zoo model ``name`` with its verified pretrained weights (source classifier)."""
    from zoo_store import CheckpointCache, ZooClient, create_model_from_entry, fetch_checkpoint

    assert settings.cache_dir is not None  # filled in by WorkerSettings
    with make_channel(settings.zoo_address, tls_ca=settings.tls_ca, token=settings.token) as channel:
        zoo = ZooClient(channel, timeout=settings.rpc_timeout)
        entry = zoo.get_entry(name)
        cache = CheckpointCache(settings.cache_dir / "checkpoints")
        path = fetch_checkpoint(zoo.stub, name, cache, entry=entry, timeout=settings.rpc_timeout)
    return create_model_from_entry(entry, pretrained=True, checkpoint_path=path)
