"""Attacks on the loopback TCP listener by a local caller without the token, against the real
`bindingd serve` process: blank or exposed tokens, what Health tells, memory spent on refused
calls, and a crowd of idle connections that must not take the owner's unix socket down."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bindingd_client import connect_sync
from bindingd_client.proto import kv_pb2, kv_pb2_grpc, vars_pb2, vars_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import DaemonProcess, bindingd_cli, health_status, listen_port, write_project

SECRET = "tcp-secret-never-without-token"
CONFIG = """
    version: 1
    env: dev
    bindings:
      CACHE:      { type: kv }
      PAYROLL_DB: { type: kv }
      API_KEY:    { type: secret, value: "${env:API_KEY}" }
"""
NOBODY = 65534
MIB = 1024 * 1024
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _free_port() -> int:
    return listen_port()  # --listen also takes the next port (HTTP)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, CONFIG, dev_vars=f"API_KEY={SECRET}\n")
    return tmp_path


@pytest.fixture
def tcp_daemon(project: Path) -> Iterator[tuple[DaemonProcess, str, str]]:
    port = _free_port()
    d = DaemonProcess(project, "--listen", f"127.0.0.1:{port}").start()
    try:
        yield d, f"127.0.0.1:{port}", (project / ".bindingd" / "token").read_text().strip()
    finally:
        d.stop()


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _serve(project: Path, port: int, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return bindingd_cli("serve", "--listen", f"127.0.0.1:{port}", cwd=project, env=env, timeout=30)


# --- blank and exposed tokens ------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["   ", "\t"])
def test_a_blank_token_variable_does_not_open_tcp(project: Path, blank: str) -> None:
    port = _free_port()
    result = _serve(project, port, {"BINDINGD_TOKEN": blank})
    assert result.returncode == 2, result.stderr
    assert "BINDINGD_TOKEN is blank" in result.stderr
    assert not _listening(port)


@pytest.mark.parametrize("content", ["", "   \n", "\n\n"])
def test_a_blank_token_file_does_not_open_tcp(project: Path, content: str) -> None:
    state = project / ".bindingd"
    state.mkdir(mode=0o700)
    token = state / "token"
    token.write_text(content)
    token.chmod(0o600)
    port = _free_port()
    result = _serve(project, port)
    assert result.returncode == 2, result.stderr
    assert "blank" in result.stderr and str(token) in result.stderr and "remove it" in result.stderr


def test_a_token_file_others_can_read_or_own_is_refused(project: Path) -> None:
    state = project / ".bindingd"
    state.mkdir(mode=0o700)
    token = state / "token"
    token.write_text("a-token-everyone-may-have-read\n")
    token.chmod(0o644)
    result = _serve(project, _free_port())
    assert result.returncode == 2 and "has mode 644, not 600" in result.stderr, result.stderr
    token.chmod(0o600)
    os.chown(token, NOBODY, NOBODY)
    result = _serve(project, _free_port())
    assert result.returncode == 2 and f"belongs to uid {NOBODY}" in result.stderr, result.stderr
    token.unlink()
    token.symlink_to(project / "bindingd.yaml")
    result = _serve(project, _free_port())
    assert result.returncode == 2 and "symlink" in result.stderr, result.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "Bearer    ", "bearer x", ""])
def test_an_empty_bearer_gets_nothing(tcp_daemon: tuple[DaemonProcess, str, str], header: str) -> None:
    _, target, token = tcp_daemon
    with grpc.insecure_channel(target) as channel:
        stub = vars_pb2_grpc.VarsStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetAll(vars_pb2.VarGetAllRequest(), metadata=(("authorization", header),), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert SECRET not in str(raised.value)
        answer = stub.GetAll(vars_pb2.VarGetAllRequest(), metadata=(("authorization", f"Bearer {token}"),))
        assert answer.values["API_KEY"] == SECRET


# --- what Health and reflection tell a caller without the token --------------------------------


def test_health_without_the_token_tells_only_the_overall_status(
    tcp_daemon: tuple[DaemonProcess, str, str],
) -> None:
    d, target, token = tcp_daemon
    assert health_status(target) == "SERVING"
    # A binding's name and an unknown name get the same answer: nothing tells them apart.
    assert health_status(target, "PAYROLL_DB") == "UNAUTHENTICATED"
    assert health_status(target, "NO_SUCH_BINDING") == "UNAUTHENTICATED"
    wrong = (("authorization", "Bearer wrong"),)
    assert health_status(target, "PAYROLL_DB", wrong) == "UNAUTHENTICATED"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="PAYROLL_DB"), timeout=5)
        with pytest.raises(grpc.RpcError) as raised:
            next(iter(watch))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        overall = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert next(iter(overall)).status == health_pb2.HealthCheckResponse.SERVING
        overall.cancel()
        # Health.List would list every binding.
        if hasattr(health_pb2, "HealthListRequest"):
            with pytest.raises(grpc.RpcError) as raised:
                stub.List(health_pb2.HealthListRequest(), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Reflection lists services, not bindings, but like everything else it needs the token.
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as raised:
            list(reflect.ServerReflectionInfo(iter([ask]), timeout=5))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            reflect.ServerReflectionInfo(iter([ask]), metadata=(("authorization", f"Bearer {token}"),))
        )
        assert answers[0].list_services_response.service
    # With the token, and on the unix socket, a binding's health is there.
    bearer = (("authorization", f"Bearer {token}"),)
    assert health_status(target, "PAYROLL_DB", bearer) == "SERVING"
    assert health_status(target, "NO_SUCH_BINDING", bearer) == "NOT_FOUND"
    assert health_status(d.endpoint, "PAYROLL_DB") == "SERVING"


# --- memory: a refused call is refused before its body is read ---------------------------------


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_refused_calls_do_not_cost_their_size(
    tcp_daemon: tuple[DaemonProcess, str, str], compression: grpc.Compression
) -> None:
    d, target, token = tcp_daemon
    assert d.proc is not None
    big = kv_pb2.KVPutRequest(binding="CACHE", key="big", value=bytes(60 * MIB))
    options = [("grpc.max_send_message_length", 128 * MIB), ("grpc.max_receive_message_length", 128 * MIB)]
    with grpc.insecure_channel(target, options=options, compression=compression) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        # Warm up (first call on the listener, allocator arenas) with the token and a small value.
        stub.Put(
            kv_pb2.KVPutRequest(binding="CACHE", key="k", value=b"v"),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        before = _vm_rss(d.proc.pid)
        peak = before
        calls = [stub.Put.future(big, timeout=60) for _ in range(6)]
        while not all(c.done() for c in calls):
            peak = max(peak, _vm_rss(d.proc.pid))
            time.sleep(0.01)
        for call in calls:
            assert call.code() == grpc.StatusCode.UNAUTHENTICATED, call.details()
        peak = max(peak, _vm_rss(d.proc.pid))
    # Six bodies of 60 MiB read in full were +620 MiB (+410 MiB with gzip); unread, a few MiB: at
    # most a stream's window each (1 MiB, TCP_STREAM_WINDOW). With grpc's BDP probe the windows
    # grew with the timing and this was +5 to +77 MiB.
    assert peak - before < 24 * MIB, f"RSS grew by {(peak - before) / MIB:.0f} MiB"


# --- descriptors: idle TCP peers cannot take the unix socket down ------------------------------


def test_idle_tcp_connections_do_not_starve_the_unix_socket(project: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2400:
        pytest.skip(f"the hard limit on open files ({hard}) is too low for 1100 connections on each side")
    port = _free_port()
    # The daemon starts with the common soft limit of 1024, as from a login shell.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        d = DaemonProcess(project, "--listen", f"127.0.0.1:{port}").start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2400), hard))
    peers: list[socket.socket] = []
    try:
        for _ in range(1100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(H2_PREFACE)  # and nothing more: no settings, no call
            peers.append(s)
        time.sleep(0.5)  # let the daemon accept what it will
        with connect_sync(endpoint=d.endpoint) as env:
            env.CACHE.put("still", "here")
            assert env.CACHE.get("still") == "here"
        assert health_status(d.endpoint) == "SERVING"
        # A peer that never sends its HTTP/2 settings is let go within the handshake timeout.
        closed_by_daemon = _wait_closed(peers[0], timeout=20)
        assert closed_by_daemon, "a preface-only connection was still open after 20 s"
    finally:
        for s in peers:
            s.close()
        d.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _wait_closed(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
