"""Two gateway instances behind a real load balancer (HAProxy, from Debian's packages), sharing
one PostgreSQL state store: a developer's calls go on while one instance stops mid-run (issue 14,
"Several instances").

HAProxy terminates TLS with the gateway's certificate and balances calls (HTTP/2, per request)
over TLS to the two instances, as a team would put it in front of them; the instances are real
`Gateway`s served by the test's event loop, the daemon a real daemon in this process.

Two ways an instance stops: taken out of the load balancer first, then drained (the README's
procedure: no call fails), or drained while the load balancer still sends it calls (its check
only connects): what it was answering completes, the reads it cancelled unanswered are sent
again by the daemon, and a write it cancelled unanswered fails saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from bindingd_client import Env, connect
from bindingd_client.errors import BindingError as ClientError
from conformance.gateway_backend import credentials, developer_config, serving_gateway
from support import POSTGRES, daemon_in_process, write_project

from bindingd.server.forward import Forwarder, _never_left

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")

HAPROXY_CFG = """\
global
    log stdout format raw local0 warning
    stats socket {admin} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend gateways
    bind 127.0.0.1:{port} ssl crt {pem} alpn h2
    default_backend instances
backend instances
    balance roundrobin
    default-server ssl verify required ca-file {ca} sni str(localhost) alpn h2 check inter 500ms fall 1
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with POSTGRES.database() as name:
        yield POSTGRES.dsn(name)


def haproxy_admin(tmp_path: Path, command: str) -> str:
    """One command on HAProxy's runtime API (its admin socket), as an operator runs it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(tmp_path / "haproxy.sock"))
        s.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return answer.decode()


@pytest.fixture
def haproxy_for(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(pki: Path, a: int, b: int) -> int:
        port = _free_port()
        pem = tmp_path / "haproxy.pem"
        pem.write_bytes((pki / "server.pem").read_bytes() + (pki / "server.key").read_bytes())
        pem.chmod(0o600)
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            HAPROXY_CFG.format(
                admin=tmp_path / "haproxy.sock", port=port, pem=pem, ca=pki / "ca.pem", a=a, b=b
            )
        )
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (tmp_path / "haproxy.log").open("wb")
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
                time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@dataclass
class Run:
    calls: int = 0
    failures: list[str] = field(default_factory=list)  # "get: <error>" / "put: <error>"
    served_by_a: int = 0
    served_by_b: int = 0
    cancelled_by_a: int = 0  # calls A's handlers had started and did not answer (audit status)


async def _stop_one_mid_run(
    dsn: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    haproxy_for: Any,
    *,
    workers: int,
    pause_s: float,
    take_out_first: bool,
) -> Run:
    """Calls from `workers` workers (a put in five, the rest gets) through HAProxy for 6 s;
    instance A drains and stops after 2 s, as SIGTERM does (grace 3 s), taken out of HAProxy
    first when `take_out_first`."""
    root = tmp_path / "team"
    inner = write_project(
        root,
        "version: 1\nbindings:\n  CACHE: { type: kv, connection: pg }\n"
        f'connections:\n  pg: {{ kind: postgres, dsn: "{dsn}" }}\n',
    )
    state = {"kind": "postgres", "dsn": dsn}
    run = Run()
    async with (
        serving_gateway(root, inner, request, state=state, name="a.yaml") as a,
        serving_gateway(root, inner, request, state=state, name="b.yaml") as b,
    ):
        port = haproxy_for(credentials(request).pki, a.port, b.port)

        # The developer's config names the load balancer, not an instance.
        laptop = developer_config(tmp_path / "laptop", a, request, port=port)
        async with daemon_in_process(laptop) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await env.CACHE.put("k", "v")
                stop_at = time.monotonic() + 6.0
                stopped = asyncio.Event()

                async def worker(n: int) -> None:
                    while time.monotonic() < stop_at:
                        what = "put" if run.calls % 5 == 0 else "get"
                        try:
                            if what == "put":
                                await env.CACHE.put(f"w{n}", str(run.calls))
                            else:
                                assert await env.CACHE.get("k") == "v"
                            run.calls += 1
                        except ClientError as e:
                            run.failures.append(f"{what}: {type(e).__name__}: {e}")
                        await asyncio.sleep(pause_s)

                async def stop_one() -> None:
                    await asyncio.sleep(2.0)
                    if take_out_first:
                        # What an operator runs before stopping an instance: HAProxy sends it
                        # no new call, and lets the ones it is answering finish.
                        assert haproxy_admin(tmp_path, "disable server instances/a").strip() == ""
                    a.grace_s = 3.0
                    await a.shutdown()
                    stopped.set()

                await asyncio.gather(*(worker(n) for n in range(workers)), stop_one())
                assert stopped.is_set()
            finally:
                await env.aclose()
    # Counted once both instances have stopped, so that their last audit lines are written.
    assert a.audit.path is not None and b.audit.path is not None
    lines_of_a = a.audit.path.read_text()
    run.served_by_a = lines_of_a.count('"binding":"CACHE"')
    run.served_by_b = b.audit.path.read_text().count('"binding":"CACHE"')
    run.cancelled_by_a = lines_of_a.count('"status":"CANCELLED"')
    return run


async def test_calls_go_on_while_one_instance_stops_behind_haproxy(
    dsn: str, tmp_path: Path, request: pytest.FixtureRequest, haproxy_for: Any
) -> None:
    run = await _stop_one_mid_run(
        dsn, tmp_path, request, haproxy_for, workers=4, pause_s=0.01, take_out_first=True
    )
    assert run.calls > 100
    assert run.failures == [], run.failures[:5]
    # Both instances served calls (HAProxy balanced them), and B went on alone.
    assert run.served_by_a > 10 and run.served_by_b > run.served_by_a, run
    assert run.cancelled_by_a == 0, run


async def test_an_instance_stops_while_haproxy_still_sends_it_calls(
    dsn: str, tmp_path: Path, request: pytest.FixtureRequest, haproxy_for: Any
) -> None:
    """HAProxy's check only connects, so it sends A calls until A's listener closes. A serves
    them through its drain's lame-duck part, then stops with the rest of its grace period for
    the calls it is answering: it cancels none of them (before, it waited for a pause in the
    calls that never came, then stopped with no grace left and cancelled them all). The calls
    that reached A just as it stopped, before a handler, end CANCELLED with nothing applied: the
    daemon sends the reads among them again; a write fails, and says what may have happened."""
    run = await _stop_one_mid_run(
        dsn, tmp_path, request, haproxy_for, workers=16, pause_s=0.0, take_out_first=False
    )
    assert run.calls > 500 and run.served_by_a > 10 and run.served_by_b > run.served_by_a, run
    assert run.cancelled_by_a == 0, run
    for failure in run.failures:
        assert failure.startswith("put: BackendUnavailable:"), failure
        assert "may or may not have been applied" in failure, failure


def test_the_daemon_resends_only_reads_whose_connection_failed_or_went_unanswered() -> None:
    forwarder = Forwarder.__new__(Forwarder)
    from bindingd.gateway.server import METHOD_ACTIONS

    forwarder.actions = METHOD_ACTIONS
    reset = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "reset"
    )
    answered = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", b"x")),
        "a bindingd error from the gateway",
    )
    denied = grpc.aio.AioRpcError(grpc.StatusCode.PERMISSION_DENIED, grpc.aio.Metadata(), grpc.aio.Metadata())
    # A stopping instance cancels the calls that reached it but not yet a handler.
    unanswered = grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert forwarder._may_resend("/bindingd.v1.KV/Get", reset)
    assert forwarder._may_resend("/bindingd.v1.Objects/Get", reset)
    assert forwarder._may_resend("/bindingd.v1.KV/Get", unanswered)
    assert not forwarder._may_resend("/bindingd.v1.KV/Get", answered)  # the gateway said why
    assert not forwarder._may_resend("/bindingd.v1.KV/Get", denied)
    for write in ("/bindingd.v1.KV/Put", "/bindingd.v1.Queue/Send", "/bindingd.v1.Database/Query"):
        assert not forwarder._may_resend(write, reset), write
        assert not forwarder._may_resend(write, unanswered), write
    # A write that failed so says it may have been applied, unless grpc says it never left.
    never_sent = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
    )
    assert _never_left(never_sent) and not _never_left(reset) and not _never_left(unanswered)


@contextlib.asynccontextmanager
async def _through_a_proxy(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Env, Any]]:
    """A worker's env whose daemon reaches a gateway (KV binding CACHE) through a FaultProxy
    the test controls, standing for the network between laptop and gateway."""
    from faults.proxy import FaultProxy

    root = tmp_path / "team"
    inner = write_project(root, "version: 1\nbindings:\n  CACHE: { type: kv }\n")
    async with serving_gateway(root, inner, request) as gateway:
        proxy = await FaultProxy(gateway.port).start()
        laptop = developer_config(tmp_path / "laptop", gateway, request, port=proxy.port)
        async with daemon_in_process(laptop) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                yield env, proxy
            finally:
                await env.aclose()


async def _get_once_calls_come_back(env: Env, key: str) -> Any:
    """CACHE's value of `key`, asked until the daemon's channel has reconnected (at most 15 s)."""
    from bindingd_client import BackendUnavailable

    started = time.monotonic()
    while True:
        try:
            return await env.CACHE.get(key)
        except BackendUnavailable:
            assert time.monotonic() - started < 15, "calls did not come back"
            await asyncio.sleep(0.2)


async def test_the_network_to_the_gateway_cut_then_restored(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A proxy the test cuts stands for the network between laptop and gateway: calls fail
    BACKEND_UNAVAILABLE naming the gateway (never a raw gRPC message), and come back by
    themselves once it is restored, on the same daemon and session."""
    from bindingd_client import BackendUnavailable

    async with _through_a_proxy(tmp_path, request) as (env, proxy):
        await env.CACHE.put("k", "v")
        proxy.cut()
        with pytest.raises(BackendUnavailable) as cut:
            await env.CACHE.put("k", "lost?")
        assert f"localhost:{proxy.port}" in str(cut.value) and "gateway" in str(cut.value)
        assert "StatusCode" not in str(cut.value) and "grpc" not in str(cut.value).lower()
        proxy.restore()
        value = await _get_once_calls_come_back(env, "k")
        assert value in ("v", "lost?")  # a write cut in flight may or may not have landed
        await env.CACHE.put("k", "after")
        assert await env.CACHE.get("k") == "after"


async def test_a_write_whose_answer_was_lost_says_it_may_have_been_applied(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The connection is reset as the gateway's answer comes back: the put left, and may have
    been applied. The daemon does not send it again, and its error says so (a read would be
    sent again)."""
    from bindingd_client import BackendUnavailable

    async with _through_a_proxy(tmp_path, request) as (env, proxy):
        await env.CACHE.put("k", "before")
        proxy.reset_after(0, "down")
        with pytest.raises(BackendUnavailable) as lost:
            await env.CACHE.put("k", "after")
        message = str(lost.value)
        assert "may or may not have been applied" in message, message
        assert f"localhost:{proxy.port}" in message and "grpc" not in message.lower(), message
        proxy.restore()
        assert await _get_once_calls_come_back(env, "k") in ("before", "after")
