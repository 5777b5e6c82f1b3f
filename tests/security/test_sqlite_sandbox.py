"""Attacks on the local SQLite sandbox, through a real `bindingd serve` and the Python client.

A local sql binding must reach its own database file and nothing else, start every call from
its own settings, and, when read-only (a read-only binding, a protected env), write nothing:
whatever the SQL text and whichever call carries it (prepare().run/all/first/raw, batch, exec).
Each attack is followed by a look at the disk: no file created, no file changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from bindingd_client import BindingError, Env, PermissionDenied, SqlError, connect
from support import DaemonProcess, write_project

CONFIG = """
    version: 1
    bindings:
      APP_DB:   { type: sql }
      OTHER_DB: { type: sql }
      RO_DB:    { type: sql, access: read-only }
      CACHE:    { type: kv, access: read-only }
    envs:
      production:
        protected: true
"""

Call = Callable[[Env, str, str], Awaitable[object]]


async def _run(env: Env, binding: str, sql: str) -> object:
    return await env[binding].prepare(sql).run()


async def _all(env: Env, binding: str, sql: str) -> object:
    return await env[binding].prepare(sql).all()


async def _first(env: Env, binding: str, sql: str) -> object:
    return await env[binding].prepare(sql).first()


async def _raw(env: Env, binding: str, sql: str) -> object:
    return await env[binding].prepare(sql).raw()


async def _batch(env: Env, binding: str, sql: str) -> object:
    db = env[binding]
    return await db.batch([db.prepare("SELECT 1"), db.prepare(sql)])


async def _exec(env: Env, binding: str, sql: str) -> object:
    return await env[binding].exec(sql)


CALLS: dict[str, Call] = {
    "run": _run,
    "all": _all,
    "first": _first,
    "raw": _raw,
    "batch": _batch,
    "exec": _exec,
}


def _state(root: Path) -> Path:
    return root / ".bindingd" / "state"


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file under the project (but the daemon's log and socket) and a hash of its bytes,
    the SQLite files' content as SQLite reads it (the WAL moves pages around by itself)."""
    seen: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in ("daemon.log",) or path.suffix in (".sock",):
            continue
        if path.name.endswith(("-wal", "-shm")):
            seen[str(path.relative_to(root))] = "present"
            continue
        if path.suffix == ".sqlite3":
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            try:
                seen[str(path.relative_to(root))] = hashlib.sha256(
                    "\n".join(conn.iterdump()).encode()
                ).hexdigest()
            finally:
                conn.close()
            continue
        seen[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "project"
    write_project(root, CONFIG)
    # Tables in every database, made by a dev daemon before the attacks start.
    daemon = DaemonProcess(root).start()
    try:

        async def seed() -> None:
            env = await connect(daemon.endpoint)
            try:
                for name in ("APP_DB", "OTHER_DB"):
                    await env[name].exec(
                        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('kept')"
                    )
            finally:
                await env.aclose()

        asyncio.run(seed())
    finally:
        daemon.stop()
    # RO_DB's file: written here, beside the daemon, as a copy of production data would be.
    conn = sqlite3.connect(_state(root) / "sql" / "RO_DB.sqlite3", isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (v) VALUES ('kept')")
    conn.close()
    yield root


@pytest.fixture(params=["dev", "production"])
async def served(request: pytest.FixtureRequest, project: Path) -> AsyncIterator[tuple[Env, Path, str]]:
    """The daemon in dev (RO_DB read-only) or in the protected production env (all read-only)."""
    daemon = DaemonProcess(project, "--env", request.param).start()
    env = await connect(daemon.endpoint)
    try:
        yield env, project, request.param
    finally:
        await env.aclose()
        daemon.stop()


def _read_only_bindings(env_name: str) -> list[str]:
    return ["RO_DB", "APP_DB"] if env_name == "production" else ["RO_DB"]


ESCAPES = [
    "PRAGMA database_list",
    "SELECT file FROM pragma_database_list",
    "PRAGMA query_only = 0",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = 1",
    "PRAGMA journal_mode = OFF",
    "PRAGMA synchronous = OFF",
    "PRAGMA temp_store_directory = '/tmp'",
    "PRAGMA mmap_size = 1000000",
    "SELECT load_extension('/nonexistent/evil')",
    "DETACH DATABASE main",
    "CREATE TEMP TABLE kept_over (a)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "VACUUM",
    "SELECT sql FROM sqlite_stmt",
]


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_attach_own_file_on_a_read_only_binding_writes_nothing(
    served: tuple[Env, Path, str], call: str
) -> None:
    # The reported chain: learn the path, lift query_only, ATTACH the same file read-write.
    env, root, env_name = served
    before = _fingerprint(root)
    for binding in _read_only_bindings(env_name):
        own = _state(root) / "sql" / f"{binding}.sqlite3"
        for sql in (
            f"ATTACH '{own}' AS me",
            f"ATTACH 'file:{own}?mode=rw' AS me",
            "ATTACH '' AS scratch",
            "CREATE TABLE me.x (a)",
            "DELETE FROM me.t",
            "DELETE FROM t",
            "INSERT INTO t (v) VALUES ('written')",
            "CREATE TABLE x (a)",
            "PRAGMA user_version = 7",
            "INSERT INTO t (v) VALUES ('r') RETURNING id",
            "INSERT INTO t (id, v) VALUES (1, 'u') ON CONFLICT (id) DO UPDATE SET v = 'u'",
            "WITH n AS (SELECT 1) INSERT INTO t (v) SELECT 'w' FROM n",
            "REPLACE INTO sqlite_master VALUES ('table', 'z', 'z', 0, 'CREATE TABLE z (a)')",
        ):
            with pytest.raises((SqlError, PermissionDenied)):
                await CALLS[call](env, binding, sql)
        # With nothing to do these may answer, but write nothing (the fingerprint below).
        for sql in ("ANALYZE", "REINDEX", "PRAGMA optimize"):
            with contextlib.suppress(SqlError, PermissionDenied):
                await CALLS[call](env, binding, sql)
    assert _fingerprint(root) == before


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_no_binding_reaches_another_file(served: tuple[Env, Path, str], call: str) -> None:
    env, root, _ = served
    other = _state(root) / "sql" / "OTHER_DB.sqlite3"
    kv_store = next((_state(root) / "kv").glob("CACHE*"))
    created = root.parent / "created-by-attack.sqlite3"
    before = _fingerprint(root)
    for binding in ("APP_DB", "RO_DB"):
        for sql in (
            f"ATTACH '{other}' AS other",
            f"ATTACH '{kv_store}' AS kv",
            f"ATTACH '{created}' AS fresh",
            f"VACUUM INTO '{created}'",
            *ESCAPES,
        ):
            with pytest.raises(SqlError) as info:
                await CALLS[call](env, binding, sql)
            assert "not authorized" not in str(info.value), sql
    assert not created.exists()
    assert _fingerprint(root) == before


async def test_refusals_say_why(served: tuple[Env, Path, str]) -> None:
    env, root, env_name = served
    db = env.APP_DB
    expected = {
        f"ATTACH '{root}/x.sqlite3' AS x": (
            "ATTACH and VACUUM INTO are not allowed: a sql binding reaches only its own database"
        ),
        f"VACUUM INTO '{root}/y.sqlite3'": "ATTACH and VACUUM INTO are not allowed",
        "PRAGMA database_list": "PRAGMA database_list is not allowed",
        "PRAGMA query_only = 0": "PRAGMA query_only cannot be changed",
        "SELECT load_extension('x')": "load_extension() is not allowed",
        "CREATE TEMP TABLE x (a)": "temporary tables",
    }
    for sql, message in expected.items():
        with pytest.raises(SqlError) as info:
            await db.prepare(sql).run()
        assert message in str(info.value)
        assert info.value.binding == "APP_DB" and info.value.env == env_name
    if env_name == "production":
        with pytest.raises(PermissionDenied) as denied:
            await db.prepare("DELETE FROM t").run()
        assert "protected" in str(denied.value) or "read-only" in str(denied.value)


async def test_a_calls_settings_do_not_reach_the_next_call(project: Path) -> None:
    daemon = DaemonProcess(project).start()
    env = await connect(daemon.endpoint)
    try:
        db = env.APP_DB
        await db.exec(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            " CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id))"
        )
        for call in ("run", "all", "raw", "batch", "exec"):
            await CALLS[call](env, "APP_DB", "PRAGMA foreign_keys = OFF")
            assert await db.prepare("PRAGMA foreign_keys").first("foreign_keys") == 1, call
            with pytest.raises(SqlError, match="FOREIGN KEY constraint failed"):
                await db.prepare("INSERT INTO child (parent) VALUES (42)").run()
        # The same text again and again: sqlite3 runs it from its statement cache, where SQLite
        # does not ask the authorizer again; the settings still go back after every call.
        for setting, default in (
            ("recursive_triggers", 0),
            ("reverse_unordered_selects", 0),
            ("foreign_keys", 1),
        ):
            change = f"PRAGMA {setting} = {'OFF' if default else 'ON'}"
            for _ in range(3):
                await db.prepare(change).run()
                await db.exec(change)
                assert await db.prepare(f"PRAGMA {setting}").first(setting) == default, setting
        # LIKE's case rule is fixed (SQLite cannot put it back while another call's cursor is open).
        with pytest.raises(SqlError, match="case_sensitive_like cannot be changed"):
            await db.prepare("PRAGMA case_sensitive_like = ON").run()
        # D1's way to relax foreign keys for one transaction still works.
        await db.batch(
            [
                db.prepare("PRAGMA defer_foreign_keys = ON"),
                db.prepare("INSERT INTO child (id, parent) VALUES (1, 7)"),
                db.prepare("INSERT INTO parent (id) VALUES (7)"),
            ]
        )
        assert await db.prepare("PRAGMA defer_foreign_keys").first("defer_foreign_keys") == 0
        # A refused temp table left nothing behind for a later call either.
        with pytest.raises(SqlError):
            await db.prepare("CREATE TEMP TABLE leak (a)").run()
        assert await db.prepare("SELECT count(*) AS n FROM sqlite_temp_master").first("n") == 0
    finally:
        await env.aclose()
        daemon.stop()


async def test_a_read_write_binding_still_does_everything_d1_does(project: Path) -> None:
    daemon = DaemonProcess(project).start()
    env = await connect(daemon.endpoint)
    try:
        db = env.APP_DB
        await db.exec(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); CREATE INDEX notes_text ON notes(text)"
        )
        result = await db.prepare("INSERT INTO notes (text) VALUES (?)").bind("a").run()
        assert result.meta["changes"] == 1
        await db.batch([db.prepare("UPDATE notes SET text = 'b'"), db.prepare("DELETE FROM t")])
        assert [c["name"] for c in (await db.prepare("PRAGMA table_info(notes)").all()).results] == [
            "id",
            "text",
        ]
        assert (await db.prepare("PRAGMA integrity_check").first())["integrity_check"] == "ok"
        assert await db.prepare("PRAGMA foreign_key_check").all() is not None
        await db.prepare("PRAGMA optimize").run()
        await db.exec("ALTER TABLE notes ADD COLUMN extra TEXT; DROP INDEX notes_text; DROP TABLE notes")
        assert await env.RO_DB.prepare("SELECT v FROM t").first("v") == "kept"
        # A trigger's body holds `;`s: the script keeps it whole (SQLite's complete_statement).
        done = await db.exec(
            "CREATE TABLE src (x INTEGER);\nCREATE TABLE dst (x INTEGER);\n"
            "CREATE TRIGGER copy AFTER INSERT ON src BEGIN\n"
            "  INSERT INTO dst VALUES (new.x);\n  INSERT INTO dst VALUES (new.x + 1);\nEND;\n"
            "INSERT INTO src VALUES (1)"
        )
        assert done.count == 4
        assert await db.prepare("SELECT x FROM dst ORDER BY x").raw() == [[1], [2]]
    finally:
        await env.aclose()
        daemon.stop()


async def test_the_kv_store_of_a_read_only_binding_stays_readable(project: Path) -> None:
    # The reported damage: SQL wrote into a read-only KV binding's store, whose reads then
    # answered INTERNAL. With ATTACH refused that cannot happen; the KV binding answers as ever.
    daemon = DaemonProcess(project).start()
    env = await connect(daemon.endpoint)
    try:
        kv_store = next((_state(project) / "kv").glob("CACHE*"))
        with pytest.raises(SqlError):
            await env.APP_DB.exec(f"ATTACH '{kv_store}' AS kv; DROP TABLE kv.kv")
        assert await env.CACHE.get("absent") is None
        with pytest.raises(BindingError):
            await env.CACHE.put("k", "v")
    finally:
        await env.aclose()
        daemon.stop()


async def test_a_batch_or_script_cannot_end_its_transaction(project: Path) -> None:
    # A caller's COMMIT would commit what ran before it and leave the rest in autocommit: a later
    # failure could undo nothing, yet the error said "nothing was applied".
    daemon = DaemonProcess(project).start()
    env = await connect(daemon.endpoint)
    try:
        db = env.APP_DB
        before = await db.prepare("SELECT count(*) AS n FROM t").first("n")
        for script in (
            "INSERT INTO t (v) VALUES ('a')\nCOMMIT\nINSERT INTO t (v) VALUES ('b')\nSELECT * FROM no",
            "INSERT INTO t (v) VALUES ('a'); END; INSERT INTO nowhere VALUES (1)",
            "INSERT INTO t (v) VALUES ('a');\n/* why not */ ROLLBACK;\nINSERT INTO t (v) VALUES ('b')",
            "BEGIN; INSERT INTO t (v) VALUES ('a')",
        ):
            with pytest.raises(SqlError, match="is not allowed here"):
                await db.exec(script)
        with pytest.raises(SqlError, match=r"statement 1 failed.*COMMIT is not allowed here"):
            await db.batch(
                [
                    db.prepare("INSERT INTO t (v) VALUES ('b1')"),
                    db.prepare("COMMIT"),
                    db.prepare("INSERT INTO nowhere VALUES (1)"),
                ]
            )
        assert await db.prepare("SELECT count(*) AS n FROM t").first("n") == before
        # A savepoint inside the call's transaction ends nothing: still allowed.
        await db.exec("SAVEPOINT s;\nINSERT INTO t (v) VALUES ('kept');\nROLLBACK TO s;\nRELEASE s")
        assert await db.prepare("SELECT count(*) AS n FROM t").first("n") == before
    finally:
        await env.aclose()
        daemon.stop()


async def test_virtual_tables_read_on_a_read_only_binding(project: Path) -> None:
    # Opening an R*Tree to read compiles writes to its shadow tables (never run): the guard must
    # not take that for a write. FTS5 likewise.
    daemon = DaemonProcess(project).start()
    env = await connect(daemon.endpoint)
    try:
        await env.APP_DB.exec(
            "CREATE VIRTUAL TABLE geo USING rtree(id, minx, maxx);\nINSERT INTO geo VALUES (1, 0, 10)\n"
            "CREATE VIRTUAL TABLE docs USING fts5(body);\nINSERT INTO docs VALUES ('hello world')"
        )
        # A trigger whose END shares a line with its last statement stays whole too.
        await env.APP_DB.exec(
            "CREATE TABLE src (x);\nCREATE TRIGGER tr AFTER INSERT ON src BEGIN\n"
            "  INSERT INTO geo VALUES (new.x, 0, 1); END;\nINSERT INTO src VALUES (2)"
        )
    finally:
        await env.aclose()
        daemon.stop()
    daemon = DaemonProcess(project, "--env", "production").start()
    env = await connect(daemon.endpoint)
    try:
        before = _fingerprint(project)
        assert await env.APP_DB.prepare("SELECT id FROM geo WHERE minx <= 5 ORDER BY id").raw() == [[1], [2]]
        assert await env.APP_DB.prepare("SELECT body FROM docs WHERE docs MATCH 'hello'").first("body") == (
            "hello world"
        )
        with pytest.raises(PermissionDenied):
            await env.APP_DB.prepare("INSERT INTO geo VALUES (3, 0, 1)").run()
        with pytest.raises(PermissionDenied):
            await env.APP_DB.prepare("INSERT INTO docs VALUES ('more')").run()
        assert _fingerprint(project) == before
    finally:
        await env.aclose()
        daemon.stop()
