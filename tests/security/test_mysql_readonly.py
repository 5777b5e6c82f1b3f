"""Attacks on MySQL/MariaDB read-only calls: none may write, or leave the read-only transaction.

A call whose writes are refused (`access: read-only`, or a protected env) runs in a read-only
transaction. MariaDB's read-only transaction does not hold on its own: a procedure can COMMIT and
go on writing, `SELECT ... INTO OUTFILE` writes a file inside it, and the driver's default
multi-statements let one `prepare()` carry `COMMIT; INSERT ...`. Each attack here goes through
every call shape (prepare().run/all/first/raw, batch, exec, and the protected env), against the
real daemon and the real MariaDB server; after each, a separate admin connection checks that
nothing was written (rows, tables, users, the sequence, the server's files).
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import D1Database, Env, PermissionDenied, SqlError, connect
from support import MYSQL, bindingd_cli, daemon_in_process, write_project

from bindingd.domain.sql import split_script

INSERT = "INSERT INTO items (id, name) VALUES (7, 'x')"
# Where a file write would land (the server runs on this machine).
OUTFILE = f"/tmp/bindingd_outfile_{uuid.uuid4().hex[:12]}"
EVIL_USER = f"bindingd_evil_{uuid.uuid4().hex[:8]}"

ATTACKS = [
    # Leave the transaction, then write.
    f"SET SESSION TRANSACTION READ WRITE; COMMIT; {INSERT}",
    f"SET SESSION TRANSACTION READ WRITE; {INSERT}",
    f"COMMIT; {INSERT}",
    f"ROLLBACK; {INSERT}",
    f"BEGIN; {INSERT}",
    f"START TRANSACTION READ WRITE; {INSERT}",
    f"SET autocommit=1; {INSERT}",
    f"SET tx_read_only=0; COMMIT; {INSERT}",
    f"SET SESSION tx_read_only=0; BEGIN; {INSERT}",
    f"SET SESSION transaction_read_only=0; COMMIT; {INSERT}",
    f"XA START 'bindingd'; {INSERT}",
    f"LOCK TABLES items WRITE; {INSERT}",
    f"UNLOCK TABLES; {INSERT}",
    "DO RELEASE_LOCK('bindingd')",
    # Stored programs: a procedure that commits and writes, a function that writes.
    "CALL escape_and_write()",
    "CALL write_item()",
    "SELECT write_fn() AS v",
    "SELECT seq, write_fn() FROM seq_1_to_2000",
    "BEGIN NOT ATOMIC SET SESSION TRANSACTION READ WRITE; COMMIT; INSERT INTO items VALUES (7, 'x', 0); END",
    "help: BEGIN NOT ATOMIC COMMIT; INSERT INTO items VALUES (7, 'x', 0); END",
    "PREPARE s FROM 'COMMIT'",
    "SELECT NEXTVAL(seq) AS v",
    # Statements that commit implicitly.
    "CREATE TABLE sneaky (id INT)",
    "CREATE TEMPORARY TABLE sneaky (id INT)",
    "DROP TABLE items",
    "ALTER TABLE items ADD COLUMN z INT",
    "TRUNCATE TABLE items",
    "RENAME TABLE items TO gone",
    "CREATE DATABASE bindingd_sneaky_db",
    f"CREATE USER '{EVIL_USER}'@'%'",
    f"GRANT ALL ON *.* TO '{EVIL_USER}'@'%' IDENTIFIED BY 'x'",
    "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('owned')",
    "CREATE EVENT sneaky_event ON SCHEDULE AT NOW() DO INSERT INTO items VALUES (7, 'x', 0)",
    "ANALYZE TABLE items",
    "FLUSH PRIVILEGES",
    f"CREATE TABLE sneaky (id INT); {INSERT}",
    # File writes, also hidden from a scanner that reads MySQL comments wrongly.
    f"SELECT 1 INTO OUTFILE '{OUTFILE}'",
    f"SELECT 1 INTO DUMPFILE '{OUTFILE}'",
    f"SELECT name FROM items INTO OUTFILE '{OUTFILE}'",
    f"SELECT 1--1 INTO OUTFILE '{OUTFILE}'",
    f"SELECT 1 /*!INTO OUTFILE '{OUTFILE}' */",
    # Executable comments are code to the server.
    "/*!CALL escape_and_write() */",
    "/*M!100000 CALL escape_and_write() */",
    f"/*! COMMIT */; {INSERT}",
    "REPLACE INTO items (id, name) SELECT 1, 'z'",
]

SETUP = [
    "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, qty INT DEFAULT 0)",
    "INSERT INTO items (id, name) VALUES (1, 'a')",
    "CREATE SEQUENCE seq",
    "CREATE PROCEDURE escape_and_write() BEGIN SET SESSION TRANSACTION READ WRITE; COMMIT; "
    "INSERT INTO items VALUES (7, 'x', 0); END",
    "CREATE PROCEDURE write_item() BEGIN INSERT INTO items VALUES (8, 'y', 0); END",
    "CREATE FUNCTION write_fn() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO items VALUES (9, 'z', 0);"
    " RETURN 1; END",
]


async def state(db: str) -> dict[str, object]:
    """What an attack could have changed, read by a connection of the test's own."""
    schema = f"schema = '{db}'"
    return {
        "items": await MYSQL.admin("SELECT id, name, qty FROM items ORDER BY id", database=db),
        "columns": await MYSQL.admin(
            f"SELECT column_name FROM information_schema.columns WHERE table_{schema}"
        ),
        "tables": await MYSQL.admin(f"SELECT table_name FROM information_schema.tables WHERE table_{schema}"),
        "seq": await MYSQL.admin("SELECT next_not_cached_value FROM seq", database=db),
        "users": await MYSQL.admin(f"SELECT user FROM mysql.user WHERE user = '{EVIL_USER}'"),
        "root": await MYSQL.admin("SELECT authentication_string FROM mysql.user WHERE user = 'root'"),
        "dbs": await MYSQL.admin("SHOW DATABASES LIKE 'bindingd_sneaky_db'"),
        "events": await MYSQL.admin(f"SELECT event_name FROM information_schema.events WHERE event_{schema}"),
        "outfile": os.path.exists(OUTFILE),
    }


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    name = await MYSQL.create_database()
    for sql in SETUP:
        await MYSQL.admin(sql, database=name)
    dsn = MYSQL.dsn(name)
    config = write_project(
        tmp_path / "project",
        f"""
        version: 1
        connections:
          db: {{ kind: mysql, dsn: "{dsn}", max_size: 4 }}
        bindings:
          APP_DB: {{ type: sql, connection: db }}
          RO_DB: {{ type: sql, connection: db, access: read-only }}
        envs:
          production:
            protected: true
        """,
    )
    try:
        yield name, config
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(OUTFILE)
        with warnings.catch_warnings():  # the server warns that what an attack made is not there
            warnings.simplefilter("ignore")
            await MYSQL.drop_database(name)
            await MYSQL.admin(f"DROP USER IF EXISTS '{EVIL_USER}'@'%'")
            await MYSQL.admin("DROP DATABASE IF EXISTS bindingd_sneaky_db")


@contextlib.asynccontextmanager
async def serving(config: Path, env: str | None = None) -> AsyncIterator[Env]:
    async with daemon_in_process(config, env=env) as daemon:
        client = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            yield client
        finally:
            await client.aclose()


async def attack_every_way(db: D1Database, script: str) -> None:
    """`script` through every call shape; each must be refused."""
    for shape in ("run", "all", "first", "raw"):
        with pytest.raises((PermissionDenied, SqlError)):
            await getattr(db.prepare(script), shape)()
    statements = split_script(script, "mysql")
    with pytest.raises((PermissionDenied, SqlError)):
        await db.batch([db.prepare(s) for s in statements])
    with pytest.raises((PermissionDenied, SqlError)):
        await db.exec(script)


@pytest.mark.parametrize("env", [None, "production"])
async def test_no_sql_writes_through_a_read_only_call(database: tuple[str, Path], env: str | None) -> None:
    name, config = database
    before = await state(name)
    async with serving(config, env) as client:
        # RO_DB is read-only everywhere; in the protected env, APP_DB's writes are refused too.
        targets = [client.RO_DB] + ([client.APP_DB] if env else [])
        for db in targets:
            for script in ATTACKS:
                await attack_every_way(db, script)
                assert await state(name) == before, f"{script!r} changed the database"
            # Reads still work, streamed ones too, and the binding keeps serving.
            assert await db.prepare("SELECT name FROM items WHERE id = ?").bind(1).first("name") == "a"
            rows = await db.prepare("SELECT seq FROM seq_1_to_2000").raw()
            assert len(rows) == 2000
            assert (await db.prepare("SHOW TABLES").all()).results
            assert (await db.prepare("EXPLAIN SELECT * FROM items").all()).results
            assert await db.prepare("WITH x AS (SELECT 2 AS v) SELECT v FROM x").first("v") == 2
            assert await db.prepare("/* a comment */ SELECT 'OUT' AS v -- c\n").first("v") == "OUT"
            results = await db.batch([db.prepare("SELECT 1 AS v"), db.prepare("SELECT 2 AS v")])
            assert [r.results[0]["v"] for r in results] == [1, 2]


async def test_a_refused_statement_says_why(database: tuple[str, Path]) -> None:
    _, config = database
    async with serving(config) as client:
        with pytest.raises(PermissionDenied) as refused:
            await client.RO_DB.prepare("CALL escape_and_write()").run()
        message = str(refused.value)
        assert '"RO_DB"' in message and "read-only" in message and "CALL" in message, message
        # A COMMIT in a script is refused on every binding, read-only or not, before anything runs.
        with pytest.raises(SqlError, match=r"statement 1 failed.*COMMIT is not allowed here"):
            await client.RO_DB.exec(f"SELECT 1; COMMIT; {INSERT}")
        with pytest.raises(PermissionDenied, match="OUTFILE"):
            await client.RO_DB.prepare(f"SELECT 1 INTO OUTFILE '{OUTFILE}'").run()


async def test_one_statement_per_round_trip_on_a_read_write_binding(database: tuple[str, Path]) -> None:
    """Two statements in one prepare() are a SqlError (the server parses one), on a binding that
    may write too: multi-statements are off on every connection."""
    name, config = database
    async with serving(config) as client:
        db = client.APP_DB
        with pytest.raises(SqlError):
            await db.prepare(
                "INSERT INTO items (id, name) VALUES (10, 'p'); INSERT INTO items (id, name) VALUES (11, 'q')"
            ).run()
        with pytest.raises(SqlError):
            await db.batch([db.prepare("SELECT 1; INSERT INTO items (id, name) VALUES (12, 'r')")])
        assert await MYSQL.admin("SELECT id FROM items ORDER BY id", database=name) == [(1,)]
        # exec() splits its script and still runs every statement; its count is D1's, the lines.
        done = await db.exec(
            "INSERT INTO items (id, name) VALUES (10, 'p');\nINSERT INTO items (id, name) VALUES (11, 'q')"
        )
        assert done.count == 2
        assert await MYSQL.admin("SELECT id FROM items ORDER BY id", database=name) == [(1,), (10,), (11,)]
        # A procedure that answers rows still works on a read-write binding (multi-results).
        await MYSQL.admin(
            "CREATE PROCEDURE list_items() BEGIN SELECT id FROM items ORDER BY id; END", database=name
        )
        assert await db.prepare("CALL list_items()").raw() == [[1], [10], [11]]


async def test_migrations_cannot_write_through_a_read_only_binding(database: tuple[str, Path]) -> None:
    name, config = database
    root = config.parent
    before = await state(name)
    folder = root / "migrations/RO_DB"
    folder.mkdir(parents=True)
    (folder / "0001_escape.sql").write_text(f"SET SESSION TRANSACTION READ WRITE;\nCOMMIT;\n{INSERT};\n")
    refused = bindingd_cli("migrations", "apply", "RO_DB", cwd=root)
    assert refused.returncode != 0 and "read-only" in refused.stderr, refused.stderr
    (root / "migrations/APP_DB").mkdir(parents=True)
    (root / "migrations/APP_DB/0001_escape.sql").write_text(f"COMMIT;\n{INSERT};\n")
    protected = bindingd_cli("migrations", "apply", "APP_DB", "--env", "production", cwd=root)
    assert protected.returncode != 0 and "protected" in protected.stderr, protected.stderr
    # Listing reads d1_migrations through a read-only call; it creates nothing either.
    bindingd_cli("migrations", "list", "RO_DB", cwd=root)
    assert await state(name) == before
