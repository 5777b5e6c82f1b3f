"""What the postgres KV provider does beyond the KV conformance suite, on the machine's real
PostgreSQL: one connection entry serving kv and sql side by side, its table made by the first
write only, and what a caller or a config can and cannot reach through it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from bindingd_client import BackendUnavailable, PermissionDenied
from support import POSTGRES, bindingd_cli, connected, write_project


def _config(database: str, bindings: str, dsn: str | None = None) -> str:
    return f"""
        version: 1
        connections:
          pg: {{ kind: postgres, dsn: "{dsn or POSTGRES.dsn(database)}" }}
        bindings:
{bindings}
    """


async def _tables(database: str) -> set[str]:
    rows = await POSTGRES.admin(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=database
    )
    return {row[0] for row in rows}


async def test_one_connection_serves_kv_and_sql_side_by_side(tmp_path: Path) -> None:
    async with POSTGRES.database() as database:
        bindings = """
          CACHE:  { type: kv, connection: pg }
          APP_DB: { type: sql, connection: pg }
        """
        config = write_project(tmp_path, _config(database, bindings))
        async with connected(config) as env:
            await env.CACHE.put("a\x00b", "nul inside")  # text columns could not hold it
            await env.CACHE.put("\U0001f600", "emoji", metadata={"m": 1})
            assert await env.CACHE.get("a\x00b") == "nul inside"
            rows = (
                await env.APP_DB.prepare("SELECT key, value FROM bindingd_kv_cache ORDER BY key").all()
            ).results
            assert [bytes(r["key"]) for r in rows] == [b"a\x00b", "\U0001f600".encode()]
            listed = await env.CACHE.list()
            assert [k.name for k in listed.keys] == ["a\x00b", "\U0001f600"]
        checked = bindingd_cli("check", "--config", str(config), cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "table bindingd_kv_cache" in checked.stdout


async def test_a_read_only_binding_never_creates_its_table(tmp_path: Path) -> None:
    async with POSTGRES.database() as database:
        bindings = """
          CACHE: { type: kv, connection: pg, access: read-only }
        """
        async with connected(write_project(tmp_path, _config(database, bindings))) as env:
            assert await env.CACHE.get("k") is None
            assert (await env.CACHE.list()).keys == []
            assert await env.CACHE.get(["a", "b"]) == {"a": None, "b": None}
            with pytest.raises(PermissionDenied):
                await env.CACHE.put("k", "v")
        assert await _tables(database) == set()


async def test_the_table_option_is_a_plain_name_only(tmp_path: Path) -> None:
    for table in ('x"; DROP TABLE victim; --', "a.b", "9lives", "x" * 64, ""):
        bindings = f"""
          CACHE: {{ type: kv, connection: pg, table: {table!r} }}
        """
        write_project(tmp_path, _config("postgres", bindings))
        checked = bindingd_cli("check", cwd=tmp_path)
        assert checked.returncode == 2, (table, checked.stdout, checked.stderr)
        assert "bindings.CACHE.table" in checked.stderr and "plain table name" in checked.stderr


async def test_a_binding_name_too_long_for_its_default_table_is_refused(tmp_path: Path) -> None:
    # PostgreSQL cuts identifiers to 63 bytes: these two would share one table.
    first, second = "C" * 51 + "_ONE", "C" * 51 + "_TWO"
    async with POSTGRES.database() as database:
        bindings = f"""
          {first}: {{ type: kv, connection: pg }}
          {second}: {{ type: kv, connection: pg }}
          {"C" * 51}: {{ type: kv, connection: pg }}
        """
        write_project(tmp_path, _config(database, bindings))
        checked = bindingd_cli("check", cwd=tmp_path)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        failed = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
        assert len(failed) == 2 and all("give the binding a `table` option" in f for f in failed), failed
        assert f"table bindingd_kv_{'c' * 51}" in checked.stdout  # 63 bytes: the longest that fits


async def test_a_table_that_is_not_a_kv_table_is_named_not_used(tmp_path: Path) -> None:
    async with POSTGRES.database() as database:
        await POSTGRES.admin("CREATE TABLE orders (id int PRIMARY KEY, total numeric)", database=database)
        await POSTGRES.admin("INSERT INTO orders VALUES (1, 9.5)", database=database)
        bindings = """
          CACHE: { type: kv, connection: pg, table: orders }
        """
        async with connected(write_project(tmp_path, _config(database, bindings))) as env:
            for attempt in (env.CACHE.put("k", "v"), env.CACHE.get("k"), env.CACHE.list()):
                with pytest.raises(BackendUnavailable) as caught:
                    await attempt
                assert 'KV table "orders"' in str(caught.value) and "cannot be used as a KV table" in str(
                    caught.value
                )
        (total,) = (await POSTGRES.admin("SELECT count(*) FROM orders", database=database))[0]
        assert total == 1


async def test_a_role_without_rights_on_the_table_gets_permission_denied(tmp_path: Path) -> None:
    role = f"kv_{uuid.uuid4().hex[:10]}"
    async with POSTGRES.database() as database:
        await POSTGRES.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        try:
            # The admin made the table; the binding's role may connect, not read or write it.
            await POSTGRES.admin(
                "CREATE TABLE team_cache (key bytea PRIMARY KEY, value bytea NOT NULL,"
                " metadata text, expiration bigint)",
                database=database,
            )
            await POSTGRES.admin(f"REVOKE CREATE ON SCHEMA public FROM {role}", database=database)
            bindings = """
              CACHE: { type: kv, connection: pg, table: team_cache }
            """
            dsn = POSTGRES.dsn(database, user=role, password=f"pw-{role}")
            async with connected(write_project(tmp_path, _config(database, bindings, dsn))) as env:
                for attempt in (env.CACHE.put("k", "v"), env.CACHE.get("k")):
                    with pytest.raises(PermissionDenied) as caught:
                        await attempt
                    assert "team_cache" in str(caught.value)
                    assert f"pw-{role}" not in str(caught.value)
        finally:
            await POSTGRES.admin(f"DROP OWNED BY {role}", database=database)
            await POSTGRES.admin(f"DROP ROLE IF EXISTS {role}")
