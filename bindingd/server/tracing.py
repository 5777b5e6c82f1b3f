"""OpenTelemetry traces of the calls, when a collector is configured.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then,
and only then, the OpenTelemetry SDK is imported (the optional extra `bindingd[otel]`) and every
call gets a server span, exported with OTLP over gRPC in batches. The caller's `traceparent`
metadata (W3C trace context) is the span's parent, so a worker's trace continues into the
daemon; a call relayed to a gateway carries the daemon's span on as its `traceparent`, so the
trace continues into the gateway (when it exports too). The standard `OTEL_*` variables apply
(service name, sampler, batch delays, headers).

A span's attributes are the call's method, binding, binding type, operation, env and status:
never a key, a value, SQL text or anything else the caller chose but the binding's name. The
provider's work on the backend is a child span (`postgres APP_DB`, `local CACHE`, ...).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

import structlog

log = structlog.get_logger("bindingd.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The span of the call being served, for a relay to pass on (bindingd.server.forward).
CURRENT_SPAN: ContextVar[Any] = ContextVar("bindingd_span", default=None)


class Tracing:
    """The tracer and what the calls need of it; `close()` flushes what is still batched."""

    def __init__(self, provider: Any, service: str) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        self._provider = provider
        self._tracer = provider.get_tracer("bindingd")
        self._propagate = propagate
        self._server = SpanKind.SERVER
        self._client = SpanKind.CLIENT
        self._error = (Status, StatusCode.ERROR)
        self._in_context = set_span_in_context
        self.service = service

    def start(self, name: str, op: str, binding_type: str, env: str, metadata: Any) -> Any:
        carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
        parent = self._propagate.extract(carrier)
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=self._server,
            attributes={
                "rpc.system": "grpc",
                "rpc.method": name,
                "bindingd.type": binding_type,
                "bindingd.op": op,
                "bindingd.env": env,
            },
        )
        CURRENT_SPAN.set(span)
        return span

    def end(self, span: Any, binding: str, code: str) -> None:
        span.set_attribute("bindingd.binding", binding)
        span.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            status, error = self._error
            span.set_status(status(error, code))
        span.end()

    def backend(self, binding: str, backend_kind: str, connection: str) -> Any:
        """A child span of the call's for the time its provider works on the backend (its
        round trips: a query, a put, a consume's polls), or None outside a traced call."""
        parent = CURRENT_SPAN.get()
        if parent is None:
            return None
        return self._tracer.start_span(
            f"{backend_kind} {binding}",
            context=self._in_context(parent),
            kind=self._client,
            attributes={
                "bindingd.binding": binding,
                "bindingd.backend": backend_kind,
                "bindingd.connection": connection,
            },
        )

    def end_backend(self, span: Any, failed: bool) -> None:
        if failed:
            status, error = self._error
            span.set_status(status(error))
        span.end()

    def inject(self) -> tuple[tuple[str, str], ...]:
        """The current call's span as `traceparent` (and `tracestate`) metadata for a relay."""
        span = CURRENT_SPAN.get()
        if span is None:
            return ()
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=self._in_context(span))
        return tuple(carrier.items())

    def close(self) -> None:
        self._provider.shutdown()


def from_environment(service: str = "bindingd") -> Tracing | None:
    """Tracing when a collector is configured, else None (nothing imported)."""
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "tracing not started: OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is "
            "not installed; pip install 'bindingd[otel]'"
        )
        return None
    name = os.environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing", exporter="otlp", service=name)
    return Tracing(provider, name)
