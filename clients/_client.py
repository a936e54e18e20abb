"""Typed Python clients of the adaptor and zoo services.

Every call carries a deadline (gRPC has none by default). Status codes map back to the
same exceptions the plain-Python ``Adaptor`` raises, so code works the same embedded or
remote. Only idempotent calls are retried on UNAVAILABLE.
"""

from __future__ import annotations

import os
import time
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


def make_channel(
    address: str,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
    token: str = "",
) -> grpc.Channel:
    """A channel to ``address``; TLS when root certificates are given (or NASOA_TLS_CA set).

    With ``token``, every call on it carries ``authorization: Bearer <token>``.
    """
    opts = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *options,
    ]
    ca_path = os.environ.get("NASOA_TLS_CA")
    if root_certificates is None and ca_path:
        with open(ca_path, "rb") as fh:
            root_certificates = fh.read()
    if root_certificates is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), opts)
    else:
        channel = grpc.insecure_channel(address, opts)
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = [m for m in (details.metadata or ()) if m[0] != "authorization"] + [self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


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
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _call(self, fn: Callable[[], T], idempotent: bool) -> T:
        attempts = self.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                return fn()
            except grpc.RpcError as exc:
                retryable = exc.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                if not (retryable and attempt + 1 < attempts):
                    raise map_rpc_error(exc) from None
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
                # RESOURCE_EXHAUSTED: every WatchJob slot of the server is taken; one frees up soon.
                retryable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)  # type: ignore[attr-defined]
                if not retryable or failures >= self.retries:
                    raise map_rpc_error(exc) from None
                failures += 1
                time.sleep(min(2.0, 0.2 * 2**failures))
