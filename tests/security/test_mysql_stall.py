"""A MySQL server whose network freezes: every call still ends within its timeout and a little.

Between the daemon and the real MariaDB server sits a TCP forwarder of the test's own that can
be frozen: it stops passing bytes either way but keeps every socket open, as a stalled network
does (no reset, no EOF). The daemon must answer BackendTimeout in time (the statement's own
connection never answers, nor does the KILL QUERY's), drop the stuck connection instead of
pooling it, and serve again once the network is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import BackendTimeout, Env, connect
from support import MYSQL, daemon_in_process, write_project

TIMEOUT_S = 2
# What the daemon may take past the binding's timeout, all told.
MARGIN_S = 2.0


class FreezableProxy:
    """Forwards 127.0.0.1:<port> to MariaDB; `freeze()` holds every byte until `thaw()`."""

    def __init__(self) -> None:
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server: asyncio.Server | None = None
        self.port = 0
        # Per proxied connection: whether the daemon's side has closed it.
        self.closed_by_daemon: dict[int, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.closed_by_daemon)
        self.closed_by_daemon[number] = False
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 3306)
        except OSError:
            writer.close()
            return
        down = asyncio.create_task(self._pump(up_reader, writer))
        self._tasks.add(down)
        try:
            await self._pump(reader, up_writer)
        finally:
            self.closed_by_daemon[number] = True
            down.cancel()
            up_writer.close()
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self.thawed.wait()
                data = await reader.read(65536)
                if not data:
                    return
                await self.thawed.wait()  # frozen: the bytes are held, the sockets stay open
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        self.thaw()
        for task in self._tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def stalled_env(tmp_path: Path) -> AsyncIterator[tuple[Env, FreezableProxy]]:
    name = await MYSQL.create_database()
    proxy = FreezableProxy()
    await proxy.start()
    config = write_project(
        tmp_path / "project",
        f"""
        version: 1
        connections:
          db: {{ kind: mysql, dsn: "mysql://root@127.0.0.1:{proxy.port}/{name}", max_size: 4 }}
        bindings:
          SLOW_DB: {{ type: sql, connection: db, timeout: {TIMEOUT_S} }}
        """,
    )
    try:
        async with daemon_in_process(config) as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                yield client, proxy
            finally:
                proxy.thaw()
                await client.aclose()
    finally:
        await proxy.close()
        await MYSQL.drop_database(name)


async def timed_out(call: object) -> float:
    """Seconds until `call` failed with BackendTimeout naming the binding and env."""
    started = time.monotonic()
    with pytest.raises(BackendTimeout) as failed:
        # Bounded here too, so a daemon that never answers fails the test instead of hanging it.
        await asyncio.wait_for(call, TIMEOUT_S + MARGIN_S + 10)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert failed.value.reason == "BACKEND_TIMEOUT"
    assert '"SLOW_DB"' in str(failed.value) and "env" in str(failed.value), str(failed.value)
    assert elapsed < TIMEOUT_S + MARGIN_S, f"answered after {elapsed:.1f}s: {failed.value}"
    return elapsed


async def test_a_frozen_network_ends_in_backend_timeout_within_the_timeout(
    stalled_env: tuple[Env, FreezableProxy],
) -> None:
    env, proxy = stalled_env
    db = env.SLOW_DB
    assert await db.prepare("SELECT 1 AS v").first("v") == 1  # a pooled connection, idle

    # Mid-statement: the query reached the server, its answer never comes back.
    async def freeze_soon() -> None:
        await asyncio.sleep(0.5)
        proxy.freeze()

    freezer = asyncio.create_task(freeze_soon())
    await timed_out(db.prepare("SELECT SLEEP(1.5) AS v").first("v"))
    await freezer

    # Still frozen: a call that opens a new connection (its handshake never answers).
    await timed_out(db.prepare("SELECT 2 AS v").first("v"))
    # And every call shape.
    await timed_out(db.batch([db.prepare("SELECT 3 AS v")]))
    await timed_out(db.exec("SELECT 4"))

    proxy.thaw()
    assert await db.prepare("SELECT 5 AS v").first("v") == 5

    # Frozen while a connection waits in the pool: its first statement never answers.
    proxy.freeze()
    await timed_out(db.prepare("SELECT 6 AS v").first("v"))
    proxy.thaw()
    assert await db.prepare("SELECT 7 AS v").first("v") == 7

    # The stuck connections were closed by the daemon, not kept: the proxy saw every connection
    # but the one now pooled end (the background KILL QUERYs' too, each bounded).
    deadline = time.monotonic() + 15
    while sum(not closed for closed in proxy.closed_by_daemon.values()) > 1:
        assert time.monotonic() < deadline, proxy.closed_by_daemon
        await asyncio.sleep(0.2)
