"""Offline tools of the zoo: the multi-objective NAS, its proxy training recipe, and pretraining.

- the search (``nasoa-zoo search``): :func:`run_search` over a :class:`SearchSpace`, read back
  with :func:`load_search` as a :class:`SearchResult`;
- the proxy recipe every candidate and torchvision baseline is scored with: :class:`ProxyRecipe`,
  :data:`BASELINES`, :func:`proxy_train`, :func:`measure_interleaved`;
- pretraining and registration in a zoo store (``nasoa-zoo pretrain``):
  :func:`pretrain_and_register`.

The runtime zoo (store, service, worker side) never imports this package. Names are loaded on
first use (the stub ``__init__.pyi`` lists them).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
