"""What the local SQLite provider does beyond the SQL conformance suite: a small statement runs
on the event loop and never waits there for a file lock (busy timeout 0), while a statement on
the connection's thread waits for the lock up to its busy timeout. The busy timeout changes
only when one side takes the connection over from the other, so these tests go back and forth."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import Env, connect
from support import daemon_in_process, write_project

HOLD_S = 0.6
TICK_S = 0.02


@pytest.fixture
async def project(tmp_path: Path) -> AsyncIterator[tuple[Env, Path]]:
    config = write_project(
        tmp_path / "project",
        """
        version: 1
        bindings:
          APP_DB: { type: sql }
        """,
    )
    async with daemon_in_process(config) as daemon:
        client = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            await client.APP_DB.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
            yield client, config.parent / ".bindingd" / "state" / "sql" / "APP_DB.sqlite3"
        finally:
            await client.aclose()


def _hold_write_lock(path: Path) -> threading.Event:
    """Another process's writer (another connection here) holds the file's write lock for HOLD_S,
    released by a thread of its own, so a blocked event loop cannot keep it held."""
    taken = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            taken.set()
            threading.Event().wait(HOLD_S)
            other.execute("COMMIT")
        finally:
            other.close()

    threading.Thread(target=hold, daemon=True).start()
    assert taken.wait(5)
    return taken


async def _write_while_locked(env: Env, path: Path, name: str, *, script: bool = False) -> int:
    """Insert `name` while another connection holds the write lock for HOLD_S (as a statement,
    tried inline first, or as a script, which goes to the thread at once); how many times the
    event loop ticked meanwhile."""
    _hold_write_lock(path)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(TICK_S)
            ticks += 1

    ticker = asyncio.get_running_loop().create_task(tick())
    try:
        if script:
            await env.APP_DB.exec(f"INSERT INTO items (name) VALUES ('{name}')")
        else:
            # Refused inline at once (locked), then waits on the thread until the lock is gone.
            result = await env.APP_DB.prepare("INSERT INTO items (name) VALUES (?)").bind(name).run()
            assert result.meta["changes"] == 1
    finally:
        ticker.cancel()
    return ticks


async def test_a_write_waits_for_the_lock_on_the_thread_and_the_loop_keeps_serving(
    project: tuple[Env, Path],
) -> None:
    env, path = project
    for round_ in range(3):
        # Inline first: the loop's busy timeout is 0 from here.
        assert (await env.APP_DB.prepare("SELECT count(*) AS n FROM items").first("n")) == round_
        ticks = await _write_while_locked(env, path, f"r{round_}")
        # The loop went on while the write waited (it would not tick at all if it slept on the
        # lock itself).
        assert ticks >= 5, f"the event loop ticked {ticks} times while the lock was held"
    rows = await env.APP_DB.prepare("SELECT name FROM items ORDER BY id").raw()
    assert rows == [["r0"], ["r1"], ["r2"]]


async def test_a_callers_busy_timeout_pragma_does_not_stick(project: tuple[Env, Path]) -> None:
    env, path = project
    # Run inline: left in force, the loop would sleep up to 3 s on the next lock.
    assert await env.APP_DB.prepare("PRAGMA busy_timeout = 3000").raw() == [[3000]]
    ticks = await _write_while_locked(env, path, "a")
    assert ticks >= 5, f"the event loop ticked {ticks} times while the lock was held"
    # Run on the thread: left in force, the thread's next write would fail at once.
    await env.APP_DB.exec("PRAGMA busy_timeout = 0")
    await _write_while_locked(env, path, "b", script=True)
    # A job queued on the thread right behind the caller's PRAGMA runs with the daemon's own
    # value: the first write holds the thread (it waits for the lock) while the others queue.
    _hold_write_lock(path)
    db = env.APP_DB
    _, _, (seen,) = await asyncio.gather(
        db.batch([db.prepare("INSERT INTO items (name) VALUES ('c')")]),
        db.exec("PRAGMA busy_timeout = 0"),
        db.batch([db.prepare("PRAGMA busy_timeout")]),
    )
    assert seen.results == [{"timeout": 5000}]
    rows = await env.APP_DB.prepare("SELECT name FROM items ORDER BY id").raw()
    assert rows == [["a"], ["b"], ["c"]]
