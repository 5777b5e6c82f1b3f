"""What every RPC shares: decoding, a request id, one log line, errors turned into statuses.

A `BindingdError` becomes its table's status code with a google.rpc.ErrorInfo detail (domain
"bindingd", reason, binding, env, backend). Anything else is a bug: it is logged with a request
id, and the caller gets INTERNAL with that id and no traceback.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from bindingd.errors import DOMAIN, BindingdError, Reason, invalid_argument

log = structlog.get_logger("bindingd.calls")

REQUEST_ID_HEADER = "x-request-id"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class HasRuntime(Protocol):
    runtime: Any


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return uuid.uuid4().hex[:16]


def status_metadata(err: BindingdError, request_id: str) -> tuple[tuple[str, bytes], ...]:
    """The `grpc-status-details-bin` trailer carrying the error's google.rpc.ErrorInfo."""
    info = error_details_pb2.ErrorInfo(
        reason=err.reason.value,
        domain=DOMAIN,
        metadata={"binding": err.binding, "env": err.env, "backend": err.backend, "request_id": request_id},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def abort(context: grpc.aio.ServicerContext, err: BindingdError, request_id: str) -> None:
    await context.abort(err.code, err.message, trailing_metadata=status_metadata(err, request_id))


def rpc(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Wrap a unary servicer method of a service that has a `runtime`."""
    name = method.__qualname__

    @functools.wraps(method)
    async def wrapper(self: HasRuntime, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        started = time.perf_counter()
        binding = getattr(request, "binding", "")
        runtime = self.runtime
        runtime.calls_in_flight += 1
        runtime.last_call_at = time.monotonic()
        try:
            response = await method(self, request, context)
        except BindingdError as e:
            failure = e
            request_id = request_id_of(context)
        except Exception:
            request_id = request_id_of(context)
            log.exception("unexpected failure", method=name, binding=binding, request_id=request_id)
            failure = BindingdError(
                Reason.INTERNAL,
                f"bindingd failed unexpectedly (request id {request_id}); the daemon's log has the details",
            )
        else:
            if log.is_enabled_for(logging.DEBUG):
                log.debug(
                    "call", method=name, binding=binding, ms=round((time.perf_counter() - started) * 1000, 3)
                )
            return response
        finally:
            runtime.calls_in_flight -= 1
        err = failure.with_context(binding=binding, env=runtime.env, backend=runtime.backend_of(binding))
        log.debug("call failed", method=name, binding=binding, reason=err.reason.value, request_id=request_id)
        await abort(context, err, request_id)
        raise AssertionError("unreachable: abort raises")

    return wrapper


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register `servicer`'s methods for `service`, decoding requests ourselves.

    grpc's own decoding answers a malformed request with UNKNOWN; here it is INVALID_ARGUMENT,
    like every other mistake of the caller.
    """
    handlers = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise NotImplementedError(f"{method.full_name}: streaming methods need their own decoding")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _decoding(getattr(servicer, method.name), request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _decoding(
    impl: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], request_class: Any
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = request_class.FromString(raw)
        except DecodeError as e:
            err = invalid_argument(
                f"the request is not a valid {request_class.DESCRIPTOR.full_name} message: {e}"
            )
            await abort(context, err, request_id_of(context))
        return await impl(request, context)

    return handle
