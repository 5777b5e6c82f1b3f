"""OpenTelemetry traces (issue 17, "Traces"): a real `bindingd serve` exporting with OTLP to a
receiver of the test's own (the collector's gRPC service from opentelemetry-proto), the worker's
trace context continued into the daemon, and nothing loaded when no collector is configured."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from bindingd_client.proto import kv_pb2, kv_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from support import DaemonProcess, write_project

SECRET_KEY = "key-never-in-a-span"
SECRET_VALUE = b"value-never-in-a-span"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _attributes(span: Any) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def test_a_workers_trace_continues_into_the_daemon(tmp_path: Path) -> None:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    write_project(tmp_path, "version: 1\nbindings:\n  CACHE: { type: kv }\n")
    daemon = DaemonProcess(
        tmp_path,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "bindingd-under-test",
        },
    ).start()
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    try:
        with grpc.insecure_channel(f"unix://{daemon.socket_path}") as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
            kv.Put(
                kv_pb2.KVPutRequest(binding="CACHE", key=SECRET_KEY, value=SECRET_VALUE), metadata=metadata
            )
            with pytest.raises(grpc.RpcError):
                kv.Get(kv_pb2.KVGetRequest(binding="NOPE", key=SECRET_KEY), metadata=metadata)
        deadline = time.monotonic() + 15
        while len([s for s in receiver.spans if s.trace_id.hex() == trace_id]) < 3:
            assert time.monotonic() < deadline, f"spans received: {[s.name for s in receiver.spans]}"
            time.sleep(0.1)
    finally:
        daemon.stop()
        server.stop(0)
    ours = {s.name: s for s in receiver.spans if s.trace_id.hex() == trace_id}
    put, get = ours["KVService.Put"], ours["KVService.Get"]
    assert put.parent_span_id.hex() == parent_id and get.parent_span_id.hex() == parent_id
    assert _attributes(put)["bindingd.binding"] == "CACHE" and _attributes(put)["bindingd.op"] == "put"
    assert _attributes(put)["rpc.grpc.status_code"] == "OK"
    assert _attributes(get)["rpc.grpc.status_code"] == "NOT_FOUND" and get.status.code == 2  # ERROR
    # The provider's work on the backend: a child span of the call's.
    backend = ours["local CACHE"]
    assert backend.parent_span_id == put.span_id and _attributes(backend)["bindingd.backend"] == "local"
    everything = b"".join(s.SerializeToString() for s in receiver.spans)
    assert SECRET_KEY.encode() not in everything and SECRET_VALUE not in everything


def test_without_a_collector_nothing_of_opentelemetry_is_loaded() -> None:
    probe = (
        "import sys; from bindingd.server import app, tracing; "
        "assert tracing.from_environment() is None; "
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
