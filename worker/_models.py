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
    from zoo_store import CheckpointCache, create_model_from_entry, fetch_checkpoint
    from zoo_store._client import get_remote_entry

    with make_channel(settings.zoo_address, token=settings.token) as channel:
        entry = get_remote_entry(channel, name, timeout=settings.rpc_timeout)
        path = fetch_checkpoint(channel, name, CheckpointCache(settings.cache_dir / "checkpoints"), entry=entry)
    return create_model_from_entry(entry, pretrained=True, checkpoint_path=path)
