"""HTTP/JSON: the daemon's services over the Connect protocol, for callers without gRPC (PHP, curl).

`POST /bindingd.v1.KV/Get` with a JSON (or binary protobuf) body runs the same service object
the gRPC server runs; nothing here knows a method by name: the routes come from the proto
descriptors, the request is parsed with json_format into the method's input message, and the
servicer is called with an `HttpContext` standing in for grpc's. Object bodies have their own
plain-HTTP endpoint (`http_objects.py`).

Connect in brief (https://connectrpc.com/docs/protocol): a unary call is a POST whose body is
the message (`application/json` or `application/proto`), answered 200 with the response
message, or with an error status and a JSON body `{"code", "message", "details"}`. A streaming
call (`application/connect+json` / `+proto`) sends and receives enveloped messages (one flag
byte, a 4-byte big-endian length, the message) and ends with an end-of-stream envelope (flag
0x02) carrying `{"error": ...}` when it failed. Over HTTP/1.1 a stream is half-duplex: the
request stream is read whole before the first answer, so Queue/Consume answers one batch per
request message sent.

Listeners: `.bindingd/http.sock` (0600, beside the gRPC socket), and with `--listen` the port
after it on loopback TCP, which wants `Authorization: Bearer <token>` like the gRPC listener.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import structlog
from aiohttp import web
from bindingd_client.wire import AUTHORIZATION, BEARER, MAX_MESSAGE_BYTES, STATUS_DETAILS_KEY
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from bindingd.errors import BindingdError, Reason, invalid_argument
from bindingd.server.calls import REQUEST_ID_HEADER, RequestStream, binding_of, status_metadata

log = structlog.get_logger("bindingd.http")

# Connect's names for the gRPC codes, and the HTTP status each maps to.
CONNECT_CODES: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.CANCELLED: ("canceled", 499),
    grpc.StatusCode.UNKNOWN: ("unknown", 500),
    grpc.StatusCode.INVALID_ARGUMENT: ("invalid_argument", 400),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("deadline_exceeded", 504),
    grpc.StatusCode.NOT_FOUND: ("not_found", 404),
    grpc.StatusCode.ALREADY_EXISTS: ("already_exists", 409),
    grpc.StatusCode.PERMISSION_DENIED: ("permission_denied", 403),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("resource_exhausted", 429),
    grpc.StatusCode.FAILED_PRECONDITION: ("failed_precondition", 400),
    grpc.StatusCode.ABORTED: ("aborted", 409),
    grpc.StatusCode.OUT_OF_RANGE: ("out_of_range", 400),
    grpc.StatusCode.UNIMPLEMENTED: ("unimplemented", 501),
    grpc.StatusCode.INTERNAL: ("internal", 500),
    grpc.StatusCode.UNAVAILABLE: ("unavailable", 503),
    grpc.StatusCode.DATA_LOSS: ("data_loss", 500),
    grpc.StatusCode.UNAUTHENTICATED: ("unauthenticated", 401),
}
JSON = "application/json"
PROTO = "application/proto"
STREAM_JSON = "application/connect+json"
STREAM_PROTO = "application/connect+proto"
END_STREAM = 0x02
COMPRESSED = 0x01
ENVELOPE = struct.Struct(">BI")
TIMEOUT_HEADER = "connect-timeout-ms"


class HttpAbort(grpc.aio.AbortError):
    """What `HttpContext.abort` raises: the status a gRPC call would end with. A subclass of
    grpc's AbortError, so the services' wrappers (`calls.rpc`) let it through as answered."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """Connect's error JSON."""
        body: dict[str, Any] = {"code": CONNECT_CODES[self.code][0], "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    @property
    def http_status(self) -> int:
        return CONNECT_CODES[self.code][1]


def _details_of(trailing_metadata: Any) -> list[dict[str, Any]]:
    """The ErrorInfo of a `grpc-status-details-bin` trailer as Connect error details: the
    protobuf bytes (base64, as Connect sends them) and a `debug` copy as JSON for humans and
    for clients that would rather not decode protobuf."""
    details: list[dict[str, Any]] = []
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                details.append(
                    {
                        "type": info.DESCRIPTOR.full_name,
                        "value": base64.b64encode(detail.value).decode().rstrip("="),
                        "debug": json_format.MessageToDict(info),
                    }
                )
    return details


def abort_of(err: BindingdError, request_id: str) -> HttpAbort:
    """The HttpAbort a BindingdError becomes: the same ErrorInfo the gRPC status carries."""
    return HttpAbort(err.code, err.message, _details_of(status_metadata(err, request_id)))


class HttpContext:
    """What the services use of `grpc.aio.ServicerContext`, for a call that came over HTTP."""

    def __init__(self, request: web.BaseRequest) -> None:
        self._metadata = tuple((k.lower(), v) for k, v in request.headers.items())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self._peer = f"http:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "http:unix"
        self.request_id = next(
            (v for k, v in self._metadata if k == REQUEST_ID_HEADER and 0 < len(v) <= 64),
            uuid.uuid4().hex[:16],
        )
        # Request ids must agree between the log and the error body, so a fresh one is pinned
        # in place of an x-request-id that is missing or not one (empty, over 64 characters).
        if not any(k == REQUEST_ID_HEADER and v == self.request_id for k, v in self._metadata):
            kept = tuple((k, v) for k, v in self._metadata if k != REQUEST_ID_HEADER)
            self._metadata = (*kept, (REQUEST_ID_HEADER, self.request_id))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise HttpAbort(code, details, _details_of(trailing_metadata))

    async def send_initial_metadata(self, metadata: Any) -> None:
        """HTTP answers once: a put's "header accepted" has nothing to go out on."""

    def as_grpc(self) -> grpc.aio.ServicerContext:
        return cast(grpc.aio.ServicerContext, self)


@dataclass(frozen=True)
class Method:
    descriptor: MethodDescriptor
    request_class: Any
    response_class: Any
    impl: Callable[..., Any]


def methods_of(servicer: object, service: ServiceDescriptor) -> dict[str, Method]:
    return {
        f"/{service.full_name}/{m.name}": Method(
            m,
            message_factory.GetMessageClass(m.input_type),
            message_factory.GetMessageClass(m.output_type),
            getattr(servicer, m.name),
        )
        for m in service.methods
    }


def token_ok(request: web.BaseRequest, expected: str | None) -> bool:
    """Whether the caller may pass: always on the unix socket (its mode guards it), with the
    bearer token on TCP (compared in constant time, as the gRPC listener does)."""
    if expected is None:
        return True
    given = request.headers.get(AUTHORIZATION, "")
    if not given.startswith(BEARER):
        return False
    presented = given[len(BEARER) :].strip()
    return bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())


def token_error(request: web.BaseRequest, listen: str) -> BindingdError:
    what = "a wrong bearer token" if AUTHORIZATION in request.headers else "no bearer token"
    return BindingdError(
        Reason.AUTH_FAILED,
        f"the HTTP listener {listen} got {what}: send the header 'Authorization: Bearer <token>' with "
        "the token from the project's .bindingd/token (or the BINDINGD_TOKEN the daemon was started "
        'with), e.g. curl -H "Authorization: Bearer $(cat .bindingd/token)"',
    )


def _media(request: web.BaseRequest) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def internal(request: web.BaseRequest, request_id: str) -> HttpAbort:
    """A bug's answer: logged with its traceback and request id, the caller gets only the id."""
    log.exception("unexpected failure", path=request.path, method=request.method, request_id=request_id)
    err = BindingdError(
        Reason.INTERNAL,
        f"bindingd failed unexpectedly (request id {request_id}); the daemon's log has the details",
    )
    return abort_of(err, request_id)


def error_response(abort: HttpAbort, request_id: str) -> web.Response:
    return web.json_response(abort.body(), status=abort.http_status, headers={REQUEST_ID_HEADER: request_id})


def _timeout(request: web.BaseRequest) -> float | None:
    text = request.headers.get(TIMEOUT_HEADER)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 10:
        raise invalid_argument(f"{TIMEOUT_HEADER} {text!r} is not a whole number of milliseconds")
    return int(text) / 1000


class ConnectHandler:
    """Routes `/<service>/<method>` to the servicers, by their descriptors."""

    def __init__(self, services: list[tuple[object, ServiceDescriptor]], forwarder: Any = None) -> None:
        self.methods: dict[str, Method] = {}
        for servicer, service in services:
            self.methods.update(methods_of(servicer, service))
        # Calls naming a binding served through the env's gateway are relayed there, as the gRPC
        # services do (bindingd.server.forward); Bindings and Vars.GetAll answer for the whole
        # env here, merging what the gateway serves.
        self.forwarder = forwarder

    def _session(self, method: Method, message: Any) -> tuple[Any, str]:
        """The gateway session serving the binding `message` names, if any, and that name."""
        full = method.descriptor.full_name
        if (
            self.forwarder is None
            or full.startswith("bindingd.v1.Bindings.")
            or full == "bindingd.v1.Vars.GetAll"
        ):
            return None, ""
        binding = binding_of(message)
        return self.forwarder.session_for(binding), binding

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        context = HttpContext(request)
        method = self.methods.get(request.path)
        try:
            if method is None:
                raise HttpAbort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"no method {request.path}: the paths are /<package.Service>/<Method> of "
                    f"proto/bindingd/v1, e.g. /bindingd.v1.KV/Get",
                    [],
                )
            if request.method != "POST":
                raise HttpAbort(
                    grpc.StatusCode.UNIMPLEMENTED, f"{request.path} answers POST, not {request.method}", []
                )
            if request.headers.get("content-encoding", "identity") != "identity":
                raise HttpAbort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "compressed request bodies are not accepted; send it uncompressed",
                    [],
                )
            media = _media(request)
            streaming = method.descriptor.client_streaming or method.descriptor.server_streaming
            if streaming and media in (STREAM_JSON, STREAM_PROTO):
                return await self._stream(request, method, context, media == STREAM_JSON)
            if streaming or media not in (JSON, PROTO):
                expected = f"{STREAM_JSON} or {STREAM_PROTO}" if streaming else f"{JSON} or {PROTO}"
                return web.Response(
                    status=415,
                    text=f"{request.path} takes content-type {expected}, not {media or 'none'}\n",
                    headers={"accept-post": expected},
                )
            async with asyncio.timeout(_timeout(request)):
                return await self._unary(request, method, context, media == JSON)
        except HttpAbort as e:
            return error_response(e, context.request_id)
        except BindingdError as e:
            return error_response(abort_of(e, context.request_id), context.request_id)
        except TimeoutError:
            err = BindingdError(Reason.BACKEND_TIMEOUT, f"the call took longer than its {TIMEOUT_HEADER}")
            return error_response(abort_of(err, context.request_id), context.request_id)
        except ConnectionError:
            raise  # the caller went away: nothing to answer
        except Exception:
            return error_response(internal(request, context.request_id), context.request_id)

    async def _unary(
        self, request: web.Request, method: Method, context: HttpContext, as_json: bool
    ) -> web.Response:
        body = await request.read()
        message = _parse(body, method.request_class, as_json)
        session, binding = self._session(method, message)
        if session is not None:
            raw = await self.forwarder.unary(
                session, request.path, binding, message.SerializeToString(), context.as_grpc()
            )
            response: Message = method.response_class.FromString(raw)
        else:
            response = await method.impl(message, context.as_grpc())
        if as_json:
            return web.Response(body=_to_json(response), content_type=JSON)
        return web.Response(body=response.SerializeToString(), content_type=PROTO)

    async def _stream(
        self, request: web.Request, method: Method, context: HttpContext, as_json: bool
    ) -> web.StreamResponse:
        """A streaming call: enveloped messages in, enveloped messages out, then end-of-stream."""
        raw = _envelopes(request, method.request_class, as_json)
        first = await anext(raw, None)
        if first is None and not method.descriptor.client_streaming:
            raise invalid_argument(f"{method.descriptor.full_name} needs one request message")
        session, binding = (
            self._session(method, method.request_class.FromString(first)) if first is not None else (None, "")
        )
        rest = _chain(first, raw)
        if method.descriptor.client_streaming:
            request_arg: Any = RequestStream(rest, method.request_class, context.as_grpc())
        else:
            request_arg = method.request_class.FromString(first)
        impl = method.impl
        if session is not None:
            impl = self._relay(
                session, request.path, binding, method, rest if method.descriptor.client_streaming else first
            )
        media = STREAM_JSON if as_json else STREAM_PROTO
        response = web.StreamResponse(status=200, headers={"content-type": media})
        end: dict[str, Any] = {}
        started = False
        try:
            async with asyncio.timeout(_timeout(request)):
                if method.descriptor.server_streaming:
                    async with contextlib.aclosing(impl(request_arg, context.as_grpc())) as answers:
                        async for answer in answers:
                            if not started:
                                await response.prepare(request)
                                started = True
                            await response.write(_envelope(answer, method.response_class, as_json))
                else:
                    answer = await impl(request_arg, context.as_grpc())
                    await response.prepare(request)
                    started = True
                    await response.write(_envelope(answer, method.response_class, as_json))
        except HttpAbort as e:
            end["error"] = e.body()
        except BindingdError as e:
            end["error"] = abort_of(e, context.request_id).body()
        except TimeoutError:
            err = BindingdError(Reason.BACKEND_TIMEOUT, f"the call took longer than its {TIMEOUT_HEADER}")
            end["error"] = abort_of(err, context.request_id).body()
        except ConnectionError:
            return response  # the caller went away mid-stream
        if not started:
            await response.prepare(request)
        data = json.dumps(end).encode()
        await response.write(ENVELOPE.pack(END_STREAM, len(data)) + data)
        await response.write_eof()
        return response

    def _relay(
        self, session: Any, path: str, binding: str, method: Method, request: Any
    ) -> Callable[..., Any]:
        """A stand-in for the servicer's method that relays the call to the gateway: `request`
        is the first message's bytes, or (client streaming) every message's."""
        forwarder, parse = self.forwarder, method.response_class.FromString
        descriptor = method.descriptor
        if descriptor.server_streaming:
            relay = forwarder.stream_stream if descriptor.client_streaming else forwarder.unary_stream

            async def answers(_: Any, context: Any) -> AsyncIterator[Any]:
                async for raw in relay(session, path, binding, request, context):
                    yield parse(raw)

            return answers
        relay_one = forwarder.stream_unary if descriptor.client_streaming else forwarder.unary

        async def answer(_: Any, context: Any) -> Any:
            return parse(await relay_one(session, path, binding, request, context))

        return answer


async def _chain(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first is not None:
        yield first
    async for raw in rest:
        yield raw


def _parse(body: bytes, request_class: Any, as_json: bool) -> Any:
    try:
        if as_json:
            return json_format.Parse(body or b"{}", request_class())
        return request_class.FromString(body)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError) as e:
        kind = "JSON" if as_json else "protobuf"
        raise invalid_argument(
            f"the request is not a valid {request_class.DESCRIPTOR.full_name} in {kind}: {e}"
        ) from None


def _to_json(message: Message) -> bytes:
    return json.dumps(json_format.MessageToDict(message), ensure_ascii=False).encode()


def _envelope(answer: Message | bytes, response_class: Any, as_json: bool) -> bytes:
    """One enveloped response; a method may hand a message already serialized (a body chunk)."""
    if as_json:
        message = response_class.FromString(answer) if isinstance(answer, bytes) else answer
        data = _to_json(message)
    else:
        data = answer if isinstance(answer, bytes) else answer.SerializeToString()
    return ENVELOPE.pack(0, len(data)) + data


async def _envelopes(request: web.Request, request_class: Any, as_json: bool) -> AsyncIterator[bytes]:
    """The request's enveloped messages, each as serialized protobuf (what the services'
    `RequestStream` decodes), read one at a time as the service asks for them."""
    content = request.content
    while True:
        try:
            head = await content.readexactly(ENVELOPE.size)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise invalid_argument("the request stream ends inside an envelope header") from None
            return
        flags, length = ENVELOPE.unpack(head)
        if flags & COMPRESSED:
            raise invalid_argument("compressed stream messages are not accepted; send them uncompressed")
        if length > MAX_MESSAGE_BYTES:
            raise invalid_argument(
                f"a stream message of {length} bytes is over the {MAX_MESSAGE_BYTES} limit"
            )
        try:
            data = await content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise invalid_argument("the request stream ends inside a message") from None
        if flags & END_STREAM:
            return
        yield _parse(data, request_class, True).SerializeToString() if as_json else data


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
