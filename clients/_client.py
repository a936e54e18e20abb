"""Typed Python clients of the adaptor and zoo services.

Every call carries a deadline (gRPC has none by default). Status codes map back to the
same exceptions the plain-Python ``Adaptor`` raises, so code works the same embedded or
remote. Calls that fail with UNAVAILABLE are retried by the channel's retry policy (gRPC
service config, see :func:`nasoa_contracts.retry_service_config`); only idempotent methods are listed in it,
and ``submit`` always sends a job id, which makes Submit idempotent too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import grpc

from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc
from nasoa_contracts import (
    Candidate,
    ClientSettings,
    CurvePoint,
    Job,
    JobEvent,
    JobState,
    Observation,
    Plan,
    ResourceExhausted,
    ServiceTimeout,
    ServiceUnavailable,
    TaskSpec,
    bearer_metadata,
    convert,
    error_from_rpc,
    load_settings,
    make_channel,
)

__all__ = ["AdaptorClient"]

T = TypeVar("T")


class AdaptorClient:
    """Client of ``nasoa.v1.AdaptorService``.

    >>> client = AdaptorClient("127.0.0.1:50051")          # doctest: +SKIP
    >>> job = client.submit(TaskSpec("builtin:digits", 30))  # doctest: +SKIP
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        channel: grpc.Channel | None = None,
    ) -> None:
        settings = load_settings(ClientSettings) if address is None or token is None else None
        self.address = address or settings.adaptor_address  # type: ignore[union-attr]
        self.token = settings.token if token is None else token  # type: ignore[union-attr]
        self.timeout = timeout
        self.retries = retries
        self._channel = channel or make_channel(self.address, retry_attempts=retries + 1)
        self._stub = pb_grpc.AdaptorServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdaptorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _metadata(self) -> list[tuple[str, str]]:
        return bearer_metadata(self.token)

    def _call(self, fn: Callable[[], T]) -> T:
        """One call; the channel's retry policy has retried it already where that is safe."""
        try:
            return fn()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel is connected, or raise ServiceUnavailable."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ServiceUnavailable(f"no adaptor service answers at {self.address}") from None

    def submit(self, task: TaskSpec, job_id: str = "", models: Sequence[str] = ()) -> Job:
        # A job id makes Submit idempotent on the server, so a retried call makes one job.
        request = pb.SubmitRequest(task=convert.task_to_pb(task), job_id=job_id or uuid.uuid4().hex,
                                   models=list(models))
        msg = self._call(lambda: self._stub.Submit(request, timeout=self.timeout, metadata=self._metadata))
        return convert.job_from_pb(msg)

    def recommend(
        self,
        task: TaskSpec,
        candidates: Sequence[Candidate] = (),
        models: Sequence[str] = (),
        top_k: int = 5,
    ) -> Plan:
        request = pb.RecommendRequest(
            task=convert.task_to_pb(task),
            candidates=[convert.candidate_to_pb(c) for c in candidates],
            models=list(models),
            top_k=top_k,
        )
        msg = self._call(
            lambda: self._stub.Recommend(request, timeout=self.timeout, metadata=self._metadata)
        )
        return convert.plan_from_pb(msg)

    def observe_requests(self, requests: Iterable[pb.ObserveRequest], timeout: float | None = None) -> pb.ObserveSummary:
        """Stream raw ObserveRequest messages (retried by the channel while they fit its retry buffer)."""
        return self._call(
            lambda: self._stub.Observe(iter(requests), timeout=timeout or self.timeout, metadata=self._metadata)
        )

    def observe(self, observations: Iterable[Observation]) -> pb.ObserveSummary:
        """Send results; safe to repeat, since the service ignores duplicate job ids."""
        batch = [convert.observation_to_pb(o) for o in observations]
        return self._call(
            lambda: self._stub.Observe(iter(batch), timeout=self.timeout, metadata=self._metadata)
        )

    def report_started(self, job_id: str, worker: str) -> None:
        request = pb.ObserveRequest(job_id=job_id, started=pb.Started(worker=worker))
        self._call(
            lambda: self._stub.Observe(iter([request]), timeout=self.timeout, metadata=self._metadata)
        )

    def report_progress(self, job_id: str, point: CurvePoint) -> None:
        request = pb.ObserveRequest(
            job_id=job_id,
            progress=pb.CurvePoint(epoch=point.epoch, accuracy=point.accuracy, seconds=point.seconds),
        )
        self._call(
            lambda: self._stub.Observe(iter([request]), timeout=self.timeout, metadata=self._metadata)
        )

    def get_job(self, job_id: str) -> Job:
        msg = self._call(
            lambda: self._stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout, metadata=self._metadata)
        )
        return convert.job_from_pb(msg)

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        request = pb.ListJobsRequest(limit=limit, state=pb.JobState.Value(state.value) if state else 0)
        msg = self._call(
            lambda: self._stub.ListJobs(request, timeout=self.timeout, metadata=self._metadata)
        )
        return [convert.job_from_pb(j) for j in msg.jobs]

    def cancel_job(self, job_id: str) -> Job:
        msg = self._call(
            lambda: self._stub.CancelJob(
                pb.CancelJobRequest(job_id=job_id), timeout=self.timeout, metadata=self._metadata
            )
        )
        return convert.job_from_pb(msg)

    def get_stats(self) -> pb.Stats:
        return self._call(
            lambda: self._stub.GetStats(pb.GetStatsRequest(), timeout=self.timeout, metadata=self._metadata)
        )

    def watch_job(self, job_id: str, after_seq: int = 0, timeout: float = 3600.0) -> Iterator[JobEvent]:
        """Events of a job until it finishes; resumes from the last event if the stream breaks.

        gRPC retries a call only before its first reply, so a stream cut mid-way is resumed
        here (``after_seq``), up to ``retries`` times in a row; so is a stream refused because
        every WatchJob slot of the server is taken (RESOURCE_EXHAUSTED).
        """
        from tenacity import Retrying, retry_if_exception_type, wait_exponential

        deadline = time.monotonic() + timeout
        seq = after_seq
        failures = 0  # in a row, without an event in between

        def gave_up(_state: object) -> bool:
            return failures > self.retries

        retrying = Retrying(retry=retry_if_exception_type((ServiceUnavailable, ResourceExhausted)), stop=gave_up,
                            wait=wait_exponential(multiplier=0.2, max=2.0), reraise=True)
        for attempt in retrying:
            with attempt:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServiceTimeout(f"job {job_id} did not finish within {timeout:.0f}s")
                try:
                    stream = self._stub.WatchJob(
                        pb.WatchJobRequest(job_id=job_id, after_seq=seq), timeout=remaining, metadata=self._metadata
                    )
                    for msg in stream:
                        seq, failures = msg.seq, 0
                        yield convert.event_from_pb(msg)
                except grpc.RpcError as exc:
                    failures += 1
                    raise error_from_rpc(exc) from None
