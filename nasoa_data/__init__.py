"""Dataset sources, their three seeded splits and their meta-features.

Used by the client (meta-features before submitting), the worker (training data, and the
prediction transform of a fine-tuned model) and the zoo (pretraining data).  Importing this
package, resolving URIs and computing meta-features of the built-in sources needs numpy only;
torch is imported by the torch dataset builders.  The split rule is in ``nasoa_data._refs``.

Modules: ``_refs`` (what a dataset is, the split rule), ``_resolve`` (URIs), ``_folders``
(ImageFolder scanning), ``_generators`` (generated built-ins), ``_builtins`` (arrays and
splits), ``_torch`` (torch datasets and the single-image transform), ``_metafeatures``.  Names are loaded on first use
(listed in ``__init__.pyi``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
