"""Random Queue requests against the running daemon: never a crash, UNKNOWN or INTERNAL.

Requests go through the raw stubs, so the client's own checks filter nothing out. A Consume
stream gets one random first request and is closed after its first answer (or error).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bindingd_client.proto import queue_pb2, queue_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import DaemonProcess, write_project

CONFIG = """
    version: 1
    bindings:
      JOBS:  { type: queue }
      CACHE: { type: kv }
"""
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

bindings = st.sampled_from(["JOBS", "CACHE", "", "NOPE", "jobs"]) | st.text(max_size=20)
content_types = st.sampled_from(["json", "text", "bytes", "v8", "", "JSON"]) | st.text(max_size=8)
bodies = st.binary(max_size=300) | st.sampled_from([b'{"a":1}', b"[" * 5000, b"\xff\xfe", b"x" * 140_000])
int32s = st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.sampled_from([0, 43200, 43201])
floats = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 60.0, 1e-9])


def _opt(**fields: object) -> dict[str, object]:
    return {k: v for k, v in fields.items() if v is not None}


def _message(body: bytes, content_type: str, delay: int | None) -> queue_pb2.QueueMessageSend:
    return queue_pb2.QueueMessageSend(body=body, content_type=content_type, **_opt(delay_seconds=delay))


messages = st.builds(_message, bodies, content_types, int32s)
requests = st.one_of(
    st.builds(
        lambda b, m: ("Send", queue_pb2.QueueSendRequest(binding=b, message=m)),
        bindings,
        messages,
    ),
    st.builds(
        lambda b, ms, d: (
            "SendBatch",
            queue_pb2.QueueSendBatchRequest(binding=b, messages=ms, **_opt(delay_seconds=d)),
        ),
        bindings,
        st.lists(messages, max_size=105),
        int32s,
    ),
    st.builds(
        lambda b, acks, leases, d: (
            "Ack",
            queue_pb2.QueueAckRequest(
                binding=b,
                acks=acks,
                retries=[queue_pb2.QueueRetry(lease_id=x, **_opt(delay_seconds=d)) for x in leases],
            ),
        ),
        bindings,
        st.lists(st.text(max_size=40), max_size=5),
        st.lists(st.text(max_size=40), max_size=5),
        int32s,
    ),
    st.builds(
        lambda b, size, wait, lease: (
            "Consume",
            queue_pb2.QueueConsumeRequest(
                binding=b, **_opt(batch_size=size, max_wait_seconds=wait, visibility_timeout_seconds=lease)
            ),
        ),
        bindings,
        int32s,
        floats,
        floats,
    ),
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root: Path = tmp_path_factory.mktemp("queue-fuzz")
    write_project(root, CONFIG)
    d = DaemonProcess(root).start()
    yield d
    assert d.stop() == 0


@pytest.fixture(scope="module")
def stub(daemon: DaemonProcess) -> Iterator[queue_pb2_grpc.QueueStub]:
    with grpc.insecure_channel(daemon.endpoint) as channel:
        yield queue_pb2_grpc.QueueStub(channel)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
@example(request=("Consume", queue_pb2.QueueConsumeRequest(binding="JOBS", max_wait_seconds=math.nan)))
@example(
    request=("Consume", queue_pb2.QueueConsumeRequest(binding="JOBS", visibility_timeout_seconds=math.inf))
)
def test_random_queue_requests_get_clear_answers(
    daemon: DaemonProcess, stub: queue_pb2_grpc.QueueStub, request: tuple[str, object]
) -> None:
    method, message = request
    try:
        if method == "Consume":
            # Consume answers only when a message is there: a short deadline ends the wait.
            stream = stub.Consume(iter([message]), timeout=2)
            try:
                next(stream, None)
            finally:
                stream.cancel()
        else:
            getattr(stub, method)(message, timeout=30)
    except grpc.RpcError as e:
        if e.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            assert e.code() not in FORBIDDEN, f"{method}({message!r}) -> {e.code()}: {e.details()}"
            assert "Traceback" not in (e.details() or "")
    assert daemon.proc is not None and daemon.proc.poll() is None
