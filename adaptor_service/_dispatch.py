"""Hands planned jobs to the workers through Celery (RabbitMQ or the embedded broker)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from adaptor_service import _convert as convert
from adaptor_service._types import Job

log = logging.getLogger("nasoa.adaptor.dispatch")


@dataclass(frozen=True)
class DeadLetter:
    """A job message the broker gave up on: delivered too often without an acknowledgement."""

    job_id: str
    reason: str


class CeleryDispatcher:
    """Publishes one ``nasoa.finetune`` task per job, on the queue of its device class.

    The Celery app is imported on first use, so embedding the adaptor without workers never
    touches a broker. On RabbitMQ it also tells the reconciler how many messages wait in a
    queue (:meth:`waiting`) and hands it the dead-lettered jobs (:meth:`dead_letters`).
    """

    def __init__(self, app: object | None = None) -> None:
        self.app = app
        self._dead_letter_declared = False

    def _celery(self) -> object:
        if self.app is None:
            from worker.celery import app

            self.app = app
        return self.app

    @property
    def _on_rabbitmq(self) -> bool:
        return self._celery().conf.broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))  # type: ignore[attr-defined]

    def dispatch(self, job: Job) -> None:
        from worker._config import TASK_NAME, queue_for

        app = self._celery()
        if not self._dead_letter_declared and self._on_rabbitmq:
            self._declare_dead_letter_queue()  # it must exist before a message is dead-lettered
        app.send_task(  # type: ignore[attr-defined]
            TASK_NAME,
            kwargs={"job": convert.to_json(convert.job_to_pb(job))},
            queue=queue_for(job.task.device_class),
            # The job id doubles as the Celery task id: one identity end to end.
            task_id=job.job_id,
        )

    def _declare_dead_letter_queue(self) -> None:
        from worker._config import dead_letter_queue

        with self._celery().connection_for_write() as conn:  # type: ignore[attr-defined]
            conn.default_channel.queue_declare(dead_letter_queue(), durable=True, auto_delete=False)
        self._dead_letter_declared = True

    def waiting(self, device_class: str) -> int | None:
        """Messages ready in the queue of ``device_class`` (None: this broker cannot tell)."""
        if not self._on_rabbitmq:
            return None
        from amqp.exceptions import NotFound

        from worker._config import queue_for

        with self._celery().connection_for_read() as conn:  # type: ignore[attr-defined]
            try:
                _name, count, _consumers = conn.default_channel.queue_declare(queue_for(device_class), passive=True)
            except NotFound:
                return 0  # no queue yet: nothing waits in it
        return int(count)

    def dead_letters(self, handle: Callable[[DeadLetter], None], limit: int = 100) -> int:
        """Pass up to ``limit`` dead-lettered jobs to ``handle``; each is acknowledged once handled.

        A message ``handle`` raised for stays on the broker for the next round.
        """
        if not self._on_rabbitmq:
            return 0
        from worker._config import dead_letter_queue

        if not self._dead_letter_declared:
            self._declare_dead_letter_queue()
        handled = 0
        with self._celery().connection_for_read() as conn:  # type: ignore[attr-defined]
            channel = conn.default_channel
            for _ in range(limit):
                message = channel.basic_get(dead_letter_queue(), no_ack=False)
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
