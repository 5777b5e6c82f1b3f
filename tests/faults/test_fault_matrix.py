"""Every backend under every fault of the proxy (issue 17's matrix): latency and a slow link
only slow a call down; a reset in the middle of an answer, a cut and a black hole end it in
BackendUnavailable or BackendTimeout within the policy's time (never INTERNAL); once the fault is
lifted the same call succeeds, with no daemon restart, and the daemon's file descriptors are back
to their idle count. The deeper checks per backend (nothing acked lost, nothing half-written)
are in the other files here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bindingd_client import BackendTimeout, BackendUnavailable, Env, connect
from conformance.backends import nats_cleanup, rabbit_cleanup
from support import MYSQL, POSTGRES, daemon_in_process, write_project

from tests.faults import open_fds, s3_behind_proxy, settled_fds
from tests.faults.proxy import FaultProxy

GONE = (BackendUnavailable, BackendTimeout)
TIMEOUT_S = 2.0
# Each call under a fault ends within the policy's timeout, its one retry (reads) and slack.
WITHIN_S = 3 * TIMEOUT_S + 3.0
POLICY = (
    f"resiliency: {{ timeout: {TIMEOUT_S}s, retry: {{ max_retries: 1, initial_interval: 10ms }}, "
    "circuit_breaker: off }"
)


@dataclass(frozen=True)
class Case:
    port: int
    # The connection entry and the binding X on it (YAML), given the proxy's port and a name.
    config: Callable[[int, str], str]
    # A call on binding X that reaches the backend and checks its answer.
    call: Callable[[Env], Awaitable[Any]]
    # The call made under a black hole, if not `call`.
    frozen_call: Callable[[Env], Awaitable[Any]] | None = None


async def _kv(env: Env) -> None:
    await env.X.put("k", "v")
    assert await env.X.get("k") == "v"


async def _sql(env: Env) -> None:
    assert await env.X.prepare("SELECT 1 AS v").first("v") == 1


async def _objects(env: Env) -> None:
    await env.X.put("o", b"body" * 1000)
    got = await env.X.get("o")
    assert got is not None and await got.bytes() == b"body" * 1000  # type: ignore[attr-defined]


async def _objects_read(env: Env) -> None:
    await env.X.head("o")


async def _queue(env: Env) -> None:
    await env.X.send({"n": 1})


CASES = {
    "redis": Case(
        6379,
        lambda port, name: (
            f'c: {{ kind: redis, url: "redis://127.0.0.1:{port}/0", {POLICY} }}\n'
            f'  X: {{ type: kv, connection: c, prefix: "faults-{name}:" }}'
        ),
        _kv,
    ),
    "postgres": Case(
        5432,
        lambda port, name: (
            f'c: {{ kind: postgres, dsn: "postgresql://postgres@127.0.0.1:{port}/postgres", {POLICY} }}\n'
            "  X: { type: sql, connection: c, timeout: 1 }"
        ),
        _sql,
    ),
    "mysql": Case(
        3306,
        lambda port, name: (
            f'c: {{ kind: mysql, dsn: "mysql://root@127.0.0.1:{port}/mysql", {POLICY} }}\n'
            "  X: { type: sql, connection: c, timeout: 1 }"
        ),
        _sql,
    ),
    "nats": Case(
        4222,
        lambda port, name: (
            f'c: {{ kind: nats, url: "nats://127.0.0.1:{port}", {POLICY} }}\n'
            f"  X: {{ type: queue, connection: c, stream: {name} }}"
        ),
        _queue,
    ),
    "rabbitmq": Case(
        5672,
        lambda port, name: (
            f'c: {{ kind: rabbitmq, url: "amqp://guest:guest@127.0.0.1:{port}/", {POLICY} }}\n'
            f"  X: {{ type: queue, connection: c, queue: {name} }}"
        ),
        _queue,
    ),
}


def _config(case: Case, port: int, name: str) -> str:
    connection, binding = case.config(port, name).split("\n")
    return f"version: 1\nconnections:\n  {connection}\nbindings:\n{binding}\n"


async def _fails_in_time(call: Awaitable[Any]) -> None:
    started = time.monotonic()
    with pytest.raises(GONE) as failed:
        await asyncio.wait_for(call, WITHIN_S + 30)
    elapsed = time.monotonic() - started
    assert elapsed < WITHIN_S, f"answered after {elapsed:.1f}s: {failed.value}"
    assert "INTERNAL" not in str(failed.value) and '"X"' in str(failed.value)


async def _back(call: Callable[[], Awaitable[Any]], within: float = 30.0) -> None:
    started = time.monotonic()
    while True:
        try:
            await call()
            return
        except GONE:
            assert time.monotonic() - started < within, "calls did not come back after the fault"
            await asyncio.sleep(0.3)


async def _run_matrix(case: Case, env: Env, proxy: FaultProxy) -> None:
    await case.call(env)
    idle = open_fds()
    # Slow, not broken: the call succeeds.
    proxy.latency = 0.05
    await case.call(env)
    proxy.latency = 0.0
    proxy.bytes_per_s = 64 * 1024
    await case.call(env)
    proxy.bytes_per_s = 0
    # Broken: each ends in the table's error in time, then the call comes back.
    faults: list[tuple[Callable[[], None], Callable[[], None]]] = [
        (lambda: proxy.reset_after(0, "down"), proxy.restore),
        (proxy.cut, proxy.restore),
        (proxy.freeze, proxy.thaw),
    ]
    for start, lift in faults:
        start()
        # Under a black hole, only what the policy times: an object upload is not (it lasts as
        # long as the caller sends), so S3 gets a read there.
        frozen = start == proxy.freeze and case.frozen_call is not None
        await _fails_in_time((case.frozen_call if frozen else case.call)(env))  # type: ignore[misc]
        lift()
        await _back(lambda: case.call(env))
    assert await settled_fds(idle) <= idle


@pytest.mark.parametrize("backend", list(CASES))
async def test_every_fault_on_every_backend(backend: str, tmp_path: Path) -> None:
    case = CASES[backend]
    name = f"faults_{uuid.uuid4().hex[:10]}"
    proxy = await FaultProxy(case.port).start()
    config = write_project(tmp_path, _config(case, proxy.port, name))
    try:
        async with daemon_in_process(config) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await _run_matrix(case, env, proxy)
            finally:
                await env.aclose()
    finally:
        proxy.thaw()
        proxy.restore()
        await proxy.close()
        if backend == "nats":
            await asyncio.to_thread(nats_cleanup, [name])
        elif backend == "rabbitmq":
            await asyncio.to_thread(rabbit_cleanup, [name])


async def test_every_fault_on_s3(moto_server: Any, tmp_path: Path) -> None:
    bucket = moto_server.new_bucket()
    proxy = await FaultProxy(moto_server.port).start()
    config = write_project(
        tmp_path,
        s3_behind_proxy(
            proxy.port,
            bucket,
            POLICY.removeprefix("resiliency: "),
            timeout=TIMEOUT_S,
            connection="c",
            binding="X",
        ),
    )
    try:
        async with daemon_in_process(config) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await _run_matrix(
                    Case(moto_server.port, lambda p, n: "", _objects, _objects_read), env, proxy
                )
            finally:
                await env.aclose()
    finally:
        proxy.thaw()
        proxy.restore()
        await proxy.close()


# MYSQL and POSTGRES are imported for their servers being the ones the cases reach.
assert (POSTGRES.port, MYSQL.port) == (CASES["postgres"].port, CASES["mysql"].port)
