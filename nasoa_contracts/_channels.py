"""Client channels: message sizes, TLS and the bearer token, the same for every caller."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = ["MAX_MESSAGE_BYTES", "RETRIED_METHODS", "bearer_metadata", "make_channel", "retry_service_config"]

#: The largest message a client sends or receives (checkpoints and artifacts travel in chunks).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


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


def bearer_metadata(token: str) -> list[tuple[str, str]]:
    """The call metadata that carries ``token`` (none when it is empty)."""
    return [("authorization", f"Bearer {token}")] if token else []


def make_channel(
    address: str,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
    tls_ca: str | Path | None = None,
    retry_attempts: int = 5,
    token: str = "",
) -> grpc.Channel:
    """A channel to ``address`` (``HOST:PORT``); TLS when root certificates are given.

    Idempotent calls are retried on UNAVAILABLE, up to ``retry_attempts`` attempts in all
    (1: no retry). With ``token``, every call on the channel carries ``authorization: Bearer <token>``.

    ``tls_ca`` is a PEM file of root certificates, read when ``root_certificates`` is not
    given; by default the client settings' ``NASOA_TLS_CA``.
    """
    opts = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", int(retry_attempts > 1)),
        ("grpc.service_config", retry_service_config(retry_attempts)),
        *options,
    ]
    if root_certificates is None and tls_ca is None:
        from nasoa_contracts._settings import ClientSettings, load_settings

        tls_ca = load_settings(ClientSettings).tls_ca
    if root_certificates is None and tls_ca:
        root_certificates = Path(tls_ca).read_bytes()
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
