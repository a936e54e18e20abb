"""Typed Python clients of the adaptor and zoo services.

Every call carries a deadline (gRPC has none by default). Status codes map back to the
same exceptions the plain-Python ``Adaptor`` raises, so code works the same embedded or
remote. Calls that fail with UNAVAILABLE are retried by the channel's retry policy (gRPC
service config, see :func:`retry_service_config`); only idempotent methods are listed in it,
and ``submit`` always sends a job id, which makes Submit idempotent too.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from adaptor_service import _convert as convert
from adaptor_service._types import (
    Candidate,
    CurvePoint,
    FailedPrecondition,
    InvalidArgument,
    Job,
    JobEvent,
    JobState,
    NotFound,
    Observation,
    Plan,
    TaskSpec,
)
from nasoa_api.v1 import adaptor_pb2 as pb
from nasoa_api.v1 import adaptor_pb2_grpc as pb_grpc

__all__ = [
    "AdaptorClient",
    "AuthenticationError",
    "ServiceUnavailable",
    "ServiceTimeout",
    "make_channel",
]

T = TypeVar("T")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class AuthenticationError(PermissionError):
    """The service wants a (different) token: set NASOA_TOKEN."""


class ServiceUnavailable(ConnectionError):
    """The service cannot be reached or is shutting down."""


class ServiceTimeout(TimeoutError):
    """The call ran past its deadline."""


# Idempotent methods: reads, Submit with a job id (the client always sends one), Observe
# (results are deduplicated by job id), CancelJob (cancelling twice is refused, not repeated).
RETRIED_METHODS = {
    "nasoa.v1.AdaptorService": (
        "Submit", "Recommend", "Observe", "WatchJob", "GetJob", "ListJobs", "CancelJob", "GetStats",
    ),
    "nasoa.v1.ZooService": ("ListModels", "GetModel", "FetchCheckpoint"),
}


def retry_service_config(max_attempts: int = 5) -> str:
    """The gRPC service config (JSON) that retries idempotent calls on UNAVAILABLE with backoff.

    >>> json.loads(retry_service_config(3))["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    3
    """
    names = [{"service": service, "method": method} for service, methods in RETRIED_METHODS.items()
             for method in methods]
    policy = {
        "maxAttempts": max(2, min(int(max_attempts), 5)),  # gRPC caps attempts at 5
        "initialBackoff": "0.2s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def make_channel(
    address: str,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
    retry_attempts: int = 5,
) -> grpc.Channel:
    """A channel to ``address``; TLS when root certificates are given (or NASOA_TLS_CA set).

    Idempotent calls are retried on UNAVAILABLE, up to ``retry_attempts`` attempts in all
    (1: no retry).
    """
    opts = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", int(retry_attempts > 1)),
        ("grpc.service_config", retry_service_config(retry_attempts)),
        *options,
    ]
    ca_path = os.environ.get("NASOA_TLS_CA")
    if root_certificates is None and ca_path:
        with open(ca_path, "rb") as fh:
            root_certificates = fh.read()
    if root_certificates is not None:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), opts)
    return grpc.insecure_channel(address, opts)


def map_rpc_error(exc: grpc.RpcError) -> Exception:
    code = exc.code()  # type: ignore[attr-defined]
    detail = exc.details() or str(code)  # type: ignore[attr-defined]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(detail)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(detail)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationError(detail)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceTimeout(detail)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServiceUnavailable(f"{detail}")
    return RuntimeError(f"{code.name}: {detail}")


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
        self.address = address or os.environ.get("NASOA_ADAPTOR_ADDRESS", "127.0.0.1:50051")
        self.token = os.environ.get("NASOA_TOKEN", "") if token is None else token
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
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _call(self, fn: Callable[[], T]) -> T:
        """One call; the channel's retry policy has retried it already where that is safe."""
        try:
            return fn()
        except grpc.RpcError as exc:
            raise map_rpc_error(exc) from None

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
        here (``after_seq``), up to ``retries`` times in a row.
        """
        from tenacity import Retrying, retry_if_exception_type, wait_exponential

        deadline = time.monotonic() + timeout
        seq = after_seq
        failures = 0  # in a row, without an event in between

        def gave_up(_state: object) -> bool:
            return failures > self.retries

        retrying = Retrying(retry=retry_if_exception_type(ServiceUnavailable), stop=gave_up,
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
                    raise map_rpc_error(exc) from None
