"""Model zoo store: the ET-NAS architectures, their registry and verified checkpoints.

timm-style use::

    import zoo_store
    zoo_store.list_models("etnas-*")
    model = zoo_store.create_model("etnas-z3", num_classes=10)   # sha256-verified weights

Workers fetch checkpoints through the gRPC ZooService into a verified cache
(:class:`CheckpointCache`, :func:`fetch_checkpoint`); ``nasoa-zoo serve`` runs the service.
Everything is imported lazily, so ``import zoo_store`` does not import torch or grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_ZOO_DIR",
    "ETNAS",
    "OFFICIAL_ENCODINGS",
    "AdminTokenInterceptor",
    "CheckpointCache",
    "ChecksumMismatch",
    "ETNASEncoding",
    "InvalidCheckpointError",
    "InvalidEncodingError",
    "ModelNotFound",
    "PretrainRecipe",
    "PretrainSpec",
    "UnsafeCheckpointError",
    "ZooClient",
    "ZooEntry",
    "ZooServicer",
    "ZooStore",
    "build_model",
    "count_params_and_macs",
    "create_model",
    "create_model_from_entry",
    "default_store",
    "device_class",
    "fetch_checkpoint",
    "get_entry",
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
    "ETNAS": "_etnas",
    "ETNASEncoding": "_etnas",
    "InvalidEncodingError": "_etnas",
    "OFFICIAL_ENCODINGS": "_etnas",
    "count_params_and_macs": "_etnas",
    "ChecksumMismatch": "_checkpoints",
    "InvalidCheckpointError": "_checkpoints",
    "UnsafeCheckpointError": "_checkpoints",
    "load_safetensors": "_checkpoints",
    "load_torch_weights": "_checkpoints",
    "save_safetensors": "_checkpoints",
    "sha256_file": "_checkpoints",
    "verify_file": "_checkpoints",
    "DEFAULT_ZOO_DIR": "_store",
    "ModelNotFound": "_store",
    "ZooEntry": "_store",
    "ZooStore": "_store",
    "build_model": "_store",
    "create_model": "_store",
    "create_model_from_entry": "_store",
    "default_store": "_store",
    "get_entry": "_store",
    "list_models": "_store",
    "register_family": "_store",
    "reset_classifier": "_store",
    "stage_modules": "_store",
    "AdminTokenInterceptor": "_service",
    "ZooServicer": "_service",
    "make_zoo_server": "_service",
    "CheckpointCache": "_client",
    "ZooClient": "_client",
    "fetch_checkpoint": "_client",
    "import_etnas_pth": "_importers",
    "import_torchvision": "_importers",
    "device_class": "_profile",
    "measure_step_time": "_profile",
    "profile_entries": "_profile",
    "PretrainRecipe": "offline._pretrain",
    "PretrainSpec": "offline._pretrain",
    "pretrain_and_register": "offline._pretrain",
}

if TYPE_CHECKING:
    from zoo_store._checkpoints import (
        ChecksumMismatch,
        InvalidCheckpointError,
        UnsafeCheckpointError,
        load_safetensors,
        load_torch_weights,
        save_safetensors,
        sha256_file,
        verify_file,
    )
    from zoo_store._client import CheckpointCache, ZooClient, fetch_checkpoint
    from zoo_store._etnas import (
        ETNAS,
        OFFICIAL_ENCODINGS,
        ETNASEncoding,
        InvalidEncodingError,
        count_params_and_macs,
    )
    from zoo_store._importers import import_etnas_pth, import_torchvision
    from zoo_store._profile import device_class, measure_step_time, profile_entries
    from zoo_store._service import AdminTokenInterceptor, ZooServicer, make_zoo_server
    from zoo_store._store import (
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
    from zoo_store.offline._pretrain import PretrainRecipe, PretrainSpec, pretrain_and_register


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo_store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zoo_store.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
