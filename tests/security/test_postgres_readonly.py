"""Attacks on a PostgreSQL read-only call: a read-only binding (`access: read-only`) and a
protected env must not write, whatever SQL a call sends and through whichever call shape.

A real daemon serves bindings on the machine's real PostgreSQL server; each test gets a
throwaway database, and after each attack a separate admin connection counts the rows of the
target table: the only proof that counts is that nothing was written. The connection has one
pooled session (max_size 1), so whatever a call leaves in its session meets the next call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from bindingd_client import D1Database, Env, PermissionDenied, SqlError, connect
from support import POSTGRES, daemon_in_process, write_project

INSERT = "INSERT INTO items (id, name) VALUES (7, 'written')"
# A DO block that lifts the session's read-only default, ends the transaction and writes in
# the next one: in the implicit transaction of a lone statement PostgreSQL lets it.
DO_ESCAPE = (
    f"DO $$ BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); COMMIT; {INSERT}; END $$"
)
REFUSED = (PermissionDenied, SqlError)


@dataclass
class Target:
    database: str
    config: Path

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(POSTGRES.dsn(self.database))

    async def rows(self) -> int:
        """The rows of `items`, counted on a connection of its own."""
        conn = await self.admin()
        try:
            return int(await conn.fetchval("SELECT count(*) FROM items"))
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def database(root: Path, user: str = "postgres") -> AsyncIterator[Target]:
    async with POSTGRES.database() as name:
        config = write_project(
            root,
            f"""
            version: 1
            connections:
              db: {{ kind: postgres, dsn: "{POSTGRES.dsn(name, user=user)}", max_size: 1 }}
            bindings:
              APP_DB: {{ type: sql, connection: db }}
              RO_DB: {{ type: sql, connection: db, access: read-only }}
            envs:
              production:
                protected: true
            """,
        )
        target = Target(name, config)
        conn = await target.admin()
        try:
            await conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
            await conn.execute("CREATE SEQUENCE bindingd_seq")
            await conn.execute(
                "CREATE PROCEDURE escape() LANGUAGE plpgsql AS $$ BEGIN"
                " PERFORM set_config('default_transaction_read_only', 'off', false); COMMIT;"
                f" {INSERT}; END $$"
            )
        finally:
            await conn.close()
        yield target


@contextlib.asynccontextmanager
async def serving(target: Target, env: str | None = None) -> AsyncIterator[Env]:
    async with daemon_in_process(target.config, env=env) as daemon:
        client = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            yield client
        finally:
            await client.aclose()


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    async with database(tmp_path / "project") as target:
        yield target


@pytest.fixture(params=["read-only binding", "protected env"])
async def ro(request: pytest.FixtureRequest, target: Target) -> AsyncIterator[D1Database]:
    """A call that may not write: RO_DB, or the read-write binding in a protected env."""
    protected = request.param == "protected env"
    async with serving(target, env="production" if protected else None) as env:
        yield env.APP_DB if protected else env.RO_DB


CALL_SHAPES: dict[str, Callable[[D1Database, str], Awaitable[object]]] = {
    "run": lambda db, sql: db.prepare(sql).run(),
    "all": lambda db, sql: db.prepare(sql).all(),
    "first": lambda db, sql: db.prepare(sql).first(),
    "raw": lambda db, sql: db.prepare(sql).raw(),
    "batch": lambda db, sql: db.batch([db.prepare("SELECT 1 AS x"), db.prepare(sql)]),
    "exec": lambda db, sql: db.exec(sql),
}


@pytest.mark.parametrize("shape", sorted(CALL_SHAPES))
@pytest.mark.parametrize("escape", [DO_ESCAPE, "CALL escape()"], ids=["do-block", "procedure"])
async def test_a_statement_that_commits_inside_cannot_write(
    ro: D1Database, target: Target, shape: str, escape: str
) -> None:
    with pytest.raises(REFUSED):
        await CALL_SHAPES[shape](ro, escape)
    # The session it ran in is the next call's: that one is still refused.
    with pytest.raises(PermissionDenied):
        await ro.prepare(INSERT).run()
    assert await target.rows() == 0


# Statements that try to leave the read-only transaction or lift the session's read-only
# default; each is tried alone (then a write in the next call on the same session), in a batch
# and in a script before a write.
TRICKS = [
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET default_transaction_read_only = off",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SET transaction_read_only = off",
    "SET TRANSACTION READ WRITE",
    "RESET ALL",
    "COMMIT",
    "COMMIT AND CHAIN",
    "ROLLBACK",
    "END",
    "BEGIN",
    "BEGIN READ WRITE",
    "SAVEPOINT s",
    "RELEASE SAVEPOINT s",
    "ABORT",
    "DISCARD ALL",
]


@pytest.mark.parametrize("trick", TRICKS)
async def test_session_and_transaction_tricks_write_nothing(
    ro: D1Database, target: Target, trick: str
) -> None:
    with contextlib.suppress(*REFUSED):
        await ro.prepare(trick).run()
    with pytest.raises(PermissionDenied):
        await ro.prepare(INSERT).run()
    with pytest.raises(REFUSED):
        await ro.batch([ro.prepare(trick), ro.prepare(INSERT)])
    with pytest.raises(REFUSED):
        await ro.exec(f"{trick}; {INSERT}")
    with pytest.raises(REFUSED):
        await ro.exec(f"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; {trick}; {INSERT}")
    assert await target.rows() == 0


async def test_a_streamed_large_read_stays_read_only(ro: D1Database, target: Target) -> None:
    # More rows than one page: the cursor path, in its own read-only transaction.
    lift = (
        "SELECT x, set_config('default_transaction_read_only', 'off', false) AS lifted"
        " FROM generate_series(1, 2000) AS x"
    )
    assert len((await ro.prepare(lift).all()).results) == 2000
    assert len(await ro.prepare(lift).raw()) == 2000
    with pytest.raises(PermissionDenied):
        await ro.prepare(f"WITH w AS ({INSERT} RETURNING id) SELECT x FROM generate_series(1, 2000) x").all()
    with pytest.raises(PermissionDenied):
        await ro.prepare(INSERT).run()
    assert await target.rows() == 0


async def test_a_script_the_splitter_misreads_runs_nothing_it_did_not_see(
    ro: D1Database, target: Target
) -> None:
    # `a$$$` is a name to PostgreSQL; a splitter that took `$$` for a dollar quote sent the
    # whole script as one simple-protocol query, the COMMIT in it ending the read-only
    # transaction.
    script = f"SELECT 1 AS a$$$; SET default_transaction_read_only = off; COMMIT; {INSERT}; SELECT 1 AS b$$$"
    with pytest.raises(REFUSED):
        await ro.exec(script)
    with pytest.raises(REFUSED):
        await ro.exec(f"SELECT 1 AS a$$$; {DO_ESCAPE}; SELECT 1 AS b$$$")
    assert await target.rows() == 0


async def test_writes_a_read_only_transaction_lets_through_are_rolled_back(
    ro: D1Database, target: Target
) -> None:
    # PostgreSQL 15 lets large objects be created and written in a read-only transaction: the
    # call's COMMIT refuses a transaction that wrote anything. Through the one-statement read
    # the answer may already be out; what counts is that nothing stays.
    for sql in (
        "SELECT lo_from_bytea(0, 'x')",
        "SELECT lo_put(lo_create(0), 0, 'x')",
        "DO $$ BEGIN PERFORM lo_from_bytea(0, 'x'); END $$",
    ):
        with contextlib.suppress(*REFUSED):
            await ro.prepare(sql).run()
        with pytest.raises(PermissionDenied):
            await ro.batch([ro.prepare(sql)])
        with pytest.raises(PermissionDenied):
            await ro.exec(sql)
    # The cursor path (more than a page of rows).
    with pytest.raises(PermissionDenied):
        await ro.prepare("SELECT x, lo_from_bytea(0, 'x') AS o FROM generate_series(1, 900) AS x").all()
    # Writes the read-only transaction refuses by itself, even to a superuser.
    for sql in ("COPY items FROM PROGRAM 'echo 9,x'", "SELECT nextval('bindingd_seq')"):
        with pytest.raises(REFUSED):
            await ro.prepare(sql).run()
        with pytest.raises(REFUSED):
            await ro.exec(sql)
    admin = await target.admin()
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_largeobject_metadata") == 0
    finally:
        await admin.close()
    assert await target.rows() == 0


@pytest.fixture
async def plain_role(target: Target) -> AsyncIterator[str]:
    """A login role that is not a superuser, as the README asks a binding's role to be."""
    role = f"bindingd_ro_{uuid.uuid4().hex[:8]}"
    conn = await target.admin()
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
        await conn.execute(f"GRANT ALL ON items TO {role}")
    finally:
        await conn.close()
    try:
        yield role
    finally:
        # The role is dropped after the database holding its grants (the target's own teardown
        # then finds nothing to drop).
        with contextlib.suppress(Exception):
            await POSTGRES.drop_database(target.database)
            await POSTGRES.admin(f"DROP ROLE IF EXISTS {role}")


async def test_a_plain_role_cannot_write_files_run_programs_or_reach_out(
    target: Target, plain_role: str, tmp_path: Path
) -> None:
    # A superuser can write files and run programs on the server inside a read-only
    # transaction (COPY ... TO PROGRAM); a role that is not one cannot, nor use dblink to
    # write through a session of its own.
    quoted_insert = INSERT.replace("'", "''")
    reach_out = f"dbname={target.database} user=postgres host=127.0.0.1"
    config = write_project(
        tmp_path / "plain",
        f"""
        version: 1
        connections:
          db: {{ kind: postgres, dsn: "{POSTGRES.dsn(target.database, user=plain_role)}", max_size: 1 }}
        bindings:
          RO_DB: {{ type: sql, connection: db, access: read-only }}
        """,
    )
    program = tmp_path / "program-ran"
    async with serving(Target(target.database, config)) as env:
        ro = env.RO_DB
        assert await ro.prepare("SELECT count(*) AS n FROM items").first("n") == 0
        for sql in (
            f"COPY (SELECT 1) TO PROGRAM 'touch {program}'",
            f"COPY items TO '{tmp_path / 'copied'}'",
            "SELECT pg_read_file('/etc/hostname')",
            f"SELECT dblink_exec('{reach_out}', '{quoted_insert}')",
        ):
            with pytest.raises(REFUSED):
                await ro.prepare(sql).run()
    assert not program.exists()
    assert await target.rows() == 0
