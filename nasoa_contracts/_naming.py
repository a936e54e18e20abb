"""Names the adaptor and the workers agree on: the Celery task and the queues."""

from __future__ import annotations

__all__ = ["FINETUNE_TASK", "queue_for"]

#: The Celery task that fine-tunes one planned job; the adaptor sends it by this name.
FINETUNE_TASK = "nasoa.finetune"


def queue_for(device_class: str, prefix: str = "nasoa") -> str:
    """One queue per device class, so CPU and GPU workers pull only what fits them.

    ``prefix`` (``NASOA_QUEUE_PREFIX``) lets several deployments share one broker.

    >>> queue_for("cuda"), queue_for("", prefix="team-a")
    ('nasoa.cuda', 'team-a.cpu')
    """
    return f"{prefix}.{device_class or 'cpu'}"
