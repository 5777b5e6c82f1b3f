"""The SQL conformance suite: D1 behaviour, the same for every provider.

Each test talks to the real daemon (in this process, on a real unix socket) through the Python
client, on every backend of tests/conformance/backends.py that serves sql. PostgreSQL and MariaDB
are the machine's real servers: each test gets a throwaway database, created before and dropped
after. Where backends differ by nature (how a PostgreSQL boolean or timestamp comes back), the
expected values per SQL dialect pin the documented mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import (
    AuthenticationFailed,
    BackendTimeout,
    BackendUnavailable,
    D1Database,
    Env,
    PermissionDenied,
    SqlError,
    connect,
)
from conformance.backends import Backend, Project, params, serving, stop_service
from services import ensure
from support import DaemonProcess, SqlServer, connected, write_project

DDL = {
    "sqlite": {
        "types": "CREATE TABLE types (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n TEXT,"
        " flag BOOLEAN)",
        "slow": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000)"
        " SELECT max(x) FROM c",
        "million": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)"
        " SELECT x, 'row' AS label FROM c",
    },
    "postgres": {
        "types": "CREATE TABLE types (id BIGSERIAL PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT,"
        " b BYTEA, n TEXT, flag BOOLEAN)",
        "slow": "SELECT pg_sleep(60)",
        "million": "SELECT x, 'row' AS label FROM generate_series(1, 1000000) AS x",
    },
    "mysql": {
        "types": "CREATE TABLE types (id BIGINT AUTO_INCREMENT PRIMARY KEY, i BIGINT, r DOUBLE, s TEXT,"
        " b LONGBLOB, n TEXT, flag BOOLEAN)",
        "slow": "SELECT SLEEP(60)",
        # MariaDB's sequence engine (its recursive CTEs stop at 1000 iterations by default).
        "million": "SELECT seq AS x, 'row' AS label FROM seq_1_to_1000000",
    },
}
# What identifies the slow statement in the server's list of running queries.
MARKER = {"postgres": "pg_sleep", "mysql": "SLEEP(60)"}


def dialect(backend: Backend) -> str:
    assert backend.sql is not None
    return backend.sql.dialect


def server_of(backend: Backend) -> SqlServer | None:
    assert backend.sql is not None
    return backend.sql.server


# The tests of a backend's own server (credentials, restarts, sessions): they replace the
# `backend` fixture's parameters with the backends that have one.
on_servers = pytest.mark.parametrize("backend", params(serving("sql", lambda b: server_of(b) is not None)))


@pytest.fixture(params=params(serving("sql")))
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
async def project(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Project]:
    assert backend.sql is not None
    async with backend.sql.project(tmp_path / "project", request) as made:
        yield made


@pytest.fixture
async def sql_env(project: Project) -> AsyncIterator[Env]:
    async with connected(project.config) as env:
        yield env


@pytest.fixture
def db(sql_env: Env) -> D1Database:
    return sql_env.APP_DB


def reader(env: Env, backend: Backend) -> D1Database:
    """The binding the suite reads through beside APP_DB: RO_DB, or APP_DB itself where the
    backend refuses read-only calls (`sql_read_only`)."""
    return env.RO_DB if backend.sql_read_only else env.APP_DB


async def make_items(db: D1Database) -> None:
    await db.exec(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL UNIQUE, qty INTEGER)"
    )


# --- results and meta ---------------------------------------------------------------------------


async def test_all_run_first_raw(db: D1Database, backend: Backend) -> None:
    await make_items(db)
    run = await db.prepare("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)").bind(1, "apple", 3).run()
    assert run.success is True
    assert run.results == []
    assert run.meta["changes"] == 1
    assert run.meta["changed_db"] is True
    assert run.meta["rows_written"] >= 1
    assert run.meta["duration"] >= 0
    if dialect(backend) == "sqlite":  # the rowid; MySQL tells generated keys only (below)
        assert run.meta["last_row_id"] == 1
    await db.prepare("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)").bind(2, "pear", None).run()

    result = await db.prepare("SELECT id, name, qty FROM items ORDER BY id").all()
    assert result.success is True
    assert result.results == [{"id": 1, "name": "apple", "qty": 3}, {"id": 2, "name": "pear", "qty": None}]
    assert result.meta["changes"] == 0
    assert result.meta["changed_db"] is False
    assert result.meta["rows_read"] >= 2

    assert await db.prepare("SELECT name FROM items WHERE id = ?").bind(2).first() == {"name": "pear"}
    assert await db.prepare("SELECT name FROM items WHERE id = ?").bind(2).first("name") == "pear"
    assert await db.prepare("SELECT name FROM items WHERE id = ?").bind(9).first() is None
    assert await db.prepare("SELECT name FROM items WHERE id = ?").bind(9).first("name") is None
    with pytest.raises(SqlError, match="D1_COLUMN_NOTFOUND"):
        await db.prepare("SELECT name FROM items").first("nope")

    assert await db.prepare("SELECT id, name FROM items ORDER BY id").raw() == [[1, "apple"], [2, "pear"]]
    assert await db.prepare("SELECT id, name FROM items ORDER BY id").raw(column_names=True) == [
        ["id", "name"],
        [1, "apple"],
        [2, "pear"],
    ]
    update = await db.prepare("UPDATE items SET qty = ? WHERE id > ?").bind(5, 0).run()
    assert update.meta["changes"] == 2


async def test_types_round_trip(db: D1Database, backend: Backend) -> None:
    await db.exec(DDL[dialect(backend)]["types"])
    blob = bytes(range(256))
    big, low = (2**62, -(2**63)) if backend.sql_exact_integers else (2**53, -(2**53))
    values = (big, -1.5, "héllo ✓ 'quoted' ?", blob, None, True)
    first = (
        await db.prepare("INSERT INTO types (i, r, s, b, n, flag) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(*values)
        .run()
    )
    # The generated key (PostgreSQL: the sequence's value, lastval()).
    assert first.meta["last_row_id"] == 1
    await (
        db.prepare("INSERT INTO types (i, r, s, b, n, flag) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(low, 0.0, "", b"", None, False)
        .run()
    )
    rows = await db.prepare("SELECT i, r, s, b, n, flag FROM types ORDER BY id").raw()
    # Booleans: SQLite and MySQL store 1/0 (as D1 does); a PostgreSQL boolean answers a bool.
    true, false = (True, False) if dialect(backend) == "postgres" else (1, 0)
    assert rows == [
        [big, -1.5, "héllo ✓ 'quoted' ?", blob, None, true],
        [low, 0.0, "", b"", None, false],
    ]
    assert isinstance(rows[0][3], bytes)


async def test_large_parameters_round_trip(db: D1Database, backend: Backend) -> None:
    """Parameters far over an HTTP header's size (a proxy that carried them in a header, the
    cloudflare provider's first cut, was refused with 431), as one statement and in a batch."""
    await db.exec(DDL[dialect(backend)]["types"])
    blob = bytes(range(256)) * 2048  # 512 KiB
    text = "ü" * 30_000  # 60 KB of UTF-8 (MySQL's TEXT holds 64 KiB)
    insert = db.prepare("INSERT INTO types (s, b) VALUES (?, ?)")
    await insert.bind(text, blob).run()
    await db.batch([insert.bind(text[:10], blob[:10]), insert.bind(text, blob)])
    rows = await db.prepare("SELECT s, b FROM types ORDER BY id").raw()
    assert rows == [[text, blob], [text[:10], blob[:10]], [text, blob]]


async def test_last_row_id_is_the_new_rows_id(db: D1Database, backend: Backend) -> None:
    # D1 code reads meta.last_row_id instead of RETURNING.
    await db.exec(DDL[dialect(backend)]["types"])
    insert = db.prepare("INSERT INTO types (s) VALUES (?)")
    first, second = await insert.bind("a").run(), await insert.bind("b").run()
    assert (first.meta["last_row_id"], second.meta["last_row_id"]) == (1, 2)
    results = await db.batch(
        [insert.bind("c"), db.prepare("SELECT count(*) AS n FROM types"), insert.bind("d")]
    )
    assert [results[0].meta["last_row_id"], results[2].meta["last_row_id"]] == [3, 4]
    assert (await insert.bind("e").all()).meta["last_row_id"] == 5


async def test_a_number_bound_where_no_type_is_known_stays_a_number(db: D1Database, backend: Backend) -> None:
    # PostgreSQL types a parameter nothing around it types as text: a number stays a number.
    row = await db.prepare("SELECT ? AS i, ? AS r, ? AS s, ?1 AS again").bind(5, 1.5, "t").first()
    assert row == {"i": 5, "r": 1.5, "s": "t", "again": 5}
    assert type(row["i"]) is int and type(row["again"]) is int
    await make_items(db)
    await db.prepare("INSERT INTO items (id, name) VALUES (?, ?)").bind(1, 42).run()
    # Where the column says text, the number is text, as before.
    if not backend.sql_exact_integers:
        return  # bound as a REAL: '42.0'
    assert await db.prepare("SELECT name FROM items WHERE name = ?").bind(42).first("name") == "42"


OTHER_TYPES = {
    "sqlite": (
        "SELECT 12.50 AS num, '2024-01-02 03:04:05' AS ts, json('{\"a\": 1}') AS j",
        {"num": 12.5, "ts": "2024-01-02 03:04:05", "j": '{"a":1}'},
    ),
    "postgres": (
        "SELECT 12.50::numeric AS num, '2024-01-02 03:04:05'::timestamp AS ts,"
        " '2024-01-02 03:04:05+00'::timestamptz AS tstz, '2024-01-02'::date AS d,"
        " '{\"a\": 1}'::jsonb AS j, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,"
        " ARRAY[1, 2, 3] AS arr, 9223372036854775808::numeric AS big",
        {
            "num": "12.50",
            "ts": "2024-01-02T03:04:05",
            "tstz": "2024-01-02T03:04:05+00:00",
            "d": "2024-01-02",
            "j": '{"a": 1}',
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "arr": "[1,2,3]",
            "big": "9223372036854775808",
        },
    ),
    "mysql": (
        "SELECT CAST(12.50 AS DECIMAL(10, 2)) AS num, CAST('2024-01-02 03:04:05' AS DATETIME) AS ts,"
        " CAST('2024-01-02' AS DATE) AS d, JSON_OBJECT('a', 1) AS j, CAST(1 AS UNSIGNED) AS u",
        {"num": "12.50", "ts": "2024-01-02T03:04:05", "d": "2024-01-02", "j": '{"a": 1}', "u": 1},
    ),
}


async def test_other_column_types_map_as_documented(db: D1Database, backend: Backend) -> None:
    query, expected = OTHER_TYPES[dialect(backend)]
    assert await db.prepare(query).first() == expected


async def test_placeholders_inside_literals_and_comments(db: D1Database, backend: Backend) -> None:
    quote = "`" if dialect(backend) == "mysql" else '"'
    sql = (
        f"SELECT 'it''s ?' AS a, ? AS b, ?1 AS c, 'd' AS {quote}?d{quote} /* ? ?2 */, ?2 AS e -- ? here\n"
        f", '?3 -- /*' AS f"
    )
    row = await db.prepare(sql).bind("x", "y").first()
    assert row == {"a": "it's ?", "b": "x", "c": "x", "?d": "d", "e": "y", "f": "?3 -- /*"}
    with pytest.raises(SqlError, match="parameter"):
        await db.prepare("SELECT ? AS a, ? AS b").bind("only one").all()


@on_servers
async def test_postgres_dollar_quoted_strings_keep_their_placeholders(
    backend: Backend, project: Project
) -> None:
    if dialect(backend) != "postgres":
        sql, expected = "SELECT '%s %d %%' AS a, ? AS b", {"a": "%s %d %%", "b": "v"}
    else:
        sql, expected = (
            "SELECT $$it's ? $1$$ AS a, $tag$ ?; $tag$ AS c, ? AS b",
            {
                "a": "it's ? $1",
                "c": " ?; ",
                "b": "v",
            },
        )
    async with connected(project.config) as env:
        assert await env.APP_DB.prepare(sql).bind("v").first() == expected


# --- batch and exec ------------------------------------------------------------------------------


async def test_batch_is_atomic_and_names_the_failing_statement(db: D1Database) -> None:
    await make_items(db)
    insert = db.prepare("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)")
    results = await db.batch(
        [insert.bind(1, "a", 1), insert.bind(2, "b", 2), db.prepare("SELECT count(*) AS n FROM items")]
    )
    assert [r.meta["changes"] for r in results[:2]] == [1, 1]
    assert results[2].results == [{"n": 2}]

    with pytest.raises(SqlError, match="statement 2") as failed:
        await db.batch([insert.bind(3, "c", 3), insert.bind(4, "d", 4), insert.bind(5, "a", 5)])
    assert failed.value.binding == "APP_DB"
    assert await db.prepare("SELECT id FROM items ORDER BY id").raw() == [[1], [2]]


async def test_exec_runs_a_script(db: D1Database) -> None:
    result = await db.exec(
        """
        CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(100));
        -- a comment; with a semicolon
        INSERT INTO notes (id, body) VALUES (1, 'one; still one');
        /* another ; comment */
        INSERT INTO notes (id, body) VALUES (2, 'two');
        """
    )
    assert result.count == 3
    assert result.duration >= 0
    assert await db.prepare("SELECT body FROM notes ORDER BY id").raw() == [["one; still one"], ["two"]]
    with pytest.raises(SqlError, match="statement 1"):
        await db.exec("INSERT INTO notes (id, body) VALUES (3, 'x'); INSERT INTO nowhere VALUES (1)")
    assert await db.prepare("SELECT count(*) AS n FROM notes").first("n") == 2


async def test_exec_reads_a_script_line_by_line_as_d1_does(db: D1Database) -> None:
    # D1 runs an exec() script one line at a time and counts lines: statements on their own
    # lines need no `;`, and several statements on one line count once.
    await db.exec("CREATE TABLE script_lines (id INTEGER PRIMARY KEY, body VARCHAR(100))")
    insert = "INSERT INTO script_lines (id, body) VALUES"
    assert (await db.exec(f"{insert} (1, 'a')\n{insert} (2, 'b\nc')")).count == 2
    update = "UPDATE script_lines SET body ="
    assert (await db.exec(f"{update} 'x' WHERE id = 1; {update} 'y' WHERE id = 2")).count == 1
    assert (await db.exec(f"{update} 'p' WHERE id = 1\r\n{update} 'q' WHERE id = 2\r\n")).count == 2
    assert await db.prepare("SELECT body FROM script_lines ORDER BY id").raw() == [["p"], ["q"]]
    # A statement across lines (which D1 cannot run) keeps working here (README: differences).
    assert (await db.exec("INSERT INTO script_lines (id, body)\nVALUES (3, 'r')")).count == 1
    assert await db.prepare("SELECT count(*) AS n FROM script_lines").first("n") == 3


async def test_batch_and_exec_cannot_end_their_transaction(db: D1Database) -> None:
    # A caller's COMMIT would commit what ran before it and leave the rest outside the
    # transaction; D1 refuses transaction statements, and so does every provider here.
    await make_items(db)
    insert = "INSERT INTO items (id, name) VALUES"
    for script in (f"{insert} (1, 'a')\nCOMMIT\n{insert} (2, 'b')", f"{insert} (1, 'a'); ROLLBACK"):
        with pytest.raises(SqlError, match="is not allowed here"):
            await db.exec(script)
    with pytest.raises(SqlError, match="statement 1 failed"):
        await db.batch(
            [db.prepare(f"{insert} (1, 'a')"), db.prepare("COMMIT"), db.prepare(f"{insert} (2, 'b')")]
        )
    assert await db.prepare("SELECT count(*) AS n FROM items").first("n") == 0


async def test_constraint_violation_and_syntax_error_are_sql_errors(db: D1Database) -> None:
    await make_items(db)
    await db.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()
    with pytest.raises(SqlError) as failed:
        await db.prepare("INSERT INTO items (id, name) VALUES (2, 'a')").run()
    assert failed.value.reason == "SQL_ERROR"
    assert any(w in str(failed.value).lower() for w in ("unique", "duplicate")), str(failed.value)
    with pytest.raises(SqlError, match=r"(?i)syntax"):
        await db.prepare("SELEC nonsense").all()
    # The daemon is unharmed and the binding keeps serving.
    assert await db.prepare("SELECT count(*) AS n FROM items").first("n") == 1


# --- access --------------------------------------------------------------------------------------


HIDDEN_WRITE = {
    "sqlite": "WITH x AS (SELECT 1 AS v) DELETE FROM items WHERE id IN (SELECT v FROM x)",
    "postgres": "WITH gone AS (DELETE FROM items RETURNING id) SELECT count(*) FROM gone",
    "mysql": "REPLACE INTO items (id, name) SELECT 1, 'z'",
}


async def test_read_only_binding_refuses_writes_on_the_backend(sql_env: Env, backend: Backend) -> None:
    await make_items(sql_env.APP_DB)
    await sql_env.APP_DB.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()
    ro = sql_env.RO_DB
    if not backend.sql_read_only:
        # It cannot enforce read-only: every call fails closed, reads too, and names why.
        for call in (
            ro.prepare("SELECT name FROM items").first("name"),
            ro.prepare("INSERT INTO items (id, name) VALUES (2, 'b')").run(),
            ro.batch([ro.prepare("SELECT 1 AS x")]),
            ro.exec("UPDATE items SET qty = 1"),
        ):
            with pytest.raises(PermissionDenied, match="cannot enforce read-only"):
                await call
        assert await sql_env.APP_DB.prepare("SELECT count(*) AS n FROM items").first("n") == 1
        return
    assert await ro.prepare("SELECT name FROM items").first("name") == "a"
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.prepare("INSERT INTO items (id, name) VALUES (2, 'b')").run()
    with pytest.raises(PermissionDenied):
        await ro.batch([ro.prepare("SELECT 1 AS x"), ro.prepare("DELETE FROM items")])
    with pytest.raises(PermissionDenied):
        await ro.exec("UPDATE items SET qty = 1")
    # A write hidden in a CTE is refused too: the backend decides, not a SQL parser.
    hidden = HIDDEN_WRITE[dialect(backend)]
    with pytest.raises(PermissionDenied):
        await ro.prepare(hidden).run()
    # SQL that tries to step out of the read-only transaction runs nothing after the attempt.
    for script in ESCAPES[dialect(backend)]:
        with pytest.raises((PermissionDenied, SqlError)):
            await ro.exec(script)
    assert await sql_env.APP_DB.prepare("SELECT count(*) AS n FROM items").first("n") == 1
    with pytest.raises(SqlError):
        await sql_env.APP_DB.prepare("SELECT count(*) AS n FROM sneaky").first("n")


ESCAPE_INSERT = "INSERT INTO items (id, name) VALUES (7, 'x')"
ESCAPES = {
    "sqlite": [f"COMMIT; {ESCAPE_INSERT}", "COMMIT; CREATE TABLE sneaky (id INTEGER)"],
    "postgres": [
        f"COMMIT; {ESCAPE_INSERT}",
        f"SET TRANSACTION READ WRITE; {ESCAPE_INSERT}",
        f"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; {ESCAPE_INSERT}",
        "COMMIT; CREATE TABLE sneaky (id INTEGER)",
    ],
    "mysql": [
        f"COMMIT; {ESCAPE_INSERT}",
        f"SET SESSION TRANSACTION READ WRITE; {ESCAPE_INSERT}",
        "SET SESSION TRANSACTION READ WRITE; CREATE TABLE sneaky (id INTEGER)",
    ],
}


async def test_protected_env_refuses_writes(project: Project, backend: Backend) -> None:
    async with connected(project.config) as env:
        await make_items(env.APP_DB)
    async with connected(project.config, env="production") as env:
        if not backend.sql_read_only:  # reads are refused too: read-only cannot be enforced
            with pytest.raises(PermissionDenied, match="cannot enforce read-only"):
                await env.APP_DB.prepare("SELECT count(*) AS n FROM items").first("n")
            with pytest.raises(PermissionDenied, match="protected"):
                await env.APP_DB.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()
            return
        assert await env.APP_DB.prepare("SELECT count(*) AS n FROM items").first("n") == 0
        with pytest.raises(PermissionDenied, match="protected"):
            await env.APP_DB.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()


# --- timeouts and cancellation ------------------------------------------------------------------


async def _server_still_runs(backend: Backend, marker: str) -> bool:
    """Whether the backend's server still executes a statement containing `marker`."""
    server = server_of(backend)
    return server is not None and await server.running(marker)


async def _eventually_stopped(backend: Backend, marker: str) -> None:
    deadline = time.monotonic() + 10
    while await _server_still_runs(backend, marker):
        assert time.monotonic() < deadline, f"the {backend.name} server still runs {marker}"
        await asyncio.sleep(0.2)


async def test_statement_timeout_cancels_on_the_server(sql_env: Env, backend: Backend) -> None:
    if not backend.sql_stops_statements:
        pytest.skip("the backend cannot stop a running statement (D1)")
    slow = DDL[dialect(backend)]["slow"]
    started = time.monotonic()
    with pytest.raises(BackendTimeout, match="SLOW_DB"):
        await sql_env.SLOW_DB.prepare(slow).all()
    assert time.monotonic() - started < 30
    await _eventually_stopped(backend, MARKER.get(dialect(backend), ""))
    # The connection is usable at once: nothing is left running in front of the next call.
    begun = time.monotonic()
    assert await sql_env.SLOW_DB.prepare("SELECT 7 AS n").first("n") == 7
    assert time.monotonic() - begun < 5


async def test_cancelled_call_cancels_the_query(sql_env: Env, backend: Backend) -> None:
    if not backend.sql_stops_statements:
        pytest.skip("the backend cannot stop a running statement (D1)")
    slow = DDL[dialect(backend)]["slow"]
    call = asyncio.ensure_future(sql_env.APP_DB.prepare(slow).all())
    await asyncio.sleep(1.0)
    if server_of(backend) is not None:
        assert await _server_still_runs(backend, MARKER[dialect(backend)])
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await _eventually_stopped(backend, MARKER.get(dialect(backend), ""))
    begun = time.monotonic()
    assert await sql_env.APP_DB.prepare("SELECT 7 AS n").first("n") == 7
    assert time.monotonic() - begun < 5


# --- remote servers: auth, availability, restarts -----------------------------------------------


@on_servers
async def test_wrong_credentials_are_auth_failed(backend: Backend, project: Project, tmp_path: Path) -> None:
    server = server_of(backend)
    assert server is not None
    async with server.refused_dsn(project.database) as dsn:
        config = write_project(
            tmp_path / "auth",
            f"""
            version: 1
            connections:
              bad: {{ kind: {server.kind}, dsn: "{dsn}" }}
            bindings:
              APP_DB: {{ type: sql, connection: bad }}
            """,
        )
        async with connected(config) as env:
            with pytest.raises(AuthenticationFailed) as failed:
                await env.APP_DB.prepare("SELECT 1 AS x").all()
            assert "wrong" not in str(failed.value)  # the password never leaks
            assert failed.value.binding == "APP_DB"


@on_servers
async def test_unreachable_server_is_backend_unavailable(
    backend: Backend, project: Project, tmp_path: Path
) -> None:
    server = server_of(backend)
    assert server is not None
    config = write_project(
        tmp_path / "down",
        f"""
        version: 1
        connections:
          down: {{ kind: {server.kind}, dsn: "{server.scheme}://root@127.0.0.1:1/x" }}
        bindings:
          APP_DB: {{ type: sql, connection: down }}
        """,
    )
    async with connected(config) as env:
        with pytest.raises(BackendUnavailable, match="APP_DB"):
            await env.APP_DB.prepare("SELECT 1 AS x").all()


def _restart(backend: Backend) -> None:
    stop_service(backend)
    ensure(backend.service)


@pytest.mark.serial  # stops the shared server
@on_servers
async def test_calls_succeed_after_the_server_restarts(backend: Backend, project: Project) -> None:
    async with connected(project.config) as env:
        db = env.APP_DB
        await make_items(db)
        for i in range(4):  # several pooled connections
            await db.prepare("INSERT INTO items (id, name) VALUES (?, ?)").bind(i, f"n{i}").run()
        await asyncio.gather(*(db.prepare("SELECT count(*) AS n FROM items").all() for _ in range(4)))
        await asyncio.to_thread(_restart, backend)
        results = [await db.prepare("SELECT count(*) AS n FROM items").first("n") for _ in range(6)]
        assert results == [4] * 6
        await db.prepare("INSERT INTO items (id, name) VALUES (?, ?)").bind(9, "after").run()
        assert await db.prepare("SELECT name FROM items WHERE id = 9").first("name") == "after"


# --- streaming -----------------------------------------------------------------------------------


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# Behind a gateway this runs in the serial part of `make test`: under pytest-xdist the daemon
# process started beside the worker's in-process gateway did not become ready within 60 s (the
# cause is not found yet; alone it serves in about a second).
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(b, id=b.name, marks=[pytest.mark.serial] if b.behind_gateway else [])
        for b in serving("sql")
    ],
)
async def test_million_rows_stream_through_a_daemon_with_flat_memory(
    backend: Backend, project: Project
) -> None:
    """A real `bindingd serve` process: its peak RSS stays < 150 MiB above idle."""
    if not backend.sql_streams_rows:
        pytest.skip("the backend answers a statement whole (D1): nothing streams")
    daemon = DaemonProcess(
        project.root, "--log-level", "warning", env={"PYTHONPATH": os.pathsep.join(sys.path)}
    )
    # Waited for on the loop: behind a gateway, the gateway is served by this test's loop, which
    # must keep running for the daemon to open its session.
    await daemon.start(wait=False).served()
    try:
        env = await connect(endpoint=daemon.endpoint)
        try:
            db = env.APP_DB
            assert await db.prepare("SELECT 1 AS x").first("x") == 1
            idle = _rss_kib(daemon.proc.pid, "VmRSS")  # type: ignore[union-attr]
            count = total = 0
            async for row in db.prepare(DDL[dialect(backend)]["million"]).rows():
                count += 1
                total += row["x"]
            assert count == 1_000_000
            assert total == 1_000_000 * 1_000_001 // 2
            peak = _rss_kib(daemon.proc.pid, "VmHWM")  # type: ignore[union-attr]
            print(f"\n{backend.name}: daemon idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
            assert peak - idle < 150 * 1024
            # Stopping early cancels the rest.
            first = await db.prepare(DDL[dialect(backend)]["million"]).first("x")
            assert first == 1
        finally:
            await env.aclose()
    finally:
        assert await asyncio.to_thread(daemon.stop) == 0


# --- connections go back to their pool clean ----------------------------------------------------


async def test_a_statement_cannot_leave_a_transaction_open(sql_env: Env, backend: Backend) -> None:
    """`BEGIN` run as a single statement must not leave the binding's connection inside a
    transaction: later writes would never commit and later batches would fail."""
    db = sql_env.APP_DB
    await make_items(db)
    with contextlib.suppress(SqlError):
        await db.prepare("BEGIN").run()
    await db.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()
    # Another connection (the read-only binding's) sees the row: it was committed.
    assert await reader(sql_env, backend).prepare("SELECT count(*) AS n FROM items").first("n") == 1
    results = await db.batch([db.prepare("INSERT INTO items (id, name) VALUES (2, 'b')")])
    assert results[0].meta["changes"] == 1
    assert await reader(sql_env, backend).prepare("SELECT count(*) AS n FROM items").first("n") == 2


async def test_a_cancelled_batch_applies_nothing(sql_env: Env, backend: Backend) -> None:
    if not backend.sql_stops_statements:
        pytest.skip("the backend cannot stop a running statement (D1)")
    db = sql_env.APP_DB
    await make_items(db)
    slow = DDL[dialect(backend)]["slow"]
    call = asyncio.ensure_future(
        db.batch([db.prepare("INSERT INTO items (id, name) VALUES (1, 'a')"), db.prepare(slow)])
    )
    await asyncio.sleep(1.0)
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await _eventually_stopped(backend, MARKER.get(dialect(backend), ""))
    assert await db.prepare("SELECT count(*) AS n FROM items").first("n") == 0
    await db.prepare("INSERT INTO items (id, name) VALUES (2, 'b')").run()
    assert await reader(sql_env, backend).prepare("SELECT count(*) AS n FROM items").first("n") == 1


async def test_parameter_count_mismatch_is_a_clear_sql_error(db: D1Database) -> None:
    with pytest.raises(SqlError, match="1 parameter but 2 values were bound"):
        await db.prepare("SELECT ? AS a").bind(1, 2).all()
    with pytest.raises(SqlError, match="2 parameters but 1 value was bound"):
        await db.prepare("SELECT ?2 AS a").bind(1).all()
    with pytest.raises(SqlError, match="statement 1 failed"):
        await db.batch([db.prepare("SELECT 1 AS a"), db.prepare("SELECT ? AS a")])


async def test_a_changed_schema_is_seen_by_the_next_call(db: D1Database) -> None:
    """Statements may be cached by a provider; a schema change must not make them fail or
    return the old columns."""
    await make_items(db)
    await db.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()
    for _ in range(3):  # every pooled connection has it cached
        assert await db.prepare("SELECT * FROM items").raw(column_names=True) == [
            ["id", "name", "qty"],
            [1, "a", None],
        ]
    await db.exec("ALTER TABLE items ADD COLUMN note VARCHAR(20)")
    for _ in range(3):
        assert await db.prepare("SELECT * FROM items").raw(column_names=True) == [
            ["id", "name", "qty", "note"],
            [1, "a", None, None],
        ]
        results = await db.batch([db.prepare("SELECT * FROM items")])
        assert results[0].results == [{"id": 1, "name": "a", "qty": None, "note": None}]


SESSION_LEAK = {
    "postgres": (
        "SELECT set_config('application_name', 'leaked', false) AS v",
        "SELECT current_setting('application_name') AS v",
    ),
    "mysql": ("SELECT @leak := 'leaked' AS v", "SELECT @leak AS v"),
}


@on_servers
async def test_session_state_does_not_leak_into_the_next_call(backend: Backend, project: Project) -> None:
    """Each call starts on a clean session: what one call SETs is gone for the next (the
    connection goes back to the pool reset)."""
    setter, getter = SESSION_LEAK[dialect(backend)]
    async with connected(project.config) as env:
        for _ in range(4):
            assert await env.APP_DB.prepare(setter).first("v") == "leaked"
            assert await env.APP_DB.prepare(getter).first("v") != "leaked"
            await env.APP_DB.batch([env.APP_DB.prepare(setter)])
            assert await env.APP_DB.prepare(getter).first("v") != "leaked"


DEFERRED_FK = {
    "sqlite": "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED",
    "postgres": "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED",
}


async def test_a_batch_failing_at_its_commit_applies_nothing(sql_env: Env, backend: Backend) -> None:
    """A deferred constraint fails at COMMIT, after every statement ran: still nothing is
    applied and the connection serves the next call (MySQL has no deferred constraints)."""
    reference = DEFERRED_FK.get(dialect(backend), "REFERENCES parents (id)")
    db = sql_env.APP_DB
    await db.exec(
        "CREATE TABLE parents (id INTEGER PRIMARY KEY);"
        f" CREATE TABLE children (id INTEGER PRIMARY KEY, parent INTEGER {reference})"
    )
    with pytest.raises(SqlError):
        await db.batch(
            [
                db.prepare("INSERT INTO parents (id) VALUES (1)"),
                db.prepare("INSERT INTO children (id, parent) VALUES (1, 99)"),
            ]
        )
    await db.prepare("INSERT INTO parents (id) VALUES (2)").run()
    assert await reader(sql_env, backend).prepare("SELECT id FROM parents").raw() == [[2]]
    assert await reader(sql_env, backend).prepare("SELECT count(*) AS n FROM children").first("n") == 0


INSERT_RETURNING_1000 = {
    "sqlite": "INSERT INTO items (id, name) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1"
    " FROM c WHERE x < 1000) SELECT x, 'n' || x FROM c RETURNING id",
    "postgres": "INSERT INTO items (id, name) SELECT x, 'n' || x FROM generate_series(1, 1000) AS x"
    " RETURNING id",
    "mysql": "INSERT INTO items (id, name) SELECT seq, concat('n', seq) FROM seq_1_to_1000 RETURNING id",
}


async def test_first_keeps_what_a_large_write_did(sql_env: Env, backend: Backend) -> None:
    """`first()` reads one row of a result larger than a page and drops the rest: the
    statement still ran whole (D1), so its writes stay."""
    db = sql_env.APP_DB
    await make_items(db)
    assert await db.prepare(INSERT_RETURNING_1000[dialect(backend)]).first("id") == 1
    assert await reader(sql_env, backend).prepare("SELECT count(*) AS n FROM items").first("n") == 1000
    # A read-only large result dropped early leaves the binding serving.
    assert await reader(sql_env, backend).prepare("SELECT id FROM items ORDER BY id").first("id") == 1
