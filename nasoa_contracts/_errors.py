"""The errors every part of NASOA shares, and their gRPC status codes, both ways.

A servicer maps a domain error to its status code with :func:`status_of`; a client maps the
status code back to the same exception with :func:`error_from_rpc`, so code behaves the same
whether it embeds the plain-Python core or calls the service.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AuthenticationError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "ServiceTimeout",
    "ServiceUnavailable",
    "error_from_rpc",
    "status_of",
]


class InvalidArgument(ValueError):
    """Input that a caller can fix: the message says what is wrong."""


class NotFound(LookupError):
    """A job, model or dataset that does not exist."""


class FailedPrecondition(RuntimeError):
    """The operation is valid but not in the current state (e.g. cancel a finished job)."""


class ResourceExhausted(RuntimeError):
    """A limit of the service was reached (streams, sizes, disk): retry later or ask for less."""


class AuthenticationError(PermissionError):
    """The service wants a (different) token: set NASOA_TOKEN."""


class ServiceUnavailable(ConnectionError):
    """The service (or the broker behind it) cannot be reached or is shutting down."""


class ServiceTimeout(TimeoutError):
    """The call ran past its deadline."""


_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ServiceTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a domain error; ``None`` for anything else (an internal error)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return None


def error_from_rpc(exc: grpc.RpcError) -> Exception:
    """The domain exception for a failed call (what the service raised, as far as codes tell)."""
    code = exc.code()  # type: ignore[attr-defined]
    detail = exc.details() or str(code)  # type: ignore[attr-defined]
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return AuthenticationError(detail)
    for kind, known in _CODES:
        if code == known:
            return kind(detail)
    return RuntimeError(f"{code.name}: {detail}")
