"""Dataset sources and their meta-features.

Used by the client (meta-features before submitting), the worker (training data) and the zoo
(pretraining data).  Importing this package, resolving URIs and computing meta-features of the
built-in sources needs numpy only; torch is imported by :func:`make_torch_datasets`.  Names are
loaded on first use (listed in ``__init__.pyi``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
