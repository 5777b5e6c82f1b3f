"""What the PostgreSQL SQL provider does beyond the SQL conformance suite: a read runs as one
statement on a read-only session, and bindings that share a connection entry but differ in
access or timeout each keep their own limits (their sessions are never shared), against the
machine's real server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import BackendTimeout, Env, PermissionDenied, connect
from support import POSTGRES, daemon_in_process, write_project


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """Three bindings on one connection entry (one pool set): read-write with the default 30 s
    timeout, read-only, and read-write with a 1 s timeout; in a throwaway database."""
    async with POSTGRES.database() as name:
        config = write_project(
            tmp_path / "project",
            f"""
            version: 1
            connections:
              db: {{ kind: postgres, dsn: "{POSTGRES.dsn(name)}", max_size: 4 }}
            bindings:
              APP_DB: {{ type: sql, connection: db }}
              RO_DB: {{ type: sql, connection: db, access: read-only }}
              SLOW_DB: {{ type: sql, connection: db, timeout: 1 }}
            """,
        )
        async with daemon_in_process(config) as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await client.APP_DB.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
                yield client
            finally:
                await client.aclose()


async def test_bindings_on_one_connection_keep_their_own_timeout(env: Env) -> None:
    get = "SELECT current_setting('statement_timeout') AS v"
    for _ in range(6):  # several pooled connections of each
        assert await env.SLOW_DB.prepare(get).first("v") == "1s"
        assert await env.APP_DB.prepare(get).first("v") == "30s"
        assert await env.RO_DB.prepare(get).first("v") == "30s"
    # A call that lifts its session's timeout lifts it for itself only.
    for _ in range(6):
        assert await env.SLOW_DB.prepare("SELECT set_config('statement_timeout', '0', false) AS v").first("v")
        assert await env.SLOW_DB.prepare(get).first("v") == "1s"
    started = time.monotonic()
    with pytest.raises(BackendTimeout, match="SLOW_DB"):
        await env.SLOW_DB.prepare("SELECT pg_sleep(5)").all()
    assert time.monotonic() - started < 4
    # The 1 s of SLOW_DB is not the other bindings' limit.
    assert (await env.APP_DB.prepare("SELECT pg_sleep(1.5) AS slept").all()).results == [{"slept": None}]


async def test_a_read_only_binding_stays_read_only_whatever_a_call_sets(env: Env) -> None:
    lift = "SELECT set_config('default_transaction_read_only', 'off', false) AS v"
    for _ in range(6):
        await env.RO_DB.prepare(lift).all()
        await env.APP_DB.prepare(lift).all()
        with pytest.raises(PermissionDenied, match="read-only"):
            await env.RO_DB.prepare("INSERT INTO items (id, name) VALUES (1, 'a')").run()
        with pytest.raises(PermissionDenied):
            await env.RO_DB.prepare("WITH w AS (INSERT INTO items (id, name) VALUES (2, 'b')) SELECT 1").all()
    # ...and the read-write binding writes, whatever the read-only one ran before.
    await env.APP_DB.prepare("INSERT INTO items (id, name) VALUES (3, 'c')").run()
    assert await env.RO_DB.prepare("SELECT count(*) AS n FROM items").first("n") == 1


async def test_a_read_that_writes_on_a_read_write_binding_runs_and_commits(env: Env) -> None:
    """A SELECT is tried on a read-only session first; one that turns out to write (a data-
    modifying CTE, a sequence) runs again the general way, once, and is committed."""
    db = env.APP_DB
    await db.exec("CREATE SEQUENCE counter")
    assert [await db.prepare("SELECT nextval('counter') AS n").first("n") for _ in range(3)] == [1, 2, 3]
    added = db.prepare("WITH w AS (INSERT INTO items (id, name) VALUES (?, ?) RETURNING id) SELECT id FROM w")
    assert await added.bind(10, "ten").first("id") == 10
    assert await added.bind(11, "eleven").first("id") == 11
    assert await env.RO_DB.prepare("SELECT count(*) AS n FROM items").first("n") == 2
    with pytest.raises(PermissionDenied):
        await env.RO_DB.prepare("SELECT nextval('counter') AS n").first("n")


@pytest.mark.parametrize("rows", [499, 500, 501, 502, 1001, 2500])
async def test_results_around_a_page_come_back_whole(env: Env, rows: int) -> None:
    """A result up to one page past is answered at once; a larger one goes through a cursor
    (run again from the start); both come back whole, the second time too."""
    for db in (env.APP_DB, env.RO_DB):
        for _ in range(2):
            result = await db.prepare("SELECT x FROM generate_series(1, ?) AS x").bind(rows).all()
            assert [r["x"] for r in result.results] == list(range(1, rows + 1))
            assert result.meta["rows_read"] == rows
