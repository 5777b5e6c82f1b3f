"""Faults in the middle of a stream (issue 17's "slow the bandwidth and reset mid-stream"): the
fault proxy resets the link to the real backend after some bytes of an object's body or a query's
result have passed, on every attempt, or passes them slowly.

What must hold: a body or a result cut short ends in the table's error (never INTERNAL, never a
shorter body or fewer rows that look complete); a put cut short leaves nothing half-written
(the old object stays whole, a new key stays absent); a slow link is only slower; once the fault
is lifted the same calls succeed with no daemon restart, and the daemon's file descriptors are
back to their idle count (nothing leaked by the broken connections).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from bindingd_client import BackendTimeout, BackendUnavailable, Env, connect
from objects_support import MotoServer
from support import MYSQL, POSTGRES, DaemonProcess, SqlServer, daemon_in_process, write_project

from tests.faults import free_port, open_fds, s3_behind_proxy, sample, scrape, settled_fds
from tests.faults.proxy import FaultProxy

MIB = 1024 * 1024
GONE = (BackendUnavailable, BackendTimeout)
# The retry policy of both connections: reads are tried 3 times, each broken the same way.
POLICY = (
    "resiliency: { timeout: 10s, retry: { max_retries: 2, initial_interval: 10ms }, "
    "circuit_breaker: { consecutive_failures: 50, open: 1s } }"
)


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
async def s3(moto_server: MotoServer, tmp_path: Path) -> AsyncIterator[tuple[Env, FaultProxy]]:
    bucket = moto_server.new_bucket()
    proxy = await FaultProxy(moto_server.port).start()
    config = write_project(
        tmp_path, s3_behind_proxy(proxy.port, bucket, POLICY.removeprefix("resiliency: "), timeout=5)
    )
    try:
        async with daemon_in_process(config) as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                yield client, proxy
            finally:
                proxy.restore()
                await client.aclose()
    finally:
        await proxy.close()


async def test_s3_body_cut_mid_stream_is_an_error_and_nothing_half_written(
    s3: tuple[Env, FaultProxy],
) -> None:
    env, proxy = s3
    files = env.FILES
    old, new = os.urandom(6 * MIB), os.urandom(6 * MIB)
    await files.put("doc", old)
    got = await files.get("doc")
    assert got is not None and await got.bytes() == old  # type: ignore[attr-defined]
    idle = open_fds()

    # A download whose link breaks after 1 MiB of the body, on every attempt.
    proxy.reset_after(MIB, "down")
    with pytest.raises(GONE) as failed:
        body = await asyncio.wait_for(files.get("doc"), 30)
        assert body is not None
        await asyncio.wait_for(body.bytes(), 30)  # type: ignore[attr-defined]
    assert "INTERNAL" not in str(failed.value) and "FILES" in str(failed.value)
    assert proxy.resets >= 1

    # An overwrite and a new key whose upload breaks after 1 MiB: neither is visible.
    proxy.restore()
    proxy.reset_after(MIB, "up")
    resets = proxy.resets
    for key in ("doc", "fresh"):
        with pytest.raises(GONE) as failed:
            await asyncio.wait_for(files.put(key, _chunks(new)), 60)
        assert "INTERNAL" not in str(failed.value)
    assert proxy.resets > resets

    proxy.restore()
    head = await files.head("doc")
    assert head is not None and head.size == len(old)
    got = await files.get("doc")
    assert got is not None and hashlib.sha256(await got.bytes()).digest() == hashlib.sha256(old).digest()  # type: ignore[attr-defined]
    assert await files.head("fresh") is None
    # And writes work again.
    await files.put("fresh", new)
    got = await files.get("fresh")
    assert got is not None and await got.bytes() == new  # type: ignore[attr-defined]
    assert await settled_fds(idle) <= idle


async def test_s3_a_slow_link_is_only_slower(s3: tuple[Env, FaultProxy]) -> None:
    env, proxy = s3
    data = os.urandom(MIB)
    await env.FILES.put("slow", data)
    proxy.bytes_per_s = 512 * 1024
    started = time.monotonic()
    got = await env.FILES.get("slow")
    assert got is not None and await got.bytes() == data  # type: ignore[attr-defined]
    assert time.monotonic() - started >= 1.0  # the link was slow: 1 MiB at 0.5 MiB/s
    started = time.monotonic()
    await env.FILES.put("slow-up", data)
    assert time.monotonic() - started >= 1.0
    proxy.bytes_per_s = 0
    got = await env.FILES.get("slow-up")
    assert got is not None and await got.bytes() == data  # type: ignore[attr-defined]


async def test_a_daemon_process_returns_to_its_idle_memory_and_fds_after_broken_streams(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    """`bindingd serve` as its own process (the proxy on this test's loop, which runs whenever
    the test awaits): four downloads and four uploads of 4 MiB broken mid-stream, then its RSS is
    within 32 MiB of idle and its file descriptors back to idle."""
    bucket = moto_server.new_bucket()
    proxy = await FaultProxy(moto_server.port).start()
    config = write_project(
        tmp_path, s3_behind_proxy(proxy.port, bucket, POLICY.removeprefix("resiliency: "), timeout=5)
    )
    daemon = DaemonProcess(config.parent, "--log-level", "warning")
    await asyncio.to_thread(daemon.start)
    try:
        assert daemon.proc is not None
        process = psutil.Process(daemon.proc.pid)
        env = await connect(endpoint=daemon.endpoint)
        try:
            data = os.urandom(4 * MIB)
            for _ in range(3):  # warm: pools, buffers and modules in use before idle is read
                await env.FILES.put("doc", data)
                got = await env.FILES.get("doc")
                assert got is not None and await got.bytes() == data  # type: ignore[attr-defined]
            idle_rss, idle_fds = process.memory_info().rss, process.num_fds()
            for _ in range(4):
                proxy.reset_after(MIB, "down")
                with pytest.raises(GONE):
                    body = await env.FILES.get("doc")
                    assert body is not None
                    await body.bytes()  # type: ignore[attr-defined]
                proxy.restore()
                proxy.reset_after(MIB, "up")
                with pytest.raises(GONE):
                    await env.FILES.put("other", _chunks(data))
                proxy.restore()
            got = await env.FILES.get("doc")
            assert got is not None and await got.bytes() == data  # type: ignore[attr-defined]
            assert await env.FILES.head("other") is None
            deadline = time.monotonic() + 10
            while process.num_fds() > idle_fds and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert process.num_fds() <= idle_fds
            grown = (process.memory_info().rss - idle_rss) / MIB
            assert grown < 32, f"daemon RSS {grown:.0f} MiB over idle after the broken streams"
        finally:
            await env.aclose()
    finally:
        assert await asyncio.to_thread(daemon.stop) == 0
        await proxy.close()


# Per server: its connection entry and about 6 MB of rows.
SQL_SERVERS = {
    "postgres": (
        POSTGRES,
        'kind: postgres, dsn: "postgresql://postgres@127.0.0.1:{port}/{name}"',
        "SELECT x, repeat('r', 100) AS pad FROM generate_series(1, 50000) AS x",
    ),
    "mysql": (
        MYSQL,
        'kind: mysql, dsn: "mysql://root@127.0.0.1:{port}/{name}"',
        "SELECT seq AS x, repeat('r', 100) AS pad FROM seq_1_to_50000",
    ),
}


@pytest.mark.parametrize("kind", SQL_SERVERS)
async def test_sql_result_cut_mid_stream_is_an_error_not_fewer_rows(tmp_path: Path, kind: str) -> None:
    server, connection, rows = SQL_SERVERS[kind]
    assert isinstance(server, SqlServer)
    name = await server.create_database()
    proxy = await FaultProxy(server.port).start()
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          db: {{ {connection.format(port=proxy.port, name=name)}, {POLICY} }}
        bindings:
          DB: {{ type: sql, connection: db, timeout: 10 }}
          RO: {{ type: sql, connection: db, access: read-only, timeout: 10 }}
        """,
    )
    try:
        async with daemon_in_process(config, metrics=f"127.0.0.1:{free_port()}") as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                assert len(await env.DB.prepare(rows).raw()) == 50000
                await env.DB.exec("CREATE TABLE t (x int)")
                idle = open_fds()
                # The pool's figures: open and idle; one held while a large result streams.
                page = await scrape(daemon)
                assert (sample(page, "bindingd_connection_pool_size", connection="db") or 0) >= 1
                assert sample(page, "bindingd_connection_pool_in_use", connection="db") == 0
                assert sample(page, "bindingd_connection_reconnects_total", connection="db") == 0
                streaming = env.RO.prepare(rows).rows()
                await anext(streaming)
                page = await scrape(daemon)
                assert (sample(page, "bindingd_connection_pool_in_use", connection="db") or 0) >= 1
                await streaming.aclose()

                # The link breaks after 1 MiB of the rows, on every attempt.
                proxy.reset_after(MIB, "down")
                for db in (env.DB, env.RO):
                    seen = 0
                    with pytest.raises(GONE) as failed:
                        async for _ in db.prepare(rows).rows():
                            seen += 1
                    assert seen < 50000
                    assert "INTERNAL" not in str(failed.value)
                # A write cut before its answer: the error says so; it is never sent twice.
                proxy.restore()
                proxy.reset_after(0, "down")
                with pytest.raises(GONE):
                    await env.DB.prepare("INSERT INTO t VALUES (1)").run()

                proxy.restore()
                got = await env.RO.prepare(rows).raw()
                assert len(got) == 50000 and got[-1][0] == 50000
                assert await env.DB.prepare("SELECT count(*) AS n FROM t").first("n") in (0, 1)
                assert await settled_fds(idle) <= idle
                # The connections the resets broke were replaced: counted as reconnects.
                page = await scrape(daemon)
                assert (sample(page, "bindingd_connection_reconnects_total", connection="db") or 0) >= 1
            finally:
                await env.aclose()
    finally:
        await proxy.close()
        await server.drop_database(name)
