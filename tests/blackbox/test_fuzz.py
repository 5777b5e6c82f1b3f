"""Random requests against the running daemon: it never crashes and never answers UNKNOWN or
INTERNAL, whatever the caller sends. Requests go through the raw stubs, so the client's own
checks do not filter anything out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bindingd_client.proto import (
    bindings_pb2,
    bindings_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    vars_pb2,
    vars_pb2_grpc,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import DaemonProcess, health_status, write_project

CONFIG = """
    version: 1
    bindings:
      CACHE: { type: kv }
      NAME:  { type: var, value: "x" }
"""
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

bindings = st.sampled_from(["CACHE", "NAME", "", "NOPE", "cache", "CACHE\x00"]) | st.text(max_size=20)
keys = st.text(max_size=40) | st.sampled_from(["", ".", "..", "k" * 513, "é" * 300, "\x00"])
numbers = (
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([0, 59, 60, 1, 10**10])
)
json_texts = (
    st.none() | st.text(max_size=50) | st.sampled_from(['{"a":1}', "null", "[", '"' + "x" * 1100 + '"'])
)
cursors = st.text(max_size=60) | st.sampled_from(["", "eyJwIjoiIiwiYSI6MX0", "eyJwIjoiIn0", "e30", "!!!"])


def _opt(**fields: object) -> dict[str, object]:
    return {k: v for k, v in fields.items() if v is not None}


requests = st.one_of(
    st.builds(
        lambda b, k, t: ("KV", "Get", kv_pb2.KVGetRequest(binding=b, key=k, **_opt(cache_ttl=t))),
        bindings,
        keys,
        numbers,
    ),
    st.builds(
        lambda b, ks, t: ("KV", "GetBulk", kv_pb2.KVGetBulkRequest(binding=b, keys=ks, **_opt(cache_ttl=t))),
        bindings,
        st.lists(keys, max_size=110),
        numbers,
    ),
    st.builds(
        lambda b, k, v, e, ttl, m: (
            "KV",
            "Put",
            kv_pb2.KVPutRequest(
                binding=b, key=k, value=v, **_opt(expiration=e, expiration_ttl=ttl, metadata_json=m)
            ),
        ),
        bindings,
        keys,
        st.binary(max_size=200),
        numbers,
        numbers,
        json_texts,
    ),
    st.builds(lambda b, k: ("KV", "Delete", kv_pb2.KVDeleteRequest(binding=b, key=k)), bindings, keys),
    st.builds(
        lambda b, p, n, c: ("KV", "List", kv_pb2.KVListRequest(binding=b, prefix=p, limit=n, cursor=c)),
        bindings,
        keys,
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        cursors,
    ),
    st.builds(lambda b: ("Vars", "Get", vars_pb2.VarGetRequest(binding=b)), bindings),
    st.builds(lambda b: ("Bindings", "Describe", bindings_pb2.DescribeBindingRequest(binding=b)), bindings),
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    write_project(root, CONFIG)
    d = DaemonProcess(root).start()
    yield d
    assert d.stop() == 0


@pytest.fixture(scope="module")
def stubs(daemon: DaemonProcess) -> Iterator[dict[str, object]]:
    with grpc.insecure_channel(daemon.endpoint) as channel:
        yield {
            "KV": kv_pb2_grpc.KVStub(channel),
            "Vars": vars_pb2_grpc.VarsStub(channel),
            "Bindings": bindings_pb2_grpc.BindingsStub(channel),
        }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
# Requests that once got INTERNAL: an expiry SQLite cannot store, JSON nested past recursion.
@example(request=("KV", "Put", kv_pb2.KVPutRequest(binding="CACHE", key="k", expiration_ttl=2**63 - 1)))
@example(request=("KV", "Put", kv_pb2.KVPutRequest(binding="CACHE", key="k", expiration=2**63 - 1)))
@example(request=("KV", "Put", kv_pb2.KVPutRequest(binding="CACHE", key="k", metadata_json="[" * 1000)))
def test_random_requests_get_clear_answers(
    daemon: DaemonProcess, stubs: dict[str, object], request: tuple[str, str, object]
) -> None:
    service, method, message = request
    try:
        getattr(stubs[service], method)(message, timeout=30)
    except grpc.RpcError as e:
        assert e.code() not in FORBIDDEN, f"{service}.{method}({message!r}) -> {e.code()}: {e.details()}"
        assert "Traceback" not in (e.details() or "")
    assert daemon.proc is not None and daemon.proc.poll() is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(
        ["/bindingd.v1.KV/Get", "/bindingd.v1.KV/Put", "/bindingd.v1.KV/List", "/bindingd.v1.Vars/Get"]
    ),
    payload=st.binary(max_size=64)
    | st.sampled_from([b"\\x0a\\x02\\xff\\xfe", b"\\x12\\x05abc", b"\\xff\\xff\\xff"]),
)
def test_malformed_bytes_are_invalid_argument(daemon: DaemonProcess, method: str, payload: bytes) -> None:
    with grpc.insecure_channel(daemon.endpoint) as channel:
        try:
            channel.unary_unary(method)(payload, timeout=30)
        except grpc.RpcError as e:
            assert e.code() not in FORBIDDEN, f"{method}({payload!r}) -> {e.code()}: {e.details()}"
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_daemon_still_healthy_after_fuzzing(daemon: DaemonProcess) -> None:
    assert health_status(daemon.endpoint) == "SERVING"
    assert "unexpected failure" not in daemon.logs()
