"""Ways in for users: the typed gRPC client, the ``nasoa-submit`` CLI, the local cluster.

- ``AdaptorClient`` (``clients._client``): the adaptor's typed Python client.
- ``clients.cli``: ``nasoa-submit``.
- ``LocalCluster`` (``clients.local_cluster``): zoo, adaptor and workers on this machine.
- ``load_finetuned`` / ``FineTuned`` (``clients._finetuned``): a job's fine-tuned model, to predict with.
- ``ArtifactClient`` / ``download_job`` (``clients._artifacts``): the artifact store's client.
- ``clients.demo``: the README's main job.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AdaptorClient": "clients._client",
    "AuthenticationError": "clients._client",
    "ServiceTimeout": "clients._client",
    "ServiceUnavailable": "clients._client",
    "make_channel": "clients._client",
    "map_rpc_error": "clients._client",
    "LocalCluster": "clients.local_cluster",
    "ArtifactClient": "clients._artifacts",
    "ArtifactStoreFull": "clients._artifacts",
    "ModelNotReady": "clients._artifacts",
    "download_job": "clients._artifacts",
    "StoredArtifact": "clients._artifacts",
    "MANIFEST_FORMAT": "clients._finetuned",
    "manifest_bytes": "clients._finetuned",
    "FineTuned": "clients._finetuned",
    "expand_images": "clients._finetuned",
    "load_finetuned": "clients._finetuned",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clients' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
