"""Fine-tuning workers: a Celery app whose thin tasks wrap plain PyTorch code.

- ``worker.celery``: the Celery app, configured from the worker settings;
- ``worker.tasks``: the task wrappers (``nasoa.finetune``);
- :class:`JobRunner`: runs one job: checkpoint, fine-tuning, reporting to the adaptor;
- :func:`run_finetune`: the fine-tuning itself, plain PyTorch, testable without Celery.

Names are loaded on first use (listed in ``__init__.pyi``): importing the package imports
neither torch nor Celery.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
