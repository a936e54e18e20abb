"""Typed Python clients of the adaptor and zoo services.

Every call carries a deadline (gRPC has none by default). Status codes map back to the
same exceptions the plain-Python ``Adaptor`` raises, so code works the same embedded or
remote. Only idempotent calls are retried on UNAVAILABLE.
"""

from __future__ import annotations

import time
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
        self._channel = channel or make_channel(self.address)
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

    def _call(self, fn: Callable[[], T], idempotent: bool) -> T:
        attempts = self.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                return fn()
            except grpc.RpcError as exc:
                retryable = exc.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                if not (retryable and attempt + 1 < attempts):
                    raise error_from_rpc(exc) from None
                time.sleep(min(2.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel is connected, or raise ServiceUnavailable."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ServiceUnavailable(f"no adaptor service answers at {self.address}") from None

    def submit(self, task: TaskSpec, job_id: str = "", models: Sequence[str] = ()) -> Job:
        request = pb.SubmitRequest(task=convert.task_to_pb(task), job_id=job_id, models=list(models))
        # With a job id, Submit is idempotent on the server, so it may be retried.
        msg = self._call(
            lambda: self._stub.Submit(request, timeout=self.timeout, metadata=self._metadata),
            idempotent=bool(job_id),
        )
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
            lambda: self._stub.Recommend(request, timeout=self.timeout, metadata=self._metadata),
            idempotent=True,
        )
        return convert.plan_from_pb(msg)

    def observe_requests(self, requests: Iterable[pb.ObserveRequest], timeout: float | None = None) -> pb.ObserveSummary:
        """Stream raw ObserveRequest messages (one call, not retried: the iterator is spent)."""
        return self._call(
            lambda: self._stub.Observe(iter(requests), timeout=timeout or self.timeout, metadata=self._metadata),
            idempotent=False,
        )

    def observe(self, observations: Iterable[Observation]) -> pb.ObserveSummary:
        """Send results; safe to repeat, since the service ignores duplicate job ids."""
        batch = [convert.observation_to_pb(o) for o in observations]
        return self._call(
            lambda: self._stub.Observe(iter(batch), timeout=self.timeout, metadata=self._metadata),
            idempotent=True,
        )

    def report_started(self, job_id: str, worker: str) -> None:
        request = pb.ObserveRequest(job_id=job_id, started=pb.Started(worker=worker))
        self._call(
            lambda: self._stub.Observe(iter([request]), timeout=self.timeout, metadata=self._metadata),
            idempotent=True,
        )

    def report_progress(self, job_id: str, point: CurvePoint) -> None:
        request = pb.ObserveRequest(
            job_id=job_id,
            progress=pb.CurvePoint(epoch=point.epoch, accuracy=point.accuracy, seconds=point.seconds),
        )
        self._call(
            lambda: self._stub.Observe(iter([request]), timeout=self.timeout, metadata=self._metadata),
            idempotent=True,
        )

    def get_job(self, job_id: str) -> Job:
        msg = self._call(
            lambda: self._stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout, metadata=self._metadata),
            idempotent=True,
        )
        return convert.job_from_pb(msg)

    def list_jobs(self, limit: int = 100, state: JobState | None = None) -> list[Job]:
        request = pb.ListJobsRequest(limit=limit, state=pb.JobState.Value(state.value) if state else 0)
        msg = self._call(
            lambda: self._stub.ListJobs(request, timeout=self.timeout, metadata=self._metadata), idempotent=True
        )
        return [convert.job_from_pb(j) for j in msg.jobs]

    def cancel_job(self, job_id: str) -> Job:
        msg = self._call(
            lambda: self._stub.CancelJob(
                pb.CancelJobRequest(job_id=job_id), timeout=self.timeout, metadata=self._metadata
            ),
            idempotent=True,
        )
        return convert.job_from_pb(msg)

    def get_stats(self) -> pb.Stats:
        return self._call(
            lambda: self._stub.GetStats(pb.GetStatsRequest(), timeout=self.timeout, metadata=self._metadata),
            idempotent=True,
        )

    def watch_job(self, job_id: str, after_seq: int = 0, timeout: float = 3600.0) -> Iterator[JobEvent]:
        """Events of a job until it finishes; reconnects (from the last seq) if the stream breaks."""
        deadline = time.monotonic() + timeout
        seq = after_seq
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceTimeout(f"job {job_id} did not finish within {timeout:.0f}s")
            try:
                stream = self._stub.WatchJob(
                    pb.WatchJobRequest(job_id=job_id, after_seq=seq), timeout=remaining, metadata=self._metadata
                )
                for msg in stream:
                    failures = 0
                    seq = msg.seq
                    yield convert.event_from_pb(msg)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or failures >= self.retries:  # type: ignore[attr-defined]
                    raise error_from_rpc(exc) from None
                failures += 1
                time.sleep(min(2.0, 0.2 * 2**failures))
