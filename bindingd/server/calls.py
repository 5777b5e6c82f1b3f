"""What every RPC shares: decoding, a request id, one log line, errors turned into statuses.

A `BindingdError` becomes its table's status code with a google.rpc.ErrorInfo detail (domain
"bindingd", reason, binding, env, backend). Anything else is a bug: it is logged with a request
id, and the caller gets INTERNAL with that id and no traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
import structlog
from bindingd_client.wire import ERROR_DOMAIN, STATUS_DETAILS_KEY
from google.protobuf import any_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from bindingd.errors import BindingdError, Reason, invalid_argument
from bindingd.server.metrics import method_kind

log = structlog.get_logger("bindingd.calls")

REQUEST_ID_HEADER = "x-request-id"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class HasRuntime(Protocol):
    runtime: Any


# The request id made for a call that came without one. grpc serves each call in a task of its
# own, so this is per call: its status, its log lines and its audit line all name the same id.
_MADE_REQUEST_ID: ContextVar[str] = ContextVar("bindingd_made_request_id", default="")


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id, else one made for this call (the same each time it is asked)."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    made = _MADE_REQUEST_ID.get()
    if not made:
        made = os.urandom(8).hex()  # 16 hex digits, as a uuid4 prefix was (at a fifth of its cost)
        _MADE_REQUEST_ID.set(made)
    return made


def status_metadata(err: BindingdError, request_id: str) -> tuple[tuple[str, bytes], ...]:
    """The `grpc-status-details-bin` trailer carrying the error's google.rpc.ErrorInfo."""
    info = error_details_pb2.ErrorInfo(
        reason=err.reason.value,
        domain=ERROR_DOMAIN,
        metadata={"binding": err.binding, "env": err.env, "backend": err.backend, "request_id": request_id},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=[detail])
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


async def abort(context: grpc.aio.ServicerContext, err: BindingdError, request_id: str) -> None:
    await context.abort(err.code, err.message, trailing_metadata=status_metadata(err, request_id))


def opt(message: Message, field: str) -> Any:
    """A proto3 `optional` field's value, or None when the message does not carry it."""
    return getattr(message, field) if message.HasField(field) else None


def binding_of(request: Any) -> str:
    """The binding a request names: its own `binding` field, or that of its header message."""
    binding = getattr(request, "binding", None)
    if isinstance(binding, str):
        return binding
    if hasattr(request, "ListFields"):
        for field, value in request.ListFields():
            inner = getattr(value, "binding", None)
            if field.message_type is not None and isinstance(inner, str):
                return inner
    return ""


class RequestStream:
    """The decoded messages of a client-streaming call; remembers the binding the first names.

    A message that does not decode ends the call with INVALID_ARGUMENT.
    """

    def __init__(self, raw: AsyncIterator[bytes], request_class: Any, context: grpc.aio.ServicerContext):
        self._raw = raw
        self.request_class = request_class
        self._context = context
        self.binding = ""
        self._first = True
        self.received = 0  # bytes of the messages decoded here or handed out by raw()

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Any:
        raw = await self._raw.__anext__()
        self.received += len(raw)
        return await self.decode(raw)

    def raw(self) -> AsyncIterator[bytes]:
        """The rest of the messages as received, for a caller that decodes them itself (see
        `bindingd_client.wire.chunk_view`) or with `decode`."""
        return self._counted()

    async def _counted(self) -> AsyncIterator[bytes]:
        async for raw in self._raw:
            self.received += len(raw)
            yield raw

    async def decode(self, raw: bytes) -> Any:
        """`raw` decoded (its bytes were counted by `__anext__` or `raw()`)."""
        request = await _decode(raw, self.request_class, self._context)
        if self._first:
            self._first = False
            self.binding = binding_of(request)
        return request


class _Call:
    """The bookkeeping of one call: in-flight count, debug line, metrics, failure → status."""

    __slots__ = ("code", "kind", "metrics", "name", "runtime", "sent", "span", "started", "tracing")

    def __init__(
        self, name: str, kind: tuple[str, str], runtime: Any, context: grpc.aio.ServicerContext | None = None
    ) -> None:
        self.name = name
        self.kind = kind
        self.runtime = runtime
        self.started = time.perf_counter()
        self.code = "OK"
        self.sent = 0  # response bytes, counted only when metrics are on
        # `serve --metrics` sets the runtime's; the gateway's Router has none.
        self.metrics = getattr(runtime, "metrics", None)
        # Set when OTEL_EXPORTER_OTLP_ENDPOINT is (bindingd.server.tracing): a span per call.
        self.tracing = getattr(runtime, "tracing", None)
        self.span = None
        if self.tracing is not None and context is not None:
            metadata = context.invocation_metadata()
            self.span = self.tracing.start(name, kind[1], kind[0], runtime.env, metadata)
        runtime.calls_in_flight += 1
        runtime.last_call_at = time.monotonic()

    def finish(self, request: Any) -> None:
        """Called exactly once, however the call ended (answered, failed, cancelled)."""
        runtime = self.runtime
        runtime.calls_in_flight -= 1
        binding = _binding(request)
        metrics = self.metrics
        if metrics is not None:
            received = request.received if isinstance(request, RequestStream) else request.ByteSize()
            seconds = time.perf_counter() - self.started
            metrics.record(self.kind, binding, self.code, seconds, received, self.sent)
        if self.span is not None and self.tracing is not None:
            self.tracing.end(self.span, binding, self.code)
        if log.is_enabled_for(logging.DEBUG):
            ms = round((time.perf_counter() - self.started) * 1000, 3)
            log.debug("call", method=self.name, binding=binding, ms=ms)

    def ended_early(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        """The call ended without `fail`: cancelled, or aborted already (a malformed message)."""
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            self.code = code.name if isinstance(code, grpc.StatusCode) else "INVALID_ARGUMENT"
        else:
            self.code = "CANCELLED"

    async def fail(self, exc: Exception, binding: str, context: grpc.aio.ServicerContext) -> NoReturn:
        request_id = request_id_of(context)
        if isinstance(exc, BindingdError):
            failure = exc
        else:
            log.exception("unexpected failure", method=self.name, binding=binding, request_id=request_id)
            failure = BindingdError(
                Reason.INTERNAL,
                f"bindingd failed unexpectedly (request id {request_id}); the daemon's log has the details",
            )
        runtime = self.runtime
        err = failure.with_context(binding=binding, env=runtime.env, backend=runtime.backend_of(binding))
        self.code = err.code.name
        if self.metrics is not None:
            self.metrics.failed(binding, err.reason.value)
        log.debug(
            "call failed", method=self.name, binding=binding, reason=err.reason.value, request_id=request_id
        )
        await abort(context, err, request_id)
        raise AssertionError("unreachable: abort raises")


def _size(response: Any) -> int:
    return len(response) if isinstance(response, bytes) else int(response.ByteSize())


def rpc(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Wrap a servicer method that answers once (unary or client-streaming) of a service that
    has a `runtime`. A client-streaming method receives a `RequestStream`."""
    name = method.__qualname__
    kind = method_kind(name)

    @functools.wraps(method)
    async def wrapper(self: HasRuntime, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        call = _Call(name, kind, self.runtime, context)
        try:
            response = await method(self, request, context)
            if call.metrics is not None:
                call.sent = _size(response)
            return response
        except (grpc.aio.AbortError, asyncio.CancelledError) as e:
            call.ended_early(e, context)
            raise  # already answered (a malformed message in a request stream), or cancelled
        except Exception as e:
            await call.fail(e, _binding(request), context)
        finally:
            call.finish(request)

    return wrapper


def rpc_stream(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a servicer method that answers with a stream (an async generator).

    A failure after some messages were sent still ends the stream with the table's status.
    """
    name = method.__qualname__
    kind = method_kind(name)

    @functools.wraps(method)
    async def wrapper(
        self: HasRuntime, request: Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        call = _Call(name, kind, self.runtime, context)
        try:
            async for response in method(self, request, context):
                if call.metrics is not None:
                    call.sent += _size(response)
                yield response
        except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit) as e:
            call.ended_early(e, context)
            raise  # already answered (a malformed message in a request stream), or cancelled
        except Exception as e:
            await call.fail(e, _binding(request), context)
        finally:
            call.finish(request)

    return wrapper


def _binding(request: Any) -> str:
    return request.binding if isinstance(request, RequestStream) else binding_of(request)


def add_service(
    server: grpc.aio.Server,
    servicer: object,
    service: ServiceDescriptor,
    forwarder: Any = None,
    *,
    local_only: tuple[str, ...] = (),
    wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] | None = None,
) -> None:
    """Register `servicer`'s methods for `service`, decoding requests ourselves.

    grpc's own decoding answers a malformed request with UNKNOWN; here it is INVALID_ARGUMENT,
    like every other mistake of the caller. With a `forwarder` (bindingd.server.forward), a call
    naming a binding served through a gateway is relayed there instead (but for the methods in
    `local_only`, which answer for the whole env). `wrap(path, handler)` is applied to each
    method's handler once, at registration (the gateway's token check).
    """
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        impl = getattr(servicer, method.name)
        serialize = _serializer(response_class)
        path = f"/{service.full_name}/{method.name}"
        relay = None if forwarder is None or method.name in local_only else forwarder
        qualname = f"{type(servicer).__name__}.{method.name}"
        name, kind = f"{qualname} (gateway)", method_kind(qualname)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _forwarding_stream(
                    _decoding_stream_stream(impl, request_class),
                    request_class,
                    relay,
                    path,
                    (name, kind),
                    True,
                ),
                response_serializer=serialize,
            )
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                _forwarding_stream(
                    _decoding_stream(impl, request_class), request_class, relay, path, name, False
                ),
                response_serializer=serialize,
            )
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _forwarding_unary_stream(
                    _decoding_unary_stream(impl, request_class), request_class, relay, path, (name, kind)
                ),
                response_serializer=serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _forwarding(_decoding(impl, request_class), request_class, relay, path, (name, kind)),
                response_serializer=serialize,
            )
    if wrap is not None:
        handlers = {name: wrap(f"/{service.full_name}/{name}", h) for name, h in handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


# -- relaying to a gateway (bindingd.server.forward) ---------------------------------------------
# Each wrapper reads the binding the request names; a binding served here goes to the servicer
# as before, one served through the gateway to the forwarder, with the raw bytes it came as.


def _forwarding(handle: Any, request_class: Any, forwarder: Any, path: str, name: Any) -> Any:
    if forwarder is None:
        return handle

    async def route(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        if forwarder.runtime.gateway is None:
            return await handle(raw, context)
        binding = binding_of(await _decode(raw, request_class, context))
        session = forwarder.session_for(binding)
        if session is None:
            return await handle(raw, context)
        call = _Call(name[0], name[1], forwarder.runtime, context)
        try:
            return await forwarder.unary(session, path, binding, raw, context)
        finally:
            call.finish(_Relayed(binding))

    return route


def _forwarding_unary_stream(handle: Any, request_class: Any, forwarder: Any, path: str, name: Any) -> Any:
    if forwarder is None:
        return handle

    async def route(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        session, binding = None, ""
        if forwarder.runtime.gateway is not None:
            binding = binding_of(await _decode(raw, request_class, context))
            session = forwarder.session_for(binding)
        if session is None:
            async for response in handle(raw, context):
                yield response
            return
        call = _Call(name[0], name[1], forwarder.runtime, context)
        try:
            async for response in forwarder.unary_stream(session, path, binding, raw, context):
                yield response
        finally:
            call.finish(_Relayed(binding))

    return route


def _forwarding_stream(
    handle: Any, request_class: Any, forwarder: Any, path: str, name: Any, answers_stream: bool
) -> Any:
    """Client-streaming (`answers_stream` False) and bidirectional calls: the first message
    names the binding; it is read, then the stream goes on whole to wherever it is served."""
    if forwarder is None:
        return handle

    async def first_of(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        try:
            first = await raw.__anext__()
        except StopAsyncIteration:
            return None, "", _chain(None, raw)
        binding = binding_of(await _decode(first, request_class, context))
        return forwarder.session_for(binding), binding, _chain(first, raw)

    if answers_stream:

        async def route_stream(
            raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            session = None
            if forwarder.runtime.gateway is not None:
                session, binding, raw = await first_of(raw, context)
            if session is None:
                async for response in handle(raw, context):
                    yield response
                return
            call = _Call(name[0], name[1], forwarder.runtime, context)
            try:
                async for response in forwarder.stream_stream(session, path, binding, raw, context):
                    yield response
            finally:
                call.finish(_Relayed(binding))

        return route_stream

    async def route(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        session = None
        if forwarder.runtime.gateway is not None:
            session, binding, raw = await first_of(raw, context)
        if session is None:
            return await handle(raw, context)
        call = _Call(name[0], name[1], forwarder.runtime, context)
        try:
            return await forwarder.stream_unary(session, path, binding, raw, context)
        finally:
            call.finish(_Relayed(binding))

    return route


class _Relayed:
    """What `_Call.finish` reads of a call relayed to the gateway: the binding it named (its
    bytes are the gateway's to count)."""

    __slots__ = ("binding",)

    def __init__(self, binding: str) -> None:
        self.binding = binding

    def ByteSize(self) -> int:  # protobuf's name: _Call.finish reads it
        return 0


async def _chain(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first is not None:
        yield first
    async for raw in rest:
        yield raw


def _serializer(response_class: Any) -> Callable[[Any], bytes]:
    """A response message, or one a method serialized itself (an object's body chunk)."""
    serialize = response_class.SerializeToString

    def serialized(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return serialized


async def _decode(raw: bytes, request_class: Any, context: grpc.aio.ServicerContext) -> Any:
    try:
        return request_class.FromString(raw)
    except DecodeError as e:
        err = invalid_argument(
            f"the request is not a valid {request_class.DESCRIPTOR.full_name} message: {e}"
        )
        await abort(context, err, request_id_of(context))


def _decoding(
    impl: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], request_class: Any
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await impl(await _decode(raw, request_class, context), context)

    return handle


def _decoding_stream(
    impl: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], request_class: Any
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        return await impl(RequestStream(raw, request_class, context), context)

    return handle


def _decoding_unary_stream(
    impl: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], request_class: Any
) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request = await _decode(raw, request_class, context)
        async for response in impl(request, context):
            yield response

    return handle


def _decoding_stream_stream(
    impl: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], request_class: Any
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def handle(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in impl(RequestStream(raw, request_class, context), context):
            yield response

    return handle
