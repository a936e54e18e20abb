"""Model zoo store: the ET-NAS architectures, their registry and verified checkpoints.

timm-style use::

    import zoo_store
    zoo_store.list_models("etnas-*")
    model = zoo_store.create_model("etnas-z3", num_classes=10)   # sha256-verified weights

Layers: ET-NAS encodings (``ETNASEncoding``, no torch) and networks (``ETNAS``); architecture
families; zoo entries; the on-disk ``ZooStore``; the gRPC ZooService (``nasoa-zoo serve``) and
its worker side (:class:`CheckpointCache`, :func:`fetch_checkpoint`); the store of the
fine-tuned models of jobs (:class:`ArtifactStore`, served by the ArtifactService on the same
server). The offline NAS and
pretraining live in :mod:`zoo_store.offline`, which nothing here imports. Names are loaded on
first use (the stub ``__init__.pyi`` lists them), so ``import zoo_store`` imports neither
torch nor grpc.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
