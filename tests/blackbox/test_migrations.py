"""Black-box tests of `bindingd migrations create|list|apply`, through the real command line,
against the local SQLite provider and the machine's real PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import MYSQL, POSTGRES, bindingd_cli, write_project


def _project(root: Path, connection: str, binding: str) -> Path:
    return write_project(
        root,
        f"""
        version: 1
        {connection}
        bindings:
          APP_DB: {binding}
        envs:
          production:
            protected: true
        """,
    )


@pytest.fixture(params=["local", "mysql", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], list]]]:
    """A project folder and a function that runs SQL on the binding's database directly."""
    root = tmp_path / "project"
    if request.param == "local":
        _project(root, "", "{ type: sql }")

        def query(sql: str) -> list:
            conn = sqlite3.connect(root / ".bindingd/state/sql/APP_DB.sqlite3")
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()

        yield root, query
        return
    server = POSTGRES if request.param == "postgres" else MYSQL
    name = asyncio.run(server.create_database())
    _project(
        root,
        f'connections:\n          db: {{ kind: {server.kind}, dsn: "{server.dsn(name)}" }}',
        "{ type: sql, connection: db }",
    )
    try:
        yield root, lambda sql: asyncio.run(server.admin(sql, database=name))
    finally:
        asyncio.run(server.drop_database(name))


def _write(path: Path, sql: str) -> None:
    path.write_text(path.read_text() + textwrap.dedent(sql))


def test_create_list_apply_twice_and_a_failing_migration(project: tuple[Path, Callable[[str], list]]) -> None:
    root, query = project
    created = bindingd_cli("migrations", "create", "APP_DB", "create items", cwd=root)
    assert created.returncode == 0, created.stderr
    assert "migrations/APP_DB/0001_create_items.sql" in created.stdout
    first = root / "migrations/APP_DB/0001_create_items.sql"
    _write(first, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL);\n")
    assert bindingd_cli("migrations", "create", "APP_DB", "seed", cwd=root).returncode == 0
    second = root / "migrations/APP_DB/0002_seed.sql"
    _write(
        second,
        "INSERT INTO items (id, name) VALUES (1, 'a; b');\nINSERT INTO items (id, name) VALUES (2, 'c');\n",
    )

    listed = bindingd_cli("migrations", "list", "APP_DB", cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert "pending  0001_create_items.sql" in listed.stdout
    assert "2 pending" in listed.stdout

    applied = bindingd_cli("migrations", "apply", "APP_DB", cwd=root)
    assert applied.returncode == 0, applied.stderr
    assert "applied  0001_create_items.sql" in applied.stdout
    assert "2 migrations applied" in applied.stdout
    # Applying again applies nothing: each migration runs once.
    again = bindingd_cli("migrations", "apply", "APP_DB", cwd=root)
    assert again.returncode == 0, again.stderr
    assert "0 migrations applied" in again.stdout
    assert query("SELECT id, name FROM items ORDER BY id") == [(1, "a; b"), (2, "c")]
    assert [r[0] for r in query("SELECT name FROM d1_migrations ORDER BY id")] == [
        "0001_create_items.sql",
        "0002_seed.sql",
    ]
    listed = bindingd_cli("migrations", "list", "APP_DB", cwd=root)
    assert "applied  0002_seed.sql" in listed.stdout and "0 pending" in listed.stdout

    # A failing migration leaves nothing behind and stays pending.
    assert bindingd_cli("migrations", "create", "APP_DB", "broken", cwd=root).returncode == 0
    _write(
        root / "migrations/APP_DB/0003_broken.sql",
        "INSERT INTO items (id, name) VALUES (3, 'x');\nINSERT INTO nowhere (id) VALUES (1);\n",
    )
    failed = bindingd_cli("migrations", "apply", "APP_DB", cwd=root)
    assert failed.returncode == 1
    assert "0003_broken.sql" in failed.stderr and "statement 1" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert query("SELECT count(*) FROM items") == [(2,)]
    assert "pending  0003_broken.sql" in bindingd_cli("migrations", "list", "APP_DB", cwd=root).stdout


def test_protected_env_needs_allow_writes(tmp_path: Path) -> None:
    root = tmp_path / "project"
    _project(root, "", "{ type: sql }")
    assert bindingd_cli("migrations", "create", "APP_DB", "init", cwd=root).returncode == 0
    _write(root / "migrations/APP_DB/0001_init.sql", "CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    refused = bindingd_cli("migrations", "apply", "APP_DB", "--env", "production", cwd=root)
    assert refused.returncode == 1
    assert "protected" in refused.stderr and "--allow-writes" in refused.stderr
    listed = bindingd_cli("migrations", "list", "APP_DB", "--env", "production", cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert "pending  0001_init.sql" in listed.stdout
    allowed = bindingd_cli("migrations", "apply", "APP_DB", "--env", "production", "--allow-writes", cwd=root)
    assert allowed.returncode == 0, allowed.stderr
    assert "1 migration applied" in allowed.stdout


def test_mistakes_are_named(tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_project(root, "version: 1\nbindings:\n  APP_DB: { type: sql }\n  CACHE: { type: kv }\n")
    missing = bindingd_cli("migrations", "list", "NOPE", cwd=root)
    assert missing.returncode == 2 and 'binding "NOPE" is not defined' in missing.stderr
    wrong = bindingd_cli("migrations", "create", "CACHE", "x", cwd=root)
    assert wrong.returncode == 2 and "kv binding, not sql" in wrong.stderr
    (root / "migrations/APP_DB").mkdir(parents=True)
    (root / "migrations/APP_DB/init.sql").write_text("SELECT 1;")
    stray = bindingd_cli("migrations", "apply", "APP_DB", cwd=root)
    assert stray.returncode == 2 and "NNNN_name.sql" in stray.stderr
