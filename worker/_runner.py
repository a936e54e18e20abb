"""Runs one planned job on this worker: checkpoint, fine-tuning, reporting.

Delivery is at least once (late ack, redelivery after a crash), so the runner first asks
the adaptor whether the job still needs running, and the adaptor records one result per
job id whatever happens. gRPC channels are made here, inside the (forked) worker process.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_contracts import CurvePoint, Job, Observation, TrainingRegime, WorkerSettings, convert
from worker._artifacts import artifact_reserve_seconds, keep_model, recover

log = logging.getLogger("nasoa.worker")

CANCEL_POLL_SECONDS = 2.0
RESULT_RETRY_SECONDS = 600.0


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
            current = client.get_job(job.job_id)
            if current.state.finished:
                # A redelivered message for a job that is already settled: nothing to do.
                log.info("job %s is already %s: skipped", job.job_id, current.state.value)
                return JobOutcome(job.job_id, "skipped", 0.0, 0.0)
            client.report_started(job.job_id, worker)
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
        from worker._finetune import EpochProgress, FinetuneCancelled, FinetuneSpec, run_finetune
        from worker._models import load_pretrained

        candidate = job.plan.candidate
        regime = TrainingRegime.from_hparams(candidate.hparams)
        device = self._device()
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
            deadline_seconds=max(remaining - artifact_reserve_seconds(model), 0.5),
            data_root=str(self.settings.data_root) if self.settings.data_root else None,
            num_threads=self.settings.torch_threads or None,
        )
        offset = time.monotonic() - start

        def progress(p: EpochProgress) -> None:
            point = CurvePoint(p.epoch, p.accuracy, p.seconds + offset)
            try:
                client.report_progress(job.job_id, point)  # type: ignore[attr-defined]
            except Exception as exc:  # progress is best effort; the result is not
                log.warning("progress of job %s not delivered: %s", job.job_id, exc)

        last_poll = [time.monotonic()]

        def should_stop() -> bool:
            if time.monotonic() - last_poll[0] < CANCEL_POLL_SECONDS:
                return False
            last_poll[0] = time.monotonic()
            try:
                return client.get_job(job.job_id).state.value == "CANCELLED"  # type: ignore[attr-defined]
            except Exception:
                return False

        try:
            result = run_finetune(spec, model, progress=progress, device=device, should_stop=should_stop)
        except FinetuneCancelled:
            raise _Cancelled() from None
        stored = keep_model(self.settings, job, model, spec, result, offset)  # save and upload, then report
        if stored.existed:  # another delivery of this job stored its model first: report that one
            return recover(self.settings, job, stored)  # type: ignore[return-value]
        curve = tuple(CurvePoint(p.epoch, p.accuracy, p.seconds + offset) for p in result.curve)
        return Observation(
            job_id=job.job_id,
            task=job.task,
            candidate=candidate,
            accuracy=result.accuracy,
            seconds=time.monotonic() - start,
            curve=curve,
            status="deadline" if result.stopped_by_deadline else "ok",
            message=f"{result.epochs_completed} epoch(s) on {device}; model ready in {loaded:.1f}s",
            artifact_id=stored.artifact_id,
            artifact_sha256=stored.sha256,
        )

    def _report_result(self, client: object, observation: Observation) -> None:
        """Deliver the result, retrying while the adaptor is unreachable: Observe is idempotent by job id.

        The channel's retry policy covers short blips; this covers an adaptor that is down for
        minutes (a restart), for up to RESULT_RETRY_SECONDS.
        """
        from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_delay, wait_exponential

        for attempt in Retrying(
            retry=retry_if_exception_type(ConnectionError),
            stop=stop_after_delay(RESULT_RETRY_SECONDS),
            wait=wait_exponential(multiplier=0.5, max=10.0),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                client.observe([observation])  # type: ignore[attr-defined]


class _Cancelled(Exception):
    pass
