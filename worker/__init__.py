"""Fine-tuning workers: a Celery app whose thin tasks wrap plain PyTorch code.

- ``worker.celery``: the Celery app, configured from ``NASOA_*`` environment variables.
- ``worker.tasks``: the task wrappers (``nasoa.finetune``).
- ``worker._runner``: runs one job: checkpoint, fine-tuning, reporting to the adaptor.
- ``worker._finetune``: the fine-tuning itself, plain PyTorch, testable without Celery.
"""
