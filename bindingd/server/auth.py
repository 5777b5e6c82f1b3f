"""The bearer token check of the loopback TCP listener.

Unix socket callers are trusted by the socket's 0600 mode; TCP callers must send
`authorization: Bearer <token>`. Health checks pass without it: they reveal nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bindingd.errors import BindingdError, Reason
from bindingd.server.calls import abort, request_id_of

OPEN_METHODS = ("/grpc.health.v1.Health/",)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, listen: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._listen = listen

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS):
            return handler
        given = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._expected):
            return handler
        return self._refusal(handler, "a wrong bearer token" if given else "no bearer token")

    def _refusal(self, handler: grpc.RpcMethodHandler, what: str) -> grpc.RpcMethodHandler:
        err = BindingdError(
            Reason.AUTH_FAILED,
            f"the TCP listener {self._listen} got {what}: send the metadata 'authorization: Bearer <token>' "
            "with the token from BINDINGD_TOKEN or the file .bindingd/token",
        )

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await abort(context, err, request_id_of(context))

        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
