"""Is any worker consuming a device class's queue? Asked through Celery's remote control.

The broker is the one the workers use (``NASOA_BROKER_URL``, default the embedded one under
``$NASOA_HOME``); the answer is None when that broker cannot be asked from here.
"""

from __future__ import annotations

import logging

__all__ = ["queue_consumers"]

log = logging.getLogger("nasoa.workers")


def queue_consumers(device_class: str, timeout: float = 1.0) -> list[str] | None:
    """Names of the Celery workers consuming the queue of ``device_class``; None: unknown.

    Every worker answers Celery's ``inspect().active_queues()`` within ``timeout`` seconds.
    """
    from worker._config import queue_for
    from worker.celery import app

    queue = queue_for(device_class)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            replies = app.control.inspect(timeout=timeout, connection=connection).active_queues()
    except Exception as exc:  # the transports raise their own errors
        log.debug("could not ask the broker for workers: %s", exc)
        return None
    return sorted(worker for worker, queues in (replies or {}).items()
                  if any(q.get("name") == queue for q in queues or ()))
