"""aiomysql's private API as bindingd/providers/mysql/driver.py calls it, and its public fallbacks.

The first tests fail when an aiomysql upgrade moves or reshapes an entry point driver.py calls:
the upgrade is a red test here rather than a slower, or less safe, production. The others run
the machine's real MariaDB server through both ways, the fallbacks forced as if aiomysql had
moved: pages, session reset, dead pooled connections and the one statement per query that keeps
read-only calls read-only all hold on the public API, and where the public API cannot keep that
last one, bindingd refuses to serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomysql
import pymysql
import pytest
from bindingd_client import BackendUnavailable, SqlError, connect
from pymysql.constants import CLIENT
from services import ensure
from support import daemon_in_process, write_project

from bindingd.providers.mysql import driver

HOST = {"host": "127.0.0.1", "port": 3306, "user": "root", "autocommit": True}
# Every use with a fallback that still serves; "single_statements" has none (it refuses).
SERVING_USES = ("connect", "still_open", "reset_session", "abort")
WAYS = {
    "private": (),
    "public": SERVING_USES,
    # A connection that is closed after each call (no session reset) is never checked for reuse.
    "public, fresh sessions": ("connect", "reset_session", "abort"),
    "public, sessions reset": ("connect", "still_open", "abort"),
    "no single statements": ("single_statements",),
}


def test_the_private_api_is_the_shape_driver_py_calls() -> None:
    """Red after an aiomysql upgrade that moved what driver.py calls: check each use named here,
    then pin the version that passes (pyproject.toml) or adapt driver.py."""
    assert driver.private_api_problems() == {}, f"aiomysql {aiomysql.__version__} moved a private API"
    assert driver.FALLBACKS.problems == {}, "a check of the private API found it moved"


async def admin(sql: str, db: str | None = None) -> list[tuple[Any, ...]]:
    conn = await aiomysql.connect(**HOST, db=db)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        conn.close()


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


def forced(monkeypatch: pytest.MonkeyPatch, uses: tuple[str, ...]) -> Recorder:
    """`uses` forced onto their public fallback; the warnings they log are recorded."""
    recorder = Recorder()
    monkeypatch.setattr(driver.FALLBACKS, "_log", recorder)
    monkeypatch.setattr(driver.FALLBACKS, "warned", set())
    for use in uses:
        monkeypatch.setitem(driver.FALLBACKS.problems, use, "forced by the test")
    return recorder


def warned_once_each(recorder: Recorder, uses: tuple[str, ...]) -> None:
    assert sorted(fields["use"] for _, fields in recorder.warnings) == sorted(uses)
    assert all(f"aiomysql {aiomysql.__version__}" in event for event, _ in recorder.warnings)


@pytest.fixture(params=["private", "public"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ...]]:
    uses = WAYS[request.param]
    recorder = forced(monkeypatch, uses)
    yield uses
    warned_once_each(recorder, uses)


async def test_the_wrappers_on_a_real_connection(way: tuple[str, ...]) -> None:
    ensure("mysql")
    conn = driver.SingleStatementConnection(**HOST)
    await driver.connect(conn)
    try:
        # What only a live connection shows: the streams driver.py reaches into.
        assert driver.instance_problems(conn) == {}
        # One statement per query, seen on the server; aiomysql's own connection runs two.
        assert not conn.client_flag & CLIENT.MULTI_STATEMENTS
        assert await driver.multi_statements_on(conn) is False
        plain = await aiomysql.connect(**HOST)
        try:
            assert await driver.multi_statements_on(plain), "aiomysql no longer forces multi-statements on"
        finally:
            plain.close()

        assert await driver.still_open(conn, 5.0)
        async with conn.cursor() as cursor:
            await cursor.execute("SET @left = 'behind'")
        await driver.reset_session(conn)
        if "reset_session" in way:  # closed rather than reset: the next call gets a fresh session
            assert conn.closed and not await driver.still_open(conn, 5.0)
            conn = driver.SingleStatementConnection(**HOST)
            await driver.connect(conn)
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT @left")
            assert await cursor.fetchall() == ((None,),)

        # The server closes the connection (a restart, wait_timeout): it is not handed out again.
        await admin(f"KILL CONNECTION {conn.thread_id()}")
        await asyncio.sleep(0.2)
        assert not await driver.still_open(conn, 5.0)
    finally:
        driver.abort(conn)
    assert conn.closed


@pytest.fixture
async def project(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A read-write and a read-only binding on one connection entry, in a throwaway database."""
    ensure("mysql")
    name = f"bindingd_test_{uuid.uuid4().hex[:12]}"
    await admin(f"CREATE DATABASE {name}")
    await admin("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100))", name)
    config = write_project(
        tmp_path / "project",
        f"""
        version: 1
        connections:
          db: {{ kind: mysql, dsn: "mysql://root@127.0.0.1:3306/{name}", max_size: 4 }}
        bindings:
          APP_DB: {{ type: sql, connection: db }}
          RO_DB: {{ type: sql, connection: db, access: read-only }}
        """,
    )
    try:
        yield name, config
    finally:
        await admin(f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("name", ["private", "public, fresh sessions", "public, sessions reset"])
async def test_the_daemon_answers_alike_on_the_public_api(
    name: str, project: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    database, config = project
    uses = WAYS[name]
    recorder = forced(monkeypatch, uses)
    async with daemon_in_process(config) as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            app, ro = env.APP_DB, env.RO_DB
            # Pages, streamed.
            for db in (app, ro):
                rows = await db.prepare("SELECT seq FROM seq_1_to_2500").raw()
                assert [r[0] for r in rows] == list(range(1, 2501))
            # One statement per query, on a binding that may write too: nothing runs.
            with pytest.raises(SqlError):
                await app.prepare(
                    "INSERT INTO items (name) VALUES ('p'); INSERT INTO items (name) VALUES ('q')"
                ).run()
            with pytest.raises(SqlError):
                await ro.prepare("SELECT 1; COMMIT").all()
            assert await admin("SELECT count(*) FROM items", database) == [(0,)]
            added = await app.prepare("INSERT INTO items (name) VALUES (?)").bind("a").run()
            assert added.meta["last_row_id"] == 1
            # Each call starts on a clean session.
            for _ in range(4):
                assert await app.prepare("SELECT @leak := 'leaked' AS v").first("v") == "leaked"
                assert await app.prepare("SELECT @leak AS v").first("v") is None
            # Pooled connections the server closed are not handed out: calls go on working.
            await asyncio.gather(*(app.prepare("SELECT SLEEP(0.3) AS s").all() for _ in range(4)))
            for (thread,) in await admin(
                f"SELECT id FROM information_schema.processlist WHERE db = '{database}'"
            ):
                with contextlib.suppress(pymysql.err.MySQLError):  # gone already (a slow reset drops it)
                    await admin(f"KILL CONNECTION {thread}")
            await asyncio.sleep(0.2)
            for _ in range(6):
                assert await ro.prepare("SELECT name FROM items").first("name") == "a"
        finally:
            await env.aclose()
    warned_once_each(recorder, uses)


async def test_without_single_statements_the_daemon_refuses_to_serve(
    project: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No public aiomysql call turns multi-statements off: when the private hook is gone, the
    server is asked, and a connection that runs two statements per query is refused (no call is
    served, nothing is written) rather than used without the guarantee."""
    database, config = project
    uses = WAYS["no single statements"]
    recorder = forced(monkeypatch, uses)
    async with daemon_in_process(config) as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            for _ in range(2):
                for call in (
                    env.APP_DB.prepare(
                        "INSERT INTO items (name) VALUES ('p'); INSERT INTO items (name) VALUES ('q')"
                    ).run,
                    env.RO_DB.prepare("SELECT 1").all,
                ):
                    with pytest.raises(BackendUnavailable, match="CLIENT_MULTI_STATEMENTS") as refused:
                        await call()
                    assert f"aiomysql {aiomysql.__version__}" in str(refused.value)
        finally:
            await env.aclose()
    assert await admin("SELECT count(*) FROM items", database) == [(0,)]
    warned_once_each(recorder, uses)
