"""Model zoo store: the ET-NAS architectures, their registry and verified checkpoints.

timm-style use::

    import zoo_store
    zoo_store.list_models("etnas-*")
    model = zoo_store.create_model("etnas-z3", num_classes=10)   # sha256-verified weights

Workers fetch checkpoints through the gRPC ZooService into a verified cache
(:class:`CheckpointCache`, :func:`fetch_checkpoint`) and upload the fine-tuned models of
their jobs to the ArtifactService (:class:`ArtifactStore`); ``nasoa-zoo serve`` runs both.
Everything is imported lazily, so ``import zoo_store`` does not import torch or grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ARTIFACT_FILES",
    "DEFAULT_ZOO_DIR",
    "ETNAS",
    "OFFICIAL_ENCODINGS",
    "AdminTokenInterceptor",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactSettings",
    "ArtifactStore",
    "ArtifactServicer",
    "CheckpointCache",
    "ChecksumMismatch",
    "ETNASEncoding",
    "InvalidCheckpointError",
    "InvalidEncodingError",
    "ModelNotFound",
    "PretrainRecipe",
    "PretrainSpec",
    "StreamingSha256",
    "UnsafeCheckpointError",
    "ZooClient",
    "ZooEntry",
    "ZooServicer",
    "ZooStore",
    "artifact_token",
    "atomic_write_bytes",
    "build_model",
    "count_params_and_macs",
    "create_model",
    "create_model_from_entry",
    "default_store",
    "device_class",
    "fetch_checkpoint",
    "get_entry",
    "get_remote_entry",
    "import_etnas_pth",
    "import_torchvision",
    "list_models",
    "load_safetensors",
    "load_torch_weights",
    "make_zoo_server",
    "measure_step_time",
    "pretrain_and_register",
    "profile_entries",
    "register_family",
    "reset_classifier",
    "save_safetensors",
    "sha256_file",
    "stage_modules",
    "verify_file",
]

_WHERE: dict[str, str] = {
    "ARTIFACT_FILES": "_artifacts",
    "ArtifactError": "_artifacts",
    "ArtifactNotFound": "_artifacts",
    "ArtifactSettings": "_artifacts",
    "ArtifactStore": "_artifacts",
    "artifact_token": "_artifacts",
    "ArtifactServicer": "_artifact_service",
    "ETNAS": "_etnas",
    "ETNASEncoding": "_etnas",
    "InvalidEncodingError": "_etnas",
    "OFFICIAL_ENCODINGS": "_etnas",
    "count_params_and_macs": "_etnas",
    "ChecksumMismatch": "_checkpoints",
    "StreamingSha256": "_checkpoints",
    "atomic_write_bytes": "_checkpoints",
    "InvalidCheckpointError": "_checkpoints",
    "UnsafeCheckpointError": "_checkpoints",
    "load_safetensors": "_checkpoints",
    "load_torch_weights": "_checkpoints",
    "save_safetensors": "_checkpoints",
    "sha256_file": "_checkpoints",
    "verify_file": "_checkpoints",
    "DEFAULT_ZOO_DIR": "_registry",
    "ModelNotFound": "_registry",
    "ZooEntry": "_registry",
    "ZooStore": "_registry",
    "build_model": "_registry",
    "create_model": "_registry",
    "create_model_from_entry": "_registry",
    "default_store": "_registry",
    "get_entry": "_registry",
    "list_models": "_registry",
    "register_family": "_registry",
    "reset_classifier": "_registry",
    "stage_modules": "_registry",
    "AdminTokenInterceptor": "_service",
    "ZooServicer": "_service",
    "make_zoo_server": "_service",
    "CheckpointCache": "_client",
    "ZooClient": "_client",
    "fetch_checkpoint": "_client",
    "get_remote_entry": "_client",
    "import_etnas_pth": "_importers",
    "import_torchvision": "_importers",
    "device_class": "_profile",
    "measure_step_time": "_profile",
    "profile_entries": "_profile",
    "PretrainRecipe": "_pretrain",
    "PretrainSpec": "_pretrain",
    "pretrain_and_register": "_pretrain",
}

if TYPE_CHECKING:
    from zoo_store._artifact_service import ArtifactServicer
    from zoo_store._artifacts import (
        ARTIFACT_FILES,
        ArtifactError,
        ArtifactNotFound,
        ArtifactSettings,
        ArtifactStore,
        artifact_token,
    )
    from zoo_store._checkpoints import (
        ChecksumMismatch,
        InvalidCheckpointError,
        StreamingSha256,
        UnsafeCheckpointError,
        atomic_write_bytes,
        load_safetensors,
        load_torch_weights,
        save_safetensors,
        sha256_file,
        verify_file,
    )
    from zoo_store._client import CheckpointCache, ZooClient, fetch_checkpoint, get_remote_entry
    from zoo_store._etnas import (
        ETNAS,
        OFFICIAL_ENCODINGS,
        ETNASEncoding,
        InvalidEncodingError,
        count_params_and_macs,
    )
    from zoo_store._importers import import_etnas_pth, import_torchvision
    from zoo_store._pretrain import PretrainRecipe, PretrainSpec, pretrain_and_register
    from zoo_store._profile import device_class, measure_step_time, profile_entries
    from zoo_store._registry import (
        DEFAULT_ZOO_DIR,
        ModelNotFound,
        ZooEntry,
        ZooStore,
        build_model,
        create_model,
        create_model_from_entry,
        default_store,
        get_entry,
        list_models,
        register_family,
        reset_classifier,
        stage_modules,
    )
    from zoo_store._service import AdminTokenInterceptor, ZooServicer, make_zoo_server


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo_store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zoo_store.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
