"""`bindingd serve --metrics`: Prometheus text scraped over HTTP from a real daemon process."""

from __future__ import annotations

import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from bindingd_client import connect_sync
from bindingd_client.proto import kv_pb2, kv_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support import DaemonProcess, bindingd_cli, write_project

CONFIG = """\
version: 1
bindings:
  CACHE: { type: kv }
  FROZEN: { type: kv, access: read-only }
  JOBS: { type: queue, max_retries: 0 }
"""
# Keys and binding names a caller chose: none of them may become a label value.
ODD_KEYS = ['a"b', "line\nbreak", "{x}=1,le", "ключ", "\\", "x" * 300]
ODD_BINDING = 'EVIL"} 1\nbindingd_pwned{a="'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(answer.read().decode())


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_after_calls(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    port = _free_port()
    daemon = DaemonProcess(tmp_path, "--metrics", f"127.0.0.1:{port}").start()
    try:
        with connect_sync(endpoint=daemon.endpoint) as env:
            env.CACHE.put("k", "v")
            assert env.CACHE.get("k") == "v"
            for key in ODD_KEYS:
                env.CACHE.put(key, "odd")
                assert env.CACHE.get(key) == "odd"
            with pytest.raises(Exception, match="read-only"):
                env.FROZEN.put("k", "v")
            env.JOBS.send_batch([{"body": i} for i in range(3)])
            batch = next(iter(env.JOBS.consume(batch_size=3, max_wait=1)))
            assert len(batch) == 3
            batch.messages[0].ack()
            batch.messages[1].retry()  # max_retries 0: dead-lettered (dropped) at once
        with grpc.insecure_channel(daemon.endpoint) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                kv_pb2_grpc.KVStub(channel).Get(kv_pb2.KVGetRequest(binding=ODD_BINDING, key="k"))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        # A reload that fails (the file no longer parses) is counted as such.
        (tmp_path / "bindingd.yaml").write_text("version: 1\nbindings: [\n")
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload failed" not in daemon.logs() and time.monotonic() < deadline:
            time.sleep(0.05)

        text = _scrape(port)
        samples = _samples(text)
        calls = "bindingd_calls_total"
        assert _value(samples, calls, binding="CACHE", type="kv", op="put", code="OK") == 1 + len(ODD_KEYS)
        assert _value(samples, calls, binding="CACHE", type="kv", op="get", code="OK") == 1 + len(ODD_KEYS)
        assert _value(samples, calls, binding="FROZEN", type="kv", op="put", code="PERMISSION_DENIED") == 1
        assert _value(samples, calls, binding="JOBS", type="queue", op="send_batch", code="OK") == 1
        # The undefined binding's name is the caller's text: counted under binding="".
        assert _value(samples, calls, binding="", type="kv", op="get", code="NOT_FOUND") == 1
        errors = "bindingd_call_errors_total"
        assert _value(samples, errors, binding="FROZEN", reason="PERMISSION_DENIED") == 1
        assert _value(samples, errors, binding="", reason="BINDING_NOT_FOUND") == 1
        for text_of_caller in (*ODD_KEYS, ODD_BINDING, "EVIL", "pwned", "ключ"):
            assert text_of_caller not in text

        count = "bindingd_call_duration_seconds_count"
        assert _value(samples, count, binding="CACHE", type="kv", op="get") == 1 + len(ODD_KEYS)
        bucket = "bindingd_call_duration_seconds_bucket"
        assert _value(samples, bucket, binding="CACHE", type="kv", op="get", le="30.0") == 1 + len(ODD_KEYS)
        assert (
            bucket,
            frozenset({"binding": "CACHE", "type": "kv", "op": "get", "le": "0.0002"}.items()),
        ) in (samples)
        assert _value(samples, "bindingd_bytes_total", binding="CACHE", direction="in") > 300
        assert _value(samples, "bindingd_bytes_total", binding="CACHE", direction="out") > 0

        queue = "bindingd_queue_messages_total"
        assert _value(samples, queue, binding="JOBS", event="sent") == 3
        assert _value(samples, queue, binding="JOBS", event="delivered") == 3
        assert _value(samples, queue, binding="JOBS", event="acked") == 1
        assert _value(samples, queue, binding="JOBS", event="retried") == 1
        assert _value(samples, queue, binding="JOBS", event="dead_lettered") == 1
        # Read from the queue at the scrape: the third message is leased, not acked.
        assert _value(samples, "bindingd_queue_backlog_messages", binding="JOBS") == 1
        assert _value(samples, "bindingd_queue_backlog_bytes", binding="JOBS") > 0

        for name in ("CACHE", "FROZEN", "JOBS"):
            assert _value(samples, "bindingd_binding_up", binding=name, backend="local") == 1
            assert ("bindingd_calls_in_flight", frozenset({"binding": name}.items())) in samples
        assert _value(samples, "bindingd_reloads_total", result="failed") == 1
        assert _value(samples, "bindingd_last_reload_success") == 0
        assert _value(samples, "process_open_fds") > 0
        assert any(name == "python_info" for name, _ in samples)

        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        assert daemon.stop() == 0


def test_metrics_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    result = bindingd_cli("serve", "--metrics", "0.0.0.0:9464", cwd=tmp_path, timeout=30)
    assert result.returncode != 0
    assert "refusing to serve metrics on 0.0.0.0:9464" in result.stderr
    assert "loopback" in result.stderr
    assert not (tmp_path / ".bindingd" / "endpoint").exists()
