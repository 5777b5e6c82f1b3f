"""What the redis KV provider does beyond the KV conformance suite: its connection, its failures
and its index, against real Redis servers (the machine's, and throwaway ones started here)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import services
from bindingd_client import AuthenticationFailed, BackendUnavailable, Env, connect
from support import bindingd_cli, daemon_in_process, write_project

REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prefix() -> Iterator[str]:
    """A prefix of this test's own on the machine's Redis, emptied afterwards."""
    services.ensure("redis")
    value = f"bindingd-test:{uuid.uuid4().hex[:12]}:"
    yield value
    if services.is_up("redis"):
        client = redis.Redis.from_url(REDIS_URL)
        for name in client.scan_iter(match=f"{value}*"):
            client.unlink(name)
        client.close()


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A second, throwaway Redis server that requires the password `s3cret-pw`."""
    port = free_port()
    server = subprocess.Popen(
        [
            *(shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret-pw"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(10)


async def _env(socket_path: Path) -> Env:
    return await connect(endpoint=f"unix://{socket_path}")


@pytest.fixture
async def redis_daemon(tmp_path: Path, prefix: str) -> AsyncIterator[tuple[object, Env]]:
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          cache-redis: {{ kind: redis, url: "{REDIS_URL}", timeout: 2 }}
        bindings:
          CACHE: {{ type: kv, connection: cache-redis, prefix: "{prefix}cache:" }}
          SESSIONS: {{ type: kv, connection: cache-redis, prefix: "{prefix}sessions:" }}
          LOCAL: {{ type: kv }}
        """,
    )
    async with daemon_in_process(config) as daemon:
        env = await _env(daemon.socket_path)
        try:
            yield daemon, env
        finally:
            await env.aclose()


async def test_bindings_of_one_connection_share_one_client(redis_daemon: tuple[object, Env]) -> None:
    daemon, env = redis_daemon
    await env.CACHE.put("k", "cache")
    await env.SESSIONS.put("k", "sessions")
    assert (await env.CACHE.get("k"), await env.SESSIONS.get("k")) == ("cache", "sessions")
    assert len(daemon.runtime.connections) == 1  # type: ignore[attr-defined]


async def test_redis_restart_fails_cleanly_then_recovers(redis_daemon: tuple[object, Env]) -> None:
    _, env = redis_daemon
    await env.CACHE.put("before", "1")
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True, timeout=30)
    try:
        assert not services.is_up("redis")
        with pytest.raises(BackendUnavailable) as failure:
            await env.CACHE.get("before")
        message = str(failure.value)
        assert 'binding "CACHE"' in message and "cannot reach redis at 127.0.0.1:6379" in message
        assert failure.value.binding == "CACHE"
        # Other bindings are served meanwhile.
        await env.LOCAL.put("still", "here")
        assert await env.LOCAL.get("still") == "here"
    finally:
        services.ensure("redis")
    # The same daemon, the same pooled client: calls succeed again (this Redis keeps nothing on disk).
    await env.CACHE.put("after", "2")
    assert await env.CACHE.get("after") == "2"
    assert [k.name for k in (await env.CACHE.list()).keys] == ["after"]


async def test_keys_expired_by_redis_leave_the_index(redis_daemon: tuple[object, Env], prefix: str) -> None:
    _, env = redis_daemon
    for name in ("a", "b", "c"):
        await env.CACHE.put(name, name)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # What Redis does when a key's EXPIREAT passes: the hash disappears, the index does not.
        client.delete(f"{prefix}cache:k:b")
        assert client.zscore(f"{prefix}cache:index", "b") == 0
        assert [k.name for k in (await env.CACHE.list()).keys] == ["a", "c"]
        assert client.zscore(f"{prefix}cache:index", "b") is None
        assert await env.CACHE.get("b") is None
    finally:
        client.close()


async def test_wrong_password_is_auth_failed_and_never_shown(tmp_path: Path, password_redis: int) -> None:
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          secured: {{ kind: redis, url: "redis://:not-the-pw@127.0.0.1:{password_redis}/0" }}
          right: {{ kind: redis, url: "redis://:s3cret-pw@127.0.0.1:{password_redis}/0" }}
        bindings:
          CACHE: {{ type: kv, connection: secured }}
          GOOD: {{ type: kv, connection: right }}
        """,
    )
    async with daemon_in_process(config) as daemon:
        env = await _env(daemon.socket_path)
        try:
            with pytest.raises(AuthenticationFailed) as failure:
                await env.CACHE.get("x")
            message = str(failure.value)
            assert 'connection "secured"' in message and 'binding "CACHE"' in message
            assert "not-the-pw" not in message and "s3cret" not in message
            await env.GOOD.put("x", "y")
            assert await env.GOOD.get("x") == "y"
        finally:
            await env.aclose()


async def test_unreachable_redis_is_backend_unavailable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          gone: {{ kind: redis, url: "redis://127.0.0.1:{port}/0", timeout: 1 }}
        bindings:
          CACHE: {{ type: kv, connection: gone }}
          LOCAL: {{ type: kv }}
        """,
    )
    async with daemon_in_process(config) as daemon:
        env = await _env(daemon.socket_path)
        try:
            with pytest.raises(BackendUnavailable, match=f"cannot reach redis at 127.0.0.1:{port}"):
                await asyncio.wait_for(env.CACHE.put("x", "y"), 10)
            await env.LOCAL.put("x", "y")
            assert await env.LOCAL.get("x") == "y"
        finally:
            await env.aclose()


def test_check_probes_each_redis_binding(tmp_path: Path, prefix: str) -> None:
    port = free_port()
    write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          up: {{ kind: redis, url: "redis://:pw-in-url@127.0.0.1:6379/0" }}
          gone: {{ kind: redis, url: "redis://:pw-in-url@127.0.0.1:{port}/0", timeout: 1 }}
        bindings:
          CACHE: {{ type: kv, connection: up, prefix: "{prefix}" }}
          DEAD: {{ type: kv, connection: gone }}
        """,
    )
    result = bindingd_cli("check", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok") and "CACHE" in line and "at 127.0.0.1:6379" in line for line in lines), (
        lines
    )
    assert any(
        line.startswith("FAIL") and "DEAD" in line and f"127.0.0.1:{port}: connection refused" in line
        for line in lines
    ), lines
    assert "pw-in-url" not in result.stdout + result.stderr


async def test_a_burst_beyond_the_pool_queues_instead_of_failing(tmp_path: Path, prefix: str) -> None:
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          small: {{ kind: redis, url: "{REDIS_URL}", max_connections: 2 }}
        bindings:
          CACHE: {{ type: kv, connection: small, prefix: "{prefix}" }}
        """,
    )
    async with daemon_in_process(config) as daemon:
        env = await _env(daemon.socket_path)
        try:
            # Values big enough that Redis calls overlap in the daemon: 2 connections for 100 calls.
            values = [str(i) * 100_000 for i in range(100)]
            await asyncio.gather(*(env.CACHE.put(f"k{i}", v) for i, v in enumerate(values)))
            got = await asyncio.gather(*(env.CACHE.get(f"k{i}") for i in range(100)))
            assert got == values
            assert len((await env.CACHE.list()).keys) == 100
        finally:
            await env.aclose()
