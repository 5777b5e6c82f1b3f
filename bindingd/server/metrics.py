"""`bindingd serve --metrics HOST:PORT`: Prometheus text at /metrics.

Every call passes `calls.py`, which hands its outcome to `Metrics.record`. That is on every
call's path, so the figures are plain dicts and lists updated in place on the event loop (no
locks, no prometheus-client objects per call); a collector turns them into metric families only
when /metrics is scraped. The HTTP listener is an asyncio server on the same loop, so a scrape
reads the figures on the thread that writes them.

Label values are binding names defined in the config, op names and status code names: a call
that names an undefined binding is counted under binding="" (the name is the caller's text,
and would let any caller grow the label set without bound).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bindingd.resiliency import CLOSED, HALF_OPEN, OPEN

if TYPE_CHECKING:
    from bindingd.runtime import Runtime

log = structlog.get_logger("bindingd.metrics")

# Upper bounds of bindingd_call_duration_seconds: 0.2 ms (a local KV get) to 30 s (a long query).
DURATION_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
_BUCKET_LABELS = [*(repr(b) for b in DURATION_BUCKETS), "+Inf"]
# The service a method belongs to names the binding type when the binding is not defined.
SERVICE_TYPES = {
    "KVService": "kv",
    "ObjectsService": "objects",
    "SqlService": "sql",
    "QueueService": "queue",
    "VarsService": "var",
    "BindingsService": "bindings",
}
QUEUE_EVENTS = ("sent", "delivered", "acked", "retried", "dead_lettered")
# The classic text format, which every Prometheus version reads (bindingd's names are all plain).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape's request head may be this long, and must arrive this soon.
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT_S = 5.0
# A queue's backlog is read from its backend at each scrape; one that does not answer this soon
# is left out of that scrape (the others are not held up).
BACKLOG_TIMEOUT_S = 1.0


def method_kind(qualname: str) -> tuple[str, str]:
    """("kv", "get_with_metadata") for "KVService.GetWithMetadata": the type and op labels."""
    service, _, method = qualname.rpartition(".")
    op = re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()
    return SERVICE_TYPES.get(service, service.removesuffix("Service").lower()), op


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0


class Metrics:
    """The daemon's figures. `record` runs once per call; the rest when something happens."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls: dict[tuple[str, str, str, str], int] = {}
        self.durations: dict[tuple[str, str, str], _Histogram] = {}
        self.bytes: dict[tuple[str, str], int] = {}
        self.queue: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload: tuple[float, bool] | None = None
        # binding -> (messages, bytes or None when the backend cannot tell), as of the last scrape.
        self.backlogs: dict[str, tuple[int, int | None]] = {}

    async def read_backlogs(self) -> None:
        """Each queue binding's backlog from its backend, just before a scrape: the collector
        itself cannot wait on a backend. Where the provider cannot tell (or does not answer
        within BACKLOG_TIMEOUT_S) the binding is left out, rather than shown as empty."""

        async def one(served: Any) -> tuple[str, Any]:
            try:
                async with asyncio.timeout(BACKLOG_TIMEOUT_S):
                    return served.binding.name, await served.provider.backlog()
            except Exception:
                return served.binding.name, None

        queues = [
            s
            for s in self.runtime.served()
            if s.binding.type == "queue" and s.provider is not None and hasattr(s.provider, "backlog")
        ]
        found = await asyncio.gather(*(one(s) for s in queues))
        self.backlogs = {
            name: (b.count, b.bytes if b.bytes or b.count == 0 else None)
            for name, b in found
            if b is not None
        }

    def record(
        self, kind: tuple[str, str], binding: str, code: str, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        binding_type = self.runtime.type_of(binding)
        if binding_type is None:
            binding, binding_type = "", kind[0]
        key = (binding, binding_type, kind[1])
        counted = (*key, code)
        self.calls[counted] = self.calls.get(counted, 0) + 1
        histogram = self.durations.get(key)
        if histogram is None:
            histogram = self.durations[key] = _Histogram()
        histogram.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram.total += seconds
        if bytes_in:
            self._add(self.bytes, (binding, "in"), bytes_in)
        if bytes_out:
            self._add(self.bytes, (binding, "out"), bytes_out)

    def failed(self, binding: str, reason: str) -> None:
        """A call answered with an error of the table: its reason (a fixed set) by binding."""
        if self.runtime.type_of(binding) is None:
            binding = ""
        self._add(self.errors, (binding, reason), 1)

    def queue_event(self, binding: str, event: str, n: int = 1) -> None:
        if n:
            self._add(self.queue, (binding, event), n)

    def reloaded(self, ok: bool) -> None:
        self.reloads["ok" if ok else "failed"] += 1
        self.last_reload = (time.time(), ok)

    @staticmethod
    def _add(into: dict[tuple[str, str], int], key: tuple[str, str], n: int) -> None:
        into[key] = into.get(key, 0) + n


class _Collector(Collector):
    """Metric families from `Metrics` and the runtime, built at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        calls = CounterMetricFamily(
            "bindingd_calls",
            "Calls answered, by binding, binding type, operation and gRPC status code.",
            labels=["binding", "type", "op", "code"],
        )
        for call_labels, n in m.calls.items():
            calls.add_metric(list(call_labels), n)
        yield calls
        durations = HistogramMetricFamily(
            "bindingd_call_duration_seconds",
            "How long calls took in the daemon, from the decoded request to the answer.",
            labels=["binding", "type", "op"],
        )
        for duration_labels, h in m.durations.items():
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, h.counts, strict=True):
                cumulative += count
                buckets.append((label, cumulative))
            durations.add_metric(list(duration_labels), buckets, h.total)
        yield durations
        transferred = CounterMetricFamily(
            "bindingd_bytes",
            "Message bytes received from callers (in) and sent to them (out).",
            labels=["binding", "direction"],
        )
        for labels, n in m.bytes.items():
            transferred.add_metric(list(labels), n)
        yield transferred
        errors = CounterMetricFamily(
            "bindingd_call_errors",
            "Calls that failed, by binding and error reason (bindingd's error table).",
            labels=["binding", "reason"],
        )
        for labels, n in m.errors.items():
            errors.add_metric(list(labels), n)
        yield errors
        served = m.runtime.served()
        in_flight = GaugeMetricFamily(
            "bindingd_calls_in_flight", "Calls using the binding's provider now.", labels=["binding"]
        )
        up = GaugeMetricFamily(
            "bindingd_binding_up",
            "1 when the binding's last health check succeeded, else 0.",
            labels=["binding", "backend"],
        )
        for s in served:
            in_flight.add_metric([s.binding.name], s.handle.in_flight)
            up.add_metric([s.binding.name, s.binding.backend], 1 if s.health == "serving" else 0)
        yield in_flight
        yield up
        messages = CounterMetricFamily(
            "bindingd_queue_messages",
            "Queue messages sent, delivered to consumers, acked, retried and dead-lettered.",
            labels=["binding", "event"],
        )
        queue_counts = dict(m.queue)
        for s in served:
            provider = s.provider
            dead = getattr(provider, "dead_lettered", None) if provider is not None else None
            if isinstance(dead, int) and dead:
                queue_counts[(s.binding.name, "dead_lettered")] = dead
        for labels, n in queue_counts.items():
            messages.add_metric(list(labels), n)
        yield messages
        backlog = GaugeMetricFamily(
            "bindingd_queue_backlog_messages",
            "Messages stored in the queue and not acked, read from the backend at this scrape.",
            labels=["binding"],
        )
        backlog_bytes = GaugeMetricFamily(
            "bindingd_queue_backlog_bytes",
            "Their bytes, where the backend can tell (RabbitMQ cannot).",
            labels=["binding"],
        )
        for name, (count, size) in m.backlogs.items():
            backlog.add_metric([name], count)
            if size is not None:
                backlog_bytes.add_metric([name], size)
        yield backlog
        yield backlog_bytes
        yield from self._connections()
        reloads = CounterMetricFamily(
            "bindingd_reloads", "Config reloads (SIGHUP), by result.", labels=["result"]
        )
        for result, n in m.reloads.items():
            reloads.add_metric([result], n)
        yield reloads
        if m.last_reload is not None:
            at, ok = m.last_reload
            yield GaugeMetricFamily(
                "bindingd_last_reload_success", "1 when the last reload succeeded, else 0.", value=int(ok)
            )
            yield GaugeMetricFamily(
                "bindingd_last_reload_timestamp_seconds", "When the last reload ended.", value=at
            )

    def _connections(self) -> Iterator[Metric]:
        """Per connection entry: its circuit breaker's state, what the policy did, and its pool."""
        state = GaugeMetricFamily(
            "bindingd_circuit_state",
            "The connection's circuit breaker: 1 for its current state (closed, open, half_open).",
            labels=["connection", "state"],
        )
        counters = {
            "retries": CounterMetricFamily(
                "bindingd_backend_retries",
                "Idempotent calls sent again after a backend failure.",
                labels=["connection"],
            ),
            "timeouts": CounterMetricFamily(
                "bindingd_backend_timeouts",
                "Backend calls cut by the policy's timeout.",
                labels=["connection"],
            ),
            "opened": CounterMetricFamily(
                "bindingd_circuit_opened",
                "Times the connection's circuit breaker opened.",
                labels=["connection"],
            ),
        }
        errors = CounterMetricFamily(
            "bindingd_backend_errors",
            "Backend failures (each attempt) by the error table's reason: BACKEND_UNAVAILABLE, "
            "BACKEND_TIMEOUT, ...",
            labels=["connection", "reason"],
        )
        for name, breaker in self.metrics.runtime.breakers.by_name.items():
            for each in (CLOSED, OPEN, HALF_OPEN):
                state.add_metric([name, each], 1 if breaker.state == each else 0)
            for attribute, family in counters.items():
                family.add_metric([name], getattr(breaker, attribute))
            for reason, n in breaker.errors.items():
                errors.add_metric([name, reason], n)
        yield state
        yield from counters.values()
        yield errors
        size = GaugeMetricFamily(
            "bindingd_connection_pool_size",
            "Connections the connection entry's client holds open to its backend now.",
            labels=["connection"],
        )
        in_use = GaugeMetricFamily(
            "bindingd_connection_pool_in_use",
            "Of those, the connections a call is using now (a multiplexed one counts while open).",
            labels=["connection"],
        )
        reconnects = CounterMetricFamily(
            "bindingd_connection_reconnects",
            "Connections opened to replace one that was lost or closed (where the client can tell).",
            labels=["connection"],
        )
        for name, figures in self.metrics.runtime.connections.figures().items():
            size.add_metric([name], figures.size)
            in_use.add_metric([name], figures.in_use)
            if figures.reconnects is not None:
                reconnects.add_metric([name], figures.reconnects)
        yield size
        yield in_use
        yield reconnects


def registry_for(metrics: Metrics) -> CollectorRegistry:
    """A registry of the daemon's own (not the global one: tests run several daemons in one
    process) with bindingd's figures and the standard process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class MetricsServer:
    """GET /metrics over plain HTTP/1.x, one request per connection, on the daemon's loop."""

    def __init__(
        self, registry: CollectorRegistry, before_scrape: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.registry = registry
        self.before_scrape = before_scrape
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_HEAD)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                return
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"only GET /metrics\n", "text/plain"
            elif path != b"/metrics":
                status, body, ctype = "404 Not Found", b"metrics are at /metrics\n", "text/plain"
            else:
                try:
                    if self.before_scrape is not None and method == b"GET":
                        await self.before_scrape()
                    status, body, ctype = "200 OK", generate_latest(self.registry), CONTENT_TYPE
                except Exception as e:  # a figure that could not be read: said, not a dropped scrape
                    log.exception("metrics scrape failed")
                    status, ctype = "500 Internal Server Error", "text/plain"
                    body = f"bindingd could not collect its metrics: {type(e).__name__}\n".encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        finally:
            self._connections.discard(task)
            writer.close()
