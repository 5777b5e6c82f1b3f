"""asyncpg's private API as bindingd/providers/postgres/driver.py calls it, and its public fallbacks.

The first tests fail when an asyncpg upgrade moves or reshapes an entry point driver.py calls:
the upgrade is a red test here rather than a slower production. The others run the machine's
real PostgreSQL server through both ways, the fallbacks forced as if asyncpg had moved: what the
SQL conformance suite counts on (pages, a statement cache a schema change makes stale, read-only
calls, scripts run one command per statement) holds on the public API too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from asyncpg.protocol import Protocol
from bindingd_client import Env, PermissionDenied, SqlError, connect
from services import ensure
from support import daemon_in_process, write_project

from bindingd.providers.postgres import driver
from bindingd.providers.private_api import signature_problem

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
USES = ("prepare", "bind_execute", "run_dropping_rows")
WAIT = 10.0


def test_the_private_api_is_the_shape_driver_py_calls() -> None:
    """Red after an asyncpg upgrade that moved what driver.py calls: check each use named here,
    then pin the version that passes (pyproject.toml) or adapt driver.py."""
    assert driver.private_api_problems() == {}, f"asyncpg {asyncpg.__version__} moved a private API"
    assert sorted(driver.FALLBACKS.problems) == [], "the import-time check found a moved private API"
    for use in USES:
        assert callable(getattr(driver, use)), use


def test_the_shape_check_sees_what_an_upgrade_would_change() -> None:
    class Moved:
        async def _prepare(self, query: str, *, timeout: float = 0) -> None: ...  # no use_cache
        async def _get_statement(self, query: str, limit: int, timeout: float) -> None: ...
        def bind_execute(self, state: object) -> None: ...  # no longer a coroutine

    assert "takes no use_cache" in str(
        signature_problem(Moved, "_prepare", ("query",), ("timeout", "use_cache"))
    )
    assert "no longer starts with" in str(signature_problem(Moved, "_get_statement", ("query", "timeout")))
    assert "coroutine" in str(signature_problem(Moved, "bind_execute", ("state",)))
    assert "is gone" in str(signature_problem(Moved, "execute", ("state",)))


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


@pytest.fixture(params=["private", "fallback"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """The private way as installed, or every use forced onto its public fallback."""
    recorder = Recorder()
    monkeypatch.setattr(driver.FALLBACKS, "_log", recorder)
    monkeypatch.setattr(driver.FALLBACKS, "warned", set())
    if request.param == "fallback":
        for use in USES:
            monkeypatch.setitem(driver.FALLBACKS.problems, use, "forced by the test")
    yield recorder
    if request.param == "fallback":  # each fallback said so once, naming the driver version
        assert sorted(fields["use"] for _, fields in recorder.warnings) == sorted(USES)
        assert all(f"asyncpg {asyncpg.__version__}" in event for event, _ in recorder.warnings)
    else:
        assert recorder.warnings == []


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    ensure("postgres")
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_wrappers_on_a_real_connection(conn: asyncpg.Connection, way: Recorder) -> None:
    private = "prepare" not in driver.FALLBACKS.problems
    if private:  # what only a live connection shows: the objects driver.py reaches into
        assert isinstance(conn._protocol, Protocol)
    series = "SELECT x FROM generate_series(1, $1::int) AS x"
    prepared = await driver.prepare(conn, series, WAIT)
    assert isinstance(prepared, PreparedStatement)
    assert [t.name for t in prepared.get_parameters()] == ["int4"]
    # From the statement cache on the private way (parsed once), a new statement on the fallback.
    again = await driver.prepare(conn, series, WAIT)
    assert (again._state is prepared._state) is private

    rows, tag, complete = await driver.bind_execute(conn, prepared, [3], 10, WAIT)
    if private:
        assert ([r["x"] for r in rows], tag, complete) == ([1, 2, 3], b"SELECT 3", True)
        rows, _, complete = await driver.bind_execute(conn, prepared, [30], 10, WAIT)
        assert (len(rows), complete) == (10, False)
    else:  # nothing answered: the caller goes its general way
        assert (rows, complete) == ([], False)

    async with conn.transaction():
        await driver.run_dropping_rows(conn, "CREATE TEMPORARY TABLE t (x int)", 100, WAIT)
        await driver.run_dropping_rows(conn, "INSERT INTO t SELECT generate_series(1, 250)", 100, WAIT)
        await driver.run_dropping_rows(conn, "SELECT x FROM t", 100, WAIT)  # three pages, dropped
        assert await conn.fetchval("SELECT count(*) FROM t") == 250
    # One command per statement: a script the splitter got wrong fails instead of running.
    with pytest.raises(asyncpg.PostgresSyntaxError, match="multiple commands"):
        await driver.run_dropping_rows(conn, "SELECT 1; SELECT 2", 100, WAIT)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """A read-write and a read-only binding on one connection entry, in a throwaway database."""
    ensure("postgres")
    name = f"bindingd_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    config = write_project(
        tmp_path / "project",
        f"""
        version: 1
        connections:
          db: {{ kind: postgres, dsn: "postgresql://postgres@127.0.0.1:5432/{name}", max_size: 2 }}
        bindings:
          APP_DB: {{ type: sql, connection: db }}
          RO_DB: {{ type: sql, connection: db, access: read-only }}
        """,
    )
    try:
        async with daemon_in_process(config) as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await client.APP_DB.exec("CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT)")
                yield client
            finally:
                await client.aclose()
    finally:
        ensure("postgres")
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_the_daemon_answers_alike_both_ways(way: Recorder, env: Env) -> None:
    app, ro = env.APP_DB, env.RO_DB
    # Pages: a result up to a page past is answered at once, a larger one through a cursor.
    for rows in (499, 501, 2500):
        for db in (app, ro):
            result = await db.prepare("SELECT x FROM generate_series(1, ?) AS x").bind(rows).all()
            assert [r["x"] for r in result.results] == list(range(1, rows + 1))
            assert result.meta["rows_read"] == rows
    # Writes, their last row id, and a read that writes on a binding that may.
    added = await app.prepare("INSERT INTO items (name) VALUES (?)").bind("a").run()
    assert added.meta["last_row_id"] == 1 and added.meta["changes"] == 1
    assert (
        await app.prepare(
            "WITH w AS (INSERT INTO items (name) VALUES ('b') RETURNING id) SELECT id FROM w"
        ).first("id")
        == 2
    )
    # A schema change: every pooled connection sees the new column (stale cached plans rerun).
    for _ in range(3):
        assert await app.prepare("SELECT * FROM items ORDER BY id").raw() == [[1, "a"], [2, "b"]]
    await app.exec("ALTER TABLE items ADD COLUMN note TEXT")
    for _ in range(3):
        assert await app.prepare("SELECT * FROM items ORDER BY id").raw(column_names=True) == [
            ["id", "name", "note"],
            [1, "a", None],
            [2, "b", None],
        ]
        results = await app.batch([app.prepare("SELECT name FROM items WHERE id = ?").bind(1)])
        assert results[0].results == [{"name": "a"}]
    # A read-only binding refuses every write, however it is sent.
    for write in (
        "INSERT INTO items (name) VALUES ('x')",
        "WITH w AS (INSERT INTO items (name) VALUES ('x') RETURNING id) SELECT id FROM w",
        "DO $$ BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); COMMIT;"
        " INSERT INTO items (name) VALUES ('x'); END $$",
    ):
        with pytest.raises((PermissionDenied, SqlError)):
            await ro.prepare(write).all()
        with pytest.raises((PermissionDenied, SqlError)):
            await ro.exec(write)
    # Scripts run statement by statement; one the splitter misreads runs nothing it did not see.
    done = await app.exec("INSERT INTO items (name) VALUES ('c');\nSELECT x FROM generate_series(1, 1200) x")
    assert done.count == 2
    with pytest.raises((PermissionDenied, SqlError)):
        await ro.exec(
            "SELECT 1 AS a$$$; SET default_transaction_read_only = off; COMMIT; INSERT INTO items"
            " (name) VALUES ('x'); SELECT 1 AS b$$$"
        )
    assert await ro.prepare("SELECT count(*) AS n FROM items").first("n") == 3
