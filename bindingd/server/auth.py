"""The bearer token check of the loopback TCP listener.

Unix socket callers are trusted by the socket's 0600 mode; TCP callers must send
`authorization: Bearer <token>`. Without it a caller gets only the daemon's overall health
(`grpc.health.v1.Health` Check/Watch of service ""): a binding's health would tell which
bindings exist, and reflection, Health.List and every other method need the token.

A refused call is answered before its request is read: grpc reads and deserializes a unary
request before its handler runs, so the refusal is a streaming handler that never takes a
message from the request stream. Only what fits the transport's flow-control window arrives
(1 MiB a stream, `TCP_STREAM_WINDOW`; measured: six refused 60 MiB calls, +4 MiB), not the up
to 64 MiB (or its decompressed size) the call announced.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from bindingd_client.wire import AUTHORIZATION, BEARER
from grpc_health.v1 import health_pb2

from bindingd.errors import BindingdError, Reason
from bindingd.server.calls import abort, request_id_of

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
OPEN_METHODS = (HEALTH_CHECK, HEALTH_WATCH)


def check_token(token: str | None, source: str) -> str:
    """`token` if it can guard a listener; a blank one would let `Bearer ` through."""
    if token is None or not token.strip():
        raise ValueError(f"the TCP token from {source} is blank")
    if token != token.strip() or not token.isprintable() or not token.isascii():
        raise ValueError(
            f"the TCP token from {source} has spaces, control or non-ASCII characters, "
            "which do not survive an HTTP/2 header"
        )
    return token


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, listen: str) -> None:
        self._expected = check_token(token, "the daemon").encode()
        self._listen = listen

    def _authenticated(self, details: grpc.HandlerCallDetails) -> bool:
        given = next((v for k, v in details.invocation_metadata or () if k == AUTHORIZATION), "")
        if not isinstance(given, str) or not given.startswith(BEARER):
            return False
        presented = given[len(BEARER) :].strip()
        # compare_digest: the time taken does not tell how much of a guess was right.
        return bool(presented) and hmac.compare_digest(presented.encode(), self._expected)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self._authenticated(details):
            return await continuation(details)
        given = any(k == AUTHORIZATION for k, _ in details.invocation_metadata or ())
        err = self._error("a wrong bearer token" if given else "no bearer token")
        if details.method in OPEN_METHODS:
            handler = await continuation(details)
            if handler is not None:
                return _overall_health_only(handler, err)
        return _refusal(err)

    def _error(self, what: str) -> BindingdError:
        return BindingdError(
            Reason.AUTH_FAILED,
            f"the TCP listener {self._listen} got {what}: send the metadata 'authorization: Bearer <token>' "
            "with the token from the project's .bindingd/token (or the BINDINGD_TOKEN the daemon was "
            "started with), e.g. BINDINGD_TOKEN=$(cat .bindingd/token)",
        )


def _refusal(err: BindingdError) -> grpc.RpcMethodHandler:
    """A handler that refuses the call without reading a byte of its request."""

    async def refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await abort(context, err, request_id_of(context))

    # No deserializer: nothing is read, so nothing would be decoded anyway.
    return grpc.stream_stream_rpc_method_handler(refuse)


def _overall_health_only(handler: grpc.RpcMethodHandler, err: BindingdError) -> grpc.RpcMethodHandler:
    """Health for a caller without the token: the daemon's own status (service ""), nothing about
    a binding. A health request is a name, read as usual (bounded by the listener's limit)."""

    async def allowed(request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        if request.service:
            await abort(context, err, request_id_of(context))

    if handler.unary_unary is not None:
        check = handler.unary_unary

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await allowed(request, context)
            return await check(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    watch = handler.unary_stream

    async def watched(request: Any, context: grpc.aio.ServicerContext) -> None:
        await allowed(request, context)
        await watch(request, context)  # grpc's servicer answers with context.write

    return grpc.unary_stream_rpc_method_handler(
        watched,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
