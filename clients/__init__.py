"""Ways in for users: the typed gRPC clients, the ``nasoa-submit`` CLI, the local cluster.

- :class:`AdaptorClient`: the adaptor's typed Python client (errors: :mod:`nasoa_contracts`);
- :class:`LocalCluster`: zoo, adaptor and workers on this machine;
- :func:`load_finetuned` / :class:`FineTuned`: a job's fine-tuned model, to predict with;
- :class:`ArtifactClient` / :func:`download_job`: the artifact store's client;
- ``clients.demo``: the README's main job.

Names are loaded on first use (listed in ``__init__.pyi``), so ``nasoa-submit --help`` starts fast.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
