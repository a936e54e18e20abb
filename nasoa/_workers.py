"""Is any worker consuming a device class's queue? Asked through Celery's remote control.

The broker is the one the workers use (``NASOA_BROKER_URL``, default the embedded one under
``$NASOA_HOME``); the answer is None when that broker cannot be asked from here (unreachable,
or an embedded broker that does not exist on this machine). The workers' code is not
imported: a small Celery app of our own asks the broker.
"""

from __future__ import annotations

import logging

from nasoa_contracts import (
    ClientSettings,
    broker_transport_options,
    broker_url_or_embedded,
    load_settings,
    queue_for,
)

__all__ = ["broker_name", "queue_consumers"]

log = logging.getLogger("nasoa.workers")


def broker_name() -> str:
    """The workers' broker as the user configured it, without its password."""
    from kombu.utils.url import maybe_sanitize_url

    settings = load_settings(ClientSettings)
    url = settings.broker_url
    return maybe_sanitize_url(url) if url else f"the embedded broker in {settings.home / 'broker'}"


def queue_consumers(device_class: str, timeout: float = 1.0) -> list[str] | None:
    """Names of the Celery workers consuming the queue of ``device_class``; None: unknown.

    Every worker answers Celery's ``inspect().active_queues()`` within ``timeout`` seconds.
    """
    from celery import Celery

    settings = load_settings(ClientSettings)
    if not settings.broker_url and not (settings.home / "broker").is_dir():
        return None  # no embedded broker here: the workers use one elsewhere
    url = broker_url_or_embedded(settings.broker_url)
    app = Celery("nasoa-inspect", broker=url, set_as_current=False)
    app.conf.broker_transport_options = broker_transport_options(url, settings.home)
    queue = queue_for(device_class, settings.queue_prefix)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            replies = app.control.inspect(timeout=timeout, connection=connection).active_queues()
    except Exception as exc:  # the transports raise their own errors
        log.debug("could not ask the broker for workers: %s", exc)
        return None
    return sorted(worker for worker, queues in (replies or {}).items()
                  if any(q.get("name") == queue for q in queues or ()))
