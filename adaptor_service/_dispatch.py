"""Hands planned jobs to the workers through Celery (RabbitMQ or the embedded broker).

The adaptor only publishes: it names the task (``nasoa.finetune``) and its queue, declared as
the workers declare it (:class:`nasoa_contracts.QueueTopology`), and never imports the
worker's code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasoa_contracts import (
    FINETUNE_TASK,
    Job,
    QueueTopology,
    broker_transport_options,
    broker_url_or_embedded,
    convert,
    is_amqp,
)

__all__ = ["CeleryDispatcher", "DeadLetter"]

log = logging.getLogger("nasoa.adaptor.dispatch")


@dataclass(frozen=True)
class DeadLetter:
    """A job message the broker gave up on: delivered too often without an acknowledgement."""

    job_id: str
    reason: str


class CeleryDispatcher:
    """Publishes one ``nasoa.finetune`` task per job, on the queue of its device class.

    The Celery app (a publisher only) is made on first use, so embedding the adaptor without
    workers never touches a broker. On RabbitMQ it also tells the reconciler how many messages
    wait in a queue (:meth:`waiting`) and hands it the dead-lettered jobs (:meth:`dead_letters`).
    """

    def __init__(self, broker_url: str = "", home: Path | None = None, topology: QueueTopology | None = None,
                 app: Any = None) -> None:  # fmt: skip
        self.broker_url = broker_url_or_embedded(broker_url)
        self.home = home or Path.home() / ".nasoa"
        self.topology = topology or QueueTopology()
        self.app = app
        self._dead_letter_declared = False

    def _celery(self) -> Any:
        if self.app is None:
            from celery import Celery

            self.app = Celery("nasoa-adaptor", broker=self.broker_url, set_as_current=False)
            self.app.conf.update(
                broker_transport_options=broker_transport_options(self.broker_url, self.home),
                broker_connection_retry_on_startup=True,
                task_serializer="json",
                task_queues=self.topology.queues(self.broker_url),  # declared as the workers do
                task_create_missing_queues=False,
            )
        return self.app

    @property
    def _on_rabbitmq(self) -> bool:
        return is_amqp(self.broker_url)

    def dispatch(self, job: Job) -> None:
        app = self._celery()
        if not self._dead_letter_declared and self._on_rabbitmq:
            self._declare_dead_letter_queue()  # it must exist before a message is dead-lettered
        app.send_task(
            FINETUNE_TASK,
            kwargs={"job": convert.to_json(convert.job_to_pb(job))},
            queue=self.topology.queue_for(job.task.device_class),
            # The job id doubles as the Celery task id: one identity end to end.
            task_id=job.job_id,
        )

    def _declare_dead_letter_queue(self) -> None:
        with self._celery().connection_for_write() as conn:
            conn.default_channel.queue_declare(self.topology.dead_letter_queue, durable=True, auto_delete=False)
        self._dead_letter_declared = True

    def waiting(self, device_class: str) -> int | None:
        """Messages ready in the queue of ``device_class`` (None: this broker cannot tell)."""
        if not self._on_rabbitmq:
            return None
        from amqp.exceptions import NotFound

        with self._celery().connection_for_read() as conn:
            try:
                _name, count, _consumers = conn.default_channel.queue_declare(
                    self.topology.queue_for(device_class), passive=True
                )
            except NotFound:
                return 0  # no queue yet: nothing waits in it
        return int(count)

    def dead_letters(self, handle: Callable[[DeadLetter], None], limit: int = 100) -> int:
        """Pass up to ``limit`` dead-lettered jobs to ``handle``; each is acknowledged once handled.

        A message ``handle`` raised for stays on the broker for the next round.
        """
        if not self._on_rabbitmq:
            return 0
        if not self._dead_letter_declared:
            self._declare_dead_letter_queue()
        handled = 0
        with self._celery().connection_for_read() as conn:
            channel = conn.default_channel
            for _ in range(limit):
                message = channel.basic_get(self.topology.dead_letter_queue, no_ack=False)
                if message is None:
                    break
                letter = _dead_letter(message)
                try:
                    if letter is not None:
                        handle(letter)
                except Exception:
                    log.exception("dead-lettered job %s not handled: kept for the next round", letter)
                    channel.basic_reject(message.delivery_tag, requeue=True)
                    break
                channel.basic_ack(message.delivery_tag)
                handled += 1
        return handled

def _dead_letter(message: object) -> DeadLetter | None:
    headers = getattr(message, "headers", None) or {}
    job_id = str(headers.get("id") or "")
    if not job_id:
        log.warning("a dead-lettered message without a job id was dropped")
        return None
    deaths = headers.get("x-death") or [{}]
    reason = str(deaths[0].get("reason", "rejected"))
    if reason in ("delivery_limit", "rejected"):
        reason = "delivered NASOA_MAX_DELIVERIES times without finishing (each worker crashed or gave up)"
    return DeadLetter(job_id, reason)
