"""Client channels: message sizes, TLS and the bearer token, the same for every caller."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = ["MAX_MESSAGE_BYTES", "bearer_metadata", "make_channel"]

#: The largest message a client sends or receives (checkpoints and artifacts travel in chunks).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def bearer_metadata(token: str) -> list[tuple[str, str]]:
    """The call metadata that carries ``token`` (none when it is empty)."""
    return [("authorization", f"Bearer {token}")] if token else []


def make_channel(
    address: str,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
    tls_ca: str | Path | None = None,
) -> grpc.Channel:
    """A channel to ``address`` (``HOST:PORT``); TLS when root certificates are given.

    ``tls_ca`` is a PEM file of root certificates, read when ``root_certificates`` is not
    given; by default the client settings' ``NASOA_TLS_CA``.
    """
    opts = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *options,
    ]
    if root_certificates is None and tls_ca is None:
        from nasoa_contracts._settings import ClientSettings, load_settings

        tls_ca = load_settings(ClientSettings).tls_ca
    if root_certificates is None and tls_ca:
        root_certificates = Path(tls_ca).read_bytes()
    if root_certificates is not None:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), opts)
    return grpc.insecure_channel(address, opts)
