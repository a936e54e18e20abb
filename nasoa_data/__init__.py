"""Dataset sources, their three seeded splits and their meta-features.

Used by the client (meta-features before submitting), the worker (training data, and the
prediction transform of a fine-tuned model) and the zoo (pretraining data).  Importing this
package, resolving URIs and computing meta-features of the built-in sources needs numpy only;
torch is imported by the torch dataset builders.  The split rule is in ``nasoa_data._refs``.

Modules: ``_refs`` (what a dataset is, the split rule), ``_resolve`` (URIs), ``_folders``
(ImageFolder scanning), ``_generators`` (generated built-ins), ``_builtins`` (arrays and
splits), ``_torch`` (torch datasets and the single-image transform), ``_metafeatures``.
"""

from __future__ import annotations

from ._builtins import SplitArrays, load_arrays, load_splits
from ._folders import load_folder_sample
from ._metafeatures import MetaFeatures, compute_meta_features
from ._refs import BUILTIN_NAMES, IMG_EXTENSIONS, VALIDATION_FRACTION, DatasetError, DatasetRef, validation_count
from ._resolve import resolve
from ._torch import TorchSplits, image_transform, make_torch_datasets, make_torch_splits, normalisation

__all__ = [
    "BUILTIN_NAMES",
    "IMG_EXTENSIONS",
    "VALIDATION_FRACTION",
    "DatasetError",
    "DatasetRef",
    "MetaFeatures",
    "SplitArrays",
    "TorchSplits",
    "compute_meta_features",
    "image_transform",
    "load_arrays",
    "load_folder_sample",
    "load_splits",
    "make_torch_datasets",
    "make_torch_splits",
    "normalisation",
    "resolve",
    "validation_count",
]
