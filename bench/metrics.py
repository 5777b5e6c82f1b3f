"""What `bindingd serve --metrics` and tracing cost a call: KV get (local) p50 with metrics off,
metrics on, and traces exported (OTLP) to a local collector.

Three daemons on three copies of one project, one with --metrics, one with
OTEL_EXPORTER_OTLP_ENDPOINT naming a receiver in this process, driven in interleaved rounds by
the same client loop; the goal is a p50 with metrics at most 3 % above the one without. Beside
it, the in-process cost of the metrics path alone (`Metrics.record` with the sizes it reads).

    python -m bench.metrics [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bindingd_client import connect
from bindingd_client.proto import kv_pb2

from bench.measure import Result, interleaved
from bench.processes import start_daemon, stop

PROJECT = "version: 1\nbindings:\n  CACHE: { type: kv }\n"
GOAL = 1.03


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _measure(off: Path, on: Path, traced: Path, n: int) -> dict[str, Result]:
    roots = (off, on, traced)
    envs = [await connect(endpoint=f"unix://{root / '.bindingd' / 'bindingd.sock'}") for root in roots]
    try:
        for env in envs:
            await env.CACHE.put("bench", "v" * 100)
        off_kv, on_kv, traced_kv = envs[0].CACHE, envs[1].CACHE, envs[2].CACHE
        return await interleaved(
            {
                "kv get, metrics off": lambda: off_kv.get("bench"),
                "kv get, metrics on": lambda: on_kv.get("bench"),
                "kv get, tracing on": lambda: traced_kv.get("bench"),
            },
            n,
            rounds=40,
        )
    finally:
        for env in envs:
            await env.aclose()


def _collector() -> tuple[Any, int]:
    """A local OTLP trace receiver (the collector's gRPC service), counting nothing."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def record_cost_us(n: int = 200_000) -> float:
    """Microseconds per call of what calls.py does only when metrics are on."""
    from bindingd.server.metrics import Metrics

    runtime = SimpleNamespace(type_of=lambda name: "kv" if name == "CACHE" else None)
    metrics = Metrics(runtime)  # type: ignore[arg-type]
    request = kv_pb2.KVGetRequest(binding="CACHE", key="bench")
    response = kv_pb2.KVGetResponse(entry=kv_pb2.KVEntry(value=b"v" * 100))
    kind = ("kv", "get")
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        metrics.record(kind, "CACHE", "OK", time.perf_counter() - t0, request.ByteSize(), response.ByteSize())
    return (time.perf_counter() - started) / n * 1e6


def run(n: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bindingd-bench-metrics-") as tmp:
        off, on, traced = Path(tmp) / "off", Path(tmp) / "on", Path(tmp) / "traced"
        for root in (off, on, traced):
            root.mkdir()
            (root / "bindingd.yaml").write_text(PROJECT)
        collector, collector_port = _collector()
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        daemons = [
            start_daemon(off),
            start_daemon(on, "--metrics", f"127.0.0.1:{_free_port()}"),
            start_daemon(traced, env=otel),
        ]
        try:
            results = asyncio.run(_measure(off, on, traced, n))
        finally:
            for proc in daemons:
                stop(proc)
            collector.stop(0)
    base, with_metrics = results["kv get, metrics off"], results["kv get, metrics on"]
    with_tracing = results["kv get, tracing on"]
    ratio = with_metrics.p50_ms / base.p50_ms
    cost = record_cost_us()
    return [
        "metrics: kv get (local), sequential, one daemon without and one with --metrics",
        *(
            f"{r.name:<22} p50 {r.p50_ms:6.3f} ms  p99 {r.p99_ms:6.3f} ms  {r.calls_per_s:8.0f} calls/s"
            for r in (base, with_metrics, with_tracing)
        ),
        f"tracing on (every call a span, exported to a local OTLP receiver): "
        f"{with_tracing.p50_ms / base.p50_ms:.3f}x the p50 without",
        f"metrics path in process: {cost:.2f} us per call "
        f"({cost / 1000 / base.p50_ms * 100:.1f} % of the p50)",
        f"goal: kv get p50 with metrics at most {GOAL:.2f}x without: {ratio:.3f}x, "
        f"{'met' if ratio <= GOAL else 'NOT met'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print("\n".join(run(1000 if args.quick else 8000)))


if __name__ == "__main__":
    main()
