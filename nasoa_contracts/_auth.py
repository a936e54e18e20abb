"""Bearer-token authentication for gRPC servers, as a server interceptor."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["PUBLIC_METHODS", "TokenAuthInterceptor", "abort_handler"]

# Health checks must work for load balancers that hold no token.
PUBLIC_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Aborts with UNAUTHENTICATED unless ``authorization: Bearer <token>`` matches.

    ``exempt`` methods pass through untouched (health checks always do): another
    interceptor guards them, like the zoo's admin calls with their own token.
    """

    def __init__(self, token: str, exempt: frozenset[str] = frozenset()) -> None:
        if not token:
            raise ValueError("an empty token would let everybody in")
        self._expected = f"Bearer {token}".encode()
        self._exempt = PUBLIC_METHODS | exempt

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        if handler_call_details.method in self._exempt:
            return continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        message = "missing token" if not given else "wrong token"
        return abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, f"{message}: set NASOA_TOKEN to the service's token")


def abort_handler(handler: Any, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` (None: unary) that only aborts with ``code``."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)
