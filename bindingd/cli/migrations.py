"""`bindingd migrations create|list|apply BINDING`, the way `wrangler d1 migrations` works.

Migrations are numbered `.sql` files in `migrations/<BINDING>/` beside bindingd.yaml
(`0001_create_users.sql`, ...). `apply` runs the pending ones in order against the database the
env maps the binding to, each in its own transaction together with its row in the
`d1_migrations` table of that database, so a migration is never applied twice and a failing one
leaves nothing behind (MySQL commits DDL implicitly: there a failing migration can leave its
earlier DDL statements applied). The command talks to the backend directly through the
binding's provider, so no daemon needs to run; a protected env needs `--allow-writes`.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bindingd.config.model import Binding, Config
from bindingd.domain import sql
from bindingd.domain.sql import SqlAccess, SqlProvider, SqlStatement
from bindingd.errors import BindingdError, permission_denied
from bindingd.providers.connections import ProviderContext, SharedConnections
from bindingd.registry import create_provider

TABLE = "d1_migrations"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL UNIQUE, applied_at VARCHAR(40) NOT NULL)"
)
_FILE = re.compile(r"^(\d{4,})_([A-Za-z0-9_\-]+)\.sql$")
# Migrations may take a while; the binding's timeout still applies when it is longer.
MIN_TIMEOUT_S = 300.0


class MigrationError(Exception):
    """A mistake in the migrations folder or the command line; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str  # the file name, which is what d1_migrations records
    path: Path


def folder(config: Config, binding: str) -> Path:
    """migrations/<BINDING>/ beside bindingd.yaml; a wrangler file's D1 binding: its
    `migrations_dir` (default migrations/), as `wrangler d1 migrations` reads it."""
    return config.migrations.get(binding) or config.root / "migrations" / binding


def _sql_binding(config: Config, name: str) -> Binding:
    binding = config.bindings.get(name)
    if binding is None:
        sql_names = ", ".join(n for n, b in config.bindings.items() if b.type == "sql") or "none"
        raise MigrationError(
            f'binding "{name}" is not defined in env "{config.env}" (sql bindings: {sql_names})'
        )
    if binding.type != "sql":
        raise MigrationError(f'binding "{name}" is a {binding.type} binding, not sql')
    return binding


def migrations(config: Config, binding: str) -> list[Migration]:
    """The binding's migration files, in order; a stray or duplicate number is an error."""
    found: list[Migration] = []
    directory = folder(config, binding)
    if not directory.is_dir():
        return found
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: a migration is named NNNN_name.sql (for example 0001_init.sql)")
        found.append(Migration(int(match.group(1)), path.name, path))
    found.sort(key=lambda m: m.number)
    for a, b in itertools.pairwise(found):
        if a.number == b.number:
            raise MigrationError(f"{a.path.name} and {b.path.name} have the same number; renumber one")
    return found


def create(config: Config, binding: str, name: str) -> Path:
    _sql_binding(config, binding)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    if not slug:
        raise MigrationError(f"{name!r} is not a usable migration name: use letters and digits")
    existing = migrations(config, binding)
    number = existing[-1].number + 1 if existing else 1
    directory = folder(config, binding)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{number:04d}_{slug}.sql"
    path.write_text(f"-- Migration number: {number:04d} \t {datetime.datetime.now(datetime.UTC):%Y-%m-%d}\n")
    return path


@dataclass(frozen=True)
class Status:
    migration: Migration
    applied: bool


class Target:
    """The binding's database, opened through its provider (no daemon in between)."""

    def __init__(self, config: Config, binding: str, *, write: bool, allow_writes: bool) -> None:
        self.config = config
        self.binding = _sql_binding(config, binding)
        if write and config.protected and not allow_writes:
            raise permission_denied(
                f'env "{config.env}" is protected: applying migrations needs --allow-writes'
            )
        if write and self.binding.access == "read-only":
            raise permission_denied(
                f'binding "{binding}" is read-only in env "{config.env}"; nothing was applied'
            )
        timeout = max(float(self.binding.options.get("timeout", sql.DEFAULT_TIMEOUT_S)), MIN_TIMEOUT_S)
        self.access = SqlAccess(read_only=not write, timeout=timeout)
        self.dialect = sql.dialect_of(self.binding.backend_kind)
        self.provider: SqlProvider = create_provider(  # type: ignore[assignment]
            self.binding, ProviderContext(config.state_dir, SharedConnections())
        )

    async def __aenter__(self) -> Target:
        await self.provider.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.provider.close()

    async def applied(self) -> set[str]:
        # A read-only check first: listing must work where writes are refused.
        exists = await self._rows(self._table_exists())
        if not exists or not exists[0][0]:
            return set()
        return {str(row[0]) for row in await self._rows(SqlStatement(f"SELECT name FROM {TABLE}", []))}

    def _table_exists(self) -> SqlStatement:
        if self.dialect == "sqlite":
            return SqlStatement(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", [TABLE]
            )
        if self.dialect == "postgres":
            return SqlStatement("SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = ?", [TABLE])
        return SqlStatement(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name = ?",
            [TABLE],
        )

    async def _rows(self, statement: SqlStatement) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        cursor = await self.provider.query(statement, self.access)
        try:
            async for page in cursor.pages():
                rows.extend(page)
        finally:
            await cursor.finish(keep=False)  # after the last page, this only releases
        return rows

    async def apply(self, migration: Migration) -> None:
        script = migration.path.read_text(encoding="utf-8")
        statements = [SqlStatement(s, []) for s in sql.split_script(script, self.dialect)]
        record = SqlStatement(
            f"INSERT INTO {TABLE} (id, name, applied_at) VALUES (?, ?, ?)",
            [
                migration.number,
                migration.name,
                datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            ],
        )
        try:
            await self.provider.batch([*statements, record], self.access)
        except BindingdError as e:
            raise BindingdError(e.reason, f"{migration.name}: {e.message}") from e


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


async def status(config: Config, binding: str) -> list[Status]:
    files = migrations(config, binding)
    async with Target(config, binding, write=False, allow_writes=False) as target:
        done = await target.applied()
    return [Status(m, m.name in done) for m in files]


async def apply(
    config: Config, binding: str, *, allow_writes: bool, report: Callable[[Migration], None]
) -> int:
    """Apply the pending migrations in order; return how many were applied."""
    files = migrations(config, binding)
    async with Target(config, binding, write=True, allow_writes=allow_writes) as target:
        await target.provider.exec([CREATE_TABLE], target.access)
        done = await target.applied()
        pending = [m for m in files if m.name not in done]
        for migration in pending:
            await target.apply(migration)
            report(migration)
    return len(pending)
