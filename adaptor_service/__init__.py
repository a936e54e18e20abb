"""The adaptor: online predictors of accuracy and time, a schedule generator, durable jobs.

Layers, from the wire inwards:
- ``adaptor_service.server``: the gRPC server (``nasoa-adaptor``), a thin servicer;
- ``Adaptor``: the plain-Python core, also embeddable by other schedulers;
- predictors (River), schedule generators, candidate space, stores.

The domain types it takes and returns live in :mod:`nasoa_contracts`. Names are loaded on
first use (the stub ``__init__.pyi`` lists them for type checkers and for the loader).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
