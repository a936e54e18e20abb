"""Dataset sources and their meta-features.

Used by the client (meta-features before submitting), the worker (training data) and the zoo
(pretraining data).  Importing this package, resolving URIs and computing meta-features of the
built-in sources needs numpy only; torch is imported by :func:`make_torch_datasets`.
"""

from __future__ import annotations

from ._metafeatures import MetaFeatures, compute_meta_features
from ._sources import (
    BUILTIN_NAMES,
    DatasetError,
    DatasetRef,
    load_arrays,
    load_folder_sample,
    make_torch_datasets,
    normalisation,
    resolve,
)

__all__ = [
    "BUILTIN_NAMES",
    "DatasetError",
    "DatasetRef",
    "MetaFeatures",
    "compute_meta_features",
    "load_arrays",
    "load_folder_sample",
    "make_torch_datasets",
    "normalisation",
    "resolve",
]
