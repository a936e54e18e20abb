"""Runs one planned job on this worker: checkpoint, fine-tuning, reporting.

Delivery is at least once (late ack, redelivery after a crash), so the runner first asks
the adaptor whether the job still needs running, and the adaptor records one result per
job id whatever happens. gRPC channels are made here, inside the (forked) worker process.

The adaptor may be down for a while: every call to it is retried with backoff for
``NASOA_ADAPTOR_RETRY_SECONDS``, and past that :class:`AdaptorUnreachable` sends the job back
to the queue (the task rejects it) instead of acknowledging it unreported. During training,
progress and the cancel poll go through a background thread, so an outage never stalls an
epoch.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_contracts import CurvePoint, Job, Observation, TrainingRegime, WorkerSettings, convert
from worker._artifacts import (
    artifact_reserve_seconds,
    fetch_training_checkpoint,
    job_curve,
    keep_model,
    recover,
    result_status,
)

log = logging.getLogger("nasoa.worker")
T = TypeVar("T")

CANCEL_POLL_SECONDS = 2.0


class AdaptorUnreachable(ConnectionError):
    """The adaptor did not answer for ``NASOA_ADAPTOR_RETRY_SECONDS``: the job goes back to the queue."""


def patiently(call: Callable[[], T], what: str, seconds: float) -> T:
    """``call()``, retried with exponential backoff while the adaptor is unreachable or slow.

    Only transport failures are retried (the calls are idempotent); past ``seconds``
    (``NASOA_ADAPTOR_RETRY_SECONDS``) it raises :class:`AdaptorUnreachable`.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type((ConnectionError, TimeoutError)),
        wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),
        stop=tenacity.stop_after_delay(seconds),
        before_sleep=lambda state: log.warning(
            "adaptor unreachable while %s (%s): retrying", what, state.outcome.exception() if state.outcome else "?"
        ),
        reraise=True,
    )
    try:
        return retrying(call)
    except (ConnectionError, TimeoutError) as exc:
        raise AdaptorUnreachable(f"the adaptor did not answer while {what}: {exc}") from exc


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    accuracy: float
    seconds: float
    message: str = ""

    def describe(self) -> str:
        return f"{self.job_id}: {self.status} {self.accuracy:.1f}% in {self.seconds:.1f}s {self.message}".strip()


class JobRunner:
    """Executes jobs for one worker process."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def run_json(self, job_json: str, worker: str = "") -> JobOutcome:
        job = convert.job_from_pb(convert.from_json(job_json, pb.Job))  # type: ignore[arg-type]
        return self.run(job, worker or socket.gethostname())

    def _device(self) -> str:
        import torch

        if self.settings.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.settings.device

    def run(self, job: Job, worker: str) -> JobOutcome:
        from clients import AdaptorClient

        client = AdaptorClient(self.settings.adaptor_address, token=self.settings.token, timeout=self.settings.rpc_timeout, retries=5)
        try:
            current = patiently(lambda: client.get_job(job.job_id), "reading the job", self.settings.adaptor_retry_seconds)
            if current.state.finished:
                # A redelivered message for a job that is already settled: nothing to do.
                log.info("job %s is already %s: skipped", job.job_id, current.state.value)
                return JobOutcome(job.job_id, "skipped", 0.0, 0.0)
            patiently(lambda: client.report_started(job.job_id, worker), "reporting the start",
                      self.settings.adaptor_retry_seconds)
            start = time.monotonic()
            try:  # a job whose model an earlier delivery stored reports that result again
                observation = recover(self.settings, job) or self._finetune(job, client, start)
            except _Cancelled:
                log.info("job %s cancelled", job.job_id)
                return JobOutcome(job.job_id, "cancelled", 0.0, time.monotonic() - start)
            except Exception as exc:  # a job that cannot run must still end, as FAILED
                log.exception("job %s failed", job.job_id)
                observation = Observation(
                    job_id=job.job_id,
                    task=job.task,
                    candidate=job.plan.candidate,
                    accuracy=0.0,
                    seconds=time.monotonic() - start,
                    status="failed",
                    message=f"{type(exc).__name__}: {exc}",
                )
            self._report_result(client, observation)
            return JobOutcome(job.job_id, observation.status, observation.accuracy, observation.seconds,
                              observation.message)
        finally:
            client.close()

    def _finetune(self, job: Job, client: object, start: float) -> Observation:
        """Fine-tune the job's candidate, or the part of its schedule the job asks for.

        A job with ``stop_after_epochs`` short of the schedule stops there, stores its training
        checkpoint with its artifact and reports status ``stopped``. A job with
        ``resume_from_job_id`` continues that job's run from its checkpoint (fetched from the
        artifact store) and reports the whole run's curve, from epoch 1, with seconds
        cumulative over the run's stages; its ``Observation.seconds`` is this job's
        worker-seconds only.
        """
        from worker._finetune import EpochProgress, FinetuneCancelled, FinetuneSpec, run_finetune
        from worker._models import load_pretrained

        candidate = job.plan.candidate
        regime = TrainingRegime.from_hparams(candidate.hparams)
        device = self._device()
        stop_after = job.stop_after_epochs if 0 < job.stop_after_epochs < candidate.epochs else 0
        resume = fetch_training_checkpoint(self.settings, job.resume_from_job_id) if job.resume_from_job_id else None
        model = load_pretrained(candidate.model, self.settings)
        loaded = time.monotonic() - start
        # The budget covers everything the worker does for the job, loading included.
        remaining = job.task.budget_seconds - (time.monotonic() - start)
        spec = FinetuneSpec(
            dataset_uri=job.task.dataset_uri,
            epochs=candidate.epochs,
            lr=regime.lr,
            batch_size=regime.batch_size,
            frozen_stages=regime.frozen_stages,
            optimizer=regime.optimizer,
            weight_decay=regime.weight_decay,
            deadline_seconds=max(remaining - artifact_reserve_seconds(model, with_checkpoint=stop_after > 0), 0.5),
            data_root=str(self.settings.data_root) if self.settings.data_root else None,
            num_threads=self.settings.torch_threads or None,
        )
        offset = time.monotonic() - start

        def progress(p: EpochProgress) -> None:
            reporter.progress(CurvePoint(p.epoch, p.accuracy, p.seconds + offset))

        reporter = _Reporter(client, job.job_id)
        try:
            result = run_finetune(spec, model, progress=progress, device=device, should_stop=reporter.cancelled.is_set,
                                  stop_after_epochs=stop_after, resume=resume)  # fmt: skip
        except FinetuneCancelled:
            raise _Cancelled() from None
        finally:
            reporter.stop()
        curve = tuple(CurvePoint(p.epoch, p.accuracy, p.seconds) for p in job_curve(result, offset))
        status = result_status(result)
        trained = result.epochs_completed - result.resumed_epochs
        resumed = f" (resumed at epoch {result.resumed_epochs} from job {job.resume_from_job_id})" if resume else ""
        message = f"{trained} epoch(s){resumed} on {device}; model ready in {loaded:.1f}s"
        if result.checkpoint is not None:
            message += f"; stopped as planned after epoch {result.epochs_completed} of {candidate.epochs}"
        stored = None
        if result.epochs_completed == 0:
            # Nothing was measured: the adaptor records the run but does not learn from it, and
            # there is no model worth keeping.
            status = "incomplete"
            message = f"no epoch completed within the budget of {job.task.budget_seconds:g}s ({message})"
        else:
            stored = keep_model(self.settings, job, model, spec, result, offset)  # save and upload, then report
            if stored.existed:  # another delivery of this job stored its model first: report that one
                return recover(self.settings, job, stored)  # type: ignore[return-value]
        return Observation(
            job_id=job.job_id,
            task=job.task,
            candidate=candidate,
            accuracy=result.accuracy,
            seconds=time.monotonic() - start,
            curve=curve,
            status=status,
            message=message,
            artifact_id=stored.artifact_id if stored else "",
            artifact_sha256=stored.sha256 if stored else "",
        )

    def _report_result(self, client: object, observation: Observation) -> None:
        """Deliver the result, retried with backoff: Observe is idempotent by job id."""
        patiently(lambda: client.observe([observation]), "reporting the result",  # type: ignore[attr-defined]
                  self.settings.adaptor_retry_seconds)


class _Reporter:
    """Talks to the adaptor beside the training loop, on its own thread.

    Progress points are sent in order (best effort), and every ``poll_seconds`` the job is
    read: a cancelled job sets :attr:`cancelled`, which training checks before each batch at
    no cost. An unreachable adaptor slows only this thread.
    """

    def __init__(self, client: object, job_id: str, poll_seconds: float = CANCEL_POLL_SECONDS) -> None:
        self.client = client
        self.job_id = job_id
        self.poll_seconds = poll_seconds
        self.cancelled = threading.Event()
        self._points: queue.Queue[CurvePoint] = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"reporter-{job_id[:12]}", daemon=True)
        self._thread.start()

    def progress(self, point: CurvePoint) -> None:
        self._points.put(point)

    def stop(self, timeout: float = 30.0) -> None:
        """Send the points still waiting (within ``timeout``) and end the thread."""
        self._stopped.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        next_poll = time.monotonic() + self.poll_seconds
        while True:
            try:
                point = self._points.get(timeout=max(0.0, min(next_poll - time.monotonic(), 0.2)))
            except queue.Empty:
                point = None
            if point is not None:
                try:
                    self.client.report_progress(self.job_id, point)  # type: ignore[attr-defined]
                except Exception as exc:  # progress is best effort; the result is not
                    log.warning("progress of job %s not delivered: %s", self.job_id, exc)
                continue
            if self._stopped.is_set():
                return
            if time.monotonic() >= next_poll:
                try:
                    if self.client.get_job(self.job_id).state.value == "CANCELLED":  # type: ignore[attr-defined]
                        self.cancelled.set()
                except Exception as exc:
                    log.debug("cancel poll of job %s failed: %s", self.job_id, exc)
                next_poll = time.monotonic() + self.poll_seconds


class _Cancelled(Exception):
    pass
