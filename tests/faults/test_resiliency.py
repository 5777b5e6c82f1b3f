"""Connections' resiliency policies against real backends behind a fault proxy of the test's own.

Redis and PostgreSQL themselves keep running (they are shared); the proxy in front of them is
cut, frozen or slowed instead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from bindingd_client import BackendTimeout, BackendUnavailable, Env, PermissionDenied, connect
from support import POSTGRES, bindingd_cli, daemon_in_process, write_project

from bindingd.server.app import Daemon
from tests.faults import free_port, open_fds, sample, scrape, settled_fds
from tests.faults.proxy import FaultProxy

REDIS_PORT = 6379
OPEN_S = 1.0


def policy(max_retries: int = 2) -> str:
    return (
        "resiliency: { timeout: { read: 800ms, write: 800ms }, "
        f"retry: {{ max_retries: {max_retries}, initial_interval: 10ms, max_interval: 40ms }}, "
        f"circuit_breaker: {{ consecutive_failures: 4, open: {OPEN_S}s }} }}"
    )


# The PostgreSQL provider itself tries a connection 4 times over 3 s before it says the server
# is unavailable; each retry of the policy does that again.
PG_ATTEMPT_S = 3.0


@pytest.fixture
async def redis_env(tmp_path: Path) -> AsyncIterator[tuple[Env, FaultProxy, Daemon]]:
    proxy = await FaultProxy(REDIS_PORT).start()
    prefix = f"bindingd-faults-{uuid.uuid4().hex[:8]}:"
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          cache:
            kind: redis
            url: "redis://127.0.0.1:{proxy.port}/0"
            timeout: 30
            {policy()}
        bindings:
          CACHE: {{ type: kv, connection: cache, prefix: "{prefix}" }}
        """,
    )
    try:
        async with daemon_in_process(config, metrics=f"127.0.0.1:{free_port()}") as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                yield client, proxy, daemon
            finally:
                proxy.thaw()
                proxy.restore()
                await client.aclose()
    finally:
        await proxy.close()
        direct = redis.Redis(port=REDIS_PORT)
        for name in direct.scan_iter(match=f"{prefix}*"):
            direct.unlink(name)
        direct.close()


async def _fails(call: object, error: type[Exception], within: float) -> tuple[Exception, float]:
    started = time.monotonic()
    with pytest.raises(error) as failed:
        await asyncio.wait_for(call, within + 10)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert elapsed < within, f"answered after {elapsed:.2f}s: {failed.value}"
    return failed.value, elapsed


async def test_redis_cut_retries_reads_not_writes_then_opens_and_recovers(
    redis_env: tuple[Env, FaultProxy, Daemon],
) -> None:
    env, proxy, daemon = redis_env
    await env.CACHE.put("k", "v")
    assert await env.CACHE.get("k") == "v"
    breaker = daemon.runtime.breakers.by_name["cache"]
    idle = open_fds()

    proxy.cut()
    # A write is tried once: its outcome is unknown, so it is never sent twice.
    await _fails(env.CACHE.put("k", "w"), BackendUnavailable, 2.0)
    assert breaker.retries == 0
    # A read is retried (twice) before it fails.
    err, _ = await _fails(env.CACHE.get("k"), BackendUnavailable, 2.0)
    assert breaker.retries == 2
    # 1 + 3 attempts failed in a row: the breaker (4) is open, and answers at once.
    assert breaker.state == "open"
    err, elapsed = await _fails(env.CACHE.get("k"), BackendUnavailable, 0.5)
    assert elapsed < 0.1
    message = str(err)
    assert 'connection "cache" (redis)' in message and "tries it again in" in message, message
    assert '"CACHE"' in message  # the binding and env, as every error
    accepted = proxy.accepted
    await _fails(env.CACHE.get("k"), BackendUnavailable, 0.5)
    assert proxy.accepted == accepted  # open: the backend was not tried
    text = await scrape(daemon)
    assert 'bindingd_circuit_state{connection="cache",state="open"} 1.0' in text
    assert 'bindingd_backend_retries_total{connection="cache"} 2.0' in text
    assert 'bindingd_circuit_opened_total{connection="cache"} 1.0' in text
    # 1 write + 3 read attempts failed, each counted by its reason.
    assert 'bindingd_backend_errors_total{connection="cache",reason="BACKEND_UNAVAILABLE"} 4.0' in text
    # The cut sockets are gone from redis-py's pool; none is in use.
    assert sample(text, "bindingd_connection_pool_in_use", connection="cache") == 0

    proxy.restore()
    await asyncio.sleep(OPEN_S + 0.1)
    assert await env.CACHE.get("k") == "v"  # the half-open probe succeeds: closed again
    assert breaker.state == "closed"
    assert await env.CACHE.get("k") == "v"
    assert await settled_fds(idle) <= idle  # the cut sockets were closed, not leaked


async def test_redis_black_hole_ends_in_backend_timeout_within_the_policy(
    redis_env: tuple[Env, FaultProxy, Daemon],
) -> None:
    env, proxy, daemon = redis_env
    await env.CACHE.put("k", "v")
    proxy.freeze()
    # A timed-out read is not tried again: one attempt of 0.8 s.
    err, _ = await _fails(env.CACHE.get("k"), BackendTimeout, 0.8 + 0.5)
    assert 'connection "cache" (redis) did not answer within 0.8s' in str(err)
    assert "resiliency.timeout.read" in str(err)
    await _fails(env.CACHE.put("k", "w"), BackendTimeout, 0.8 + 0.5)
    for _ in range(2):
        await _fails(env.CACHE.get("k"), BackendTimeout, 0.8 + 0.5)
    assert daemon.runtime.breakers.by_name["cache"].retries == 0
    # 4 timeouts in a row: open, answering at once.
    await _fails(env.CACHE.get("k"), BackendUnavailable, 0.1)
    proxy.thaw()
    # Once its open time is over, calls succeed again.
    await asyncio.sleep(OPEN_S + 0.1)
    deadline = time.monotonic() + 10
    while True:
        try:
            value = await env.CACHE.get("k")
            break
        except (BackendUnavailable, BackendTimeout):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert value in ("v", "w")  # the frozen put may have landed once the network came back
    assert daemon.runtime.breakers.by_name["cache"].timeouts >= 4


async def test_redis_latency_under_the_timeout_is_only_slower(
    redis_env: tuple[Env, FaultProxy, Daemon],
) -> None:
    env, proxy, _ = redis_env
    await env.CACHE.put("k", "v")
    proxy.latency = 0.1
    started = time.monotonic()
    assert await env.CACHE.get("k") == "v"
    assert time.monotonic() - started >= 0.2  # request and answer each delayed


async def test_postgres_read_only_queries_are_retried(tmp_path: Path) -> None:
    name = await POSTGRES.create_database()
    proxy = await FaultProxy(POSTGRES.port).start()
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          db:
            kind: postgres
            dsn: "postgresql://postgres@127.0.0.1:{proxy.port}/{name}"
            {policy(max_retries=1)}
        bindings:
          DB: {{ type: sql, connection: db, access: read-only, timeout: 2 }}
        """,
    )
    try:
        async with daemon_in_process(config) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                db = env.DB
                assert await db.prepare("SELECT 1 AS v").first("v") == 1
                breaker = daemon.runtime.breakers.by_name["db"]
                with pytest.raises(PermissionDenied):  # refused by the backend: not a failure
                    await db.exec("CREATE TABLE t (x int)")
                assert breaker.failures == 0

                proxy.cut()
                await _fails(
                    db.prepare("SELECT 2 AS v").first("v"), BackendUnavailable, 2 * PG_ATTEMPT_S + 1.5
                )
                assert breaker.retries == 1
                proxy.restore()
                # Within the breaker's threshold (2 failures < 4): the next call goes through.
                assert await db.prepare("SELECT 3 AS v").first("v") == 3
                assert breaker.state == "closed"
            finally:
                await env.aclose()
    finally:
        await proxy.close()
        await POSTGRES.drop_database(name)


def test_check_shows_each_connections_policy_and_bad_values_name_their_line(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        """
        version: 1
        connections:
          fast:
            kind: redis
            url: "redis://127.0.0.1:6379/0"
            resiliency: { timeout: 2s, retry: off, circuit_breaker: { open: 30s } }
          plain: { kind: redis, url: "redis://127.0.0.1:6379/0" }
        bindings:
          A: { type: kv, connection: fast }
          B: { type: kv, connection: plain }
        """,
    )
    out = bindingd_cli("check", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "connection fast (redis): timeout read 2s, write 2s, consume 2s; retry off; "
        "circuit breaker open 30s after 5 failures in a row" in out.stdout
    ), out.stdout
    assert (
        "connection plain (redis): timeout read 30s, write 30s, consume 30s; retry 2 for idempotent ops, "
        "backoff 50ms..1s with jitter; circuit breaker open 10s after 5 failures in a row" in out.stdout
    ), out.stdout

    (tmp_path / "bindingd.yaml").write_text(
        "version: 1\n"
        "connections:\n"
        "  c:\n"
        "    kind: redis\n"
        '    url: "redis://127.0.0.1:6379/0"\n'
        "    resiliency:\n"
        "      retry:\n"
        "        max_retries: 2\n"
        "        initial_interval: soon\n"
        "bindings:\n"
        "  A: { type: kv, connection: c }\n"
    )
    out = bindingd_cli("check", cwd=tmp_path)
    assert out.returncode != 0
    assert "bindingd.yaml:9" in out.stderr, out.stderr
    assert "retry.initial_interval: expected a duration like 500ms, 5s or 1m, got 'soon'" in out.stderr
