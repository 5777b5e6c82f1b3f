"""PostgresKV: Workers KV in a table of a PostgreSQL database.

One table per binding (option `table`, default `bindingd_kv_<binding name in lower case>`), made
by the first write (a read of a table that does not exist yet finds nothing, so a read-only
binding never creates one):

    key bytea PRIMARY KEY, value bytea, metadata text, expiration bigint

Keys are stored as their UTF-8 bytes: bytea compares byte by byte, which is the order Workers KV
lists in, whatever the database's collation, and a key may hold any character text could not
(NUL). A listing walks the primary key from just after the cursor's last key, so a paging client
sees every key that exists throughout exactly once. Expired rows are invisible at once (every read
compares with the daemon's clock, as every KV provider does) and deleted every PURGE_EVERY_PUTS
puts.

The connection's pools are shared with the sql bindings of the same connection entry (see
client.py): a KV call takes a read-write session with this binding's statement timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg

from bindingd.config.model import Binding
from bindingd.config.urls import connection_address
from bindingd.domain.kv import KVKeyInfo, KVRecord, bulk_too_large
from bindingd.errors import BindingdError, backend_unavailable, permission_denied
from bindingd.providers.connections import ProviderContext
from bindingd.providers.postgres.client import CLIENT_GRACE_S, Pool, Pools, map_error

DEFAULT_TIMEOUT_S = 5.0
PURGE_EVERY_PUTS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    key        bytea PRIMARY KEY,
    value      bytea NOT NULL,
    metadata   text,
    expiration bigint
)
"""
_LIVE = "(expiration IS NULL OR expiration > $2::float8)"
_MISSING: tuple[type[BaseException], ...] = (asyncpg.exceptions.UndefinedTableError,)
_CREATED_MEANWHILE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.UniqueViolationError,
    asyncpg.exceptions.DuplicateTableError,
)


# PostgreSQL's longest identifier (NAMEDATALEN - 1), in bytes: it cuts a longer one silently.
MAX_IDENTIFIER = 63


def table_name(binding: Binding) -> str:
    """The binding's table: its `table` option (the config checked it is a plain name, see the
    registry), else from the binding's name, which is a plain name too."""
    table = binding.options.get("table")
    if table:
        return str(table)
    table = f"bindingd_kv_{binding.name.lower()}"
    if len(table) > MAX_IDENTIFIER:
        # PostgreSQL would cut it to 63 bytes: two long binding names alike in their first 51
        # characters would share one table, each seeing the other's keys.
        raise backend_unavailable(
            f'the default table name "{table}" is longer than PostgreSQL\'s {MAX_IDENTIFIER} bytes;'
            " give the binding a `table` option"
        )
    return table


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every one that starts with `prefix`, or None."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class PostgresKV:
    """The postgres KV provider: one per binding, sharing its connection entry's pools."""

    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.binding = binding
        self.connection = binding.connection
        self.table = table_name(binding)
        self.quoted = '"' + self.table + '"'
        self.timeout_s = float(binding.options.get("timeout") or DEFAULT_TIMEOUT_S)
        self.address = connection_address(self.connection)
        self._connections = context.connections
        self._pools: Pools | None = None
        self._puts = 0
        self._creating = asyncio.Lock()

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> PostgresKV:
        return cls(binding, context)

    async def start(self) -> None:
        self._pools = await self._connections.acquire(self.connection, Pools)

    async def close(self) -> None:
        if self._pools is not None:
            self._pools = None
            await self._connections.release(self.connection)

    async def _pool(self) -> Pool:
        assert self._pools is not None, "provider not started"
        return await self._pools.get(False, int(self.timeout_s * 1000))

    async def _run(
        self, method: str, sql: str, *args: Any, raw: tuple[type[BaseException], ...] = _MISSING
    ) -> Any:
        """One statement on a pooled session: `method` is fetch, fetchval or execute. The errors
        in `raw` (by default: a missing table) come back as they are, for the caller to decide
        about; every other failure as the error table's."""
        pool = await self._pool()
        wait = self.timeout_s + CLIENT_GRACE_S
        try:
            conn = await pool.pool.acquire(timeout=wait)
        except Exception as e:
            raise self._error(e) from None
        try:
            answer = await getattr(conn, method)(sql, *args, timeout=wait)
        except BaseException as e:
            # A failed or cancelled statement: the pool's full session reset before reuse.
            pool.release_later(conn)
            if isinstance(e, raw) or not isinstance(e, Exception):
                raise
            raise self._error(e) from None
        # Only this module's fixed statements ran, to the end: nothing to reset.
        pool.release_clean(conn)
        return answer

    async def _read(self, method: str, sql: str, *args: Any, missing: Any) -> Any:
        try:
            return await self._run(method, sql.format(table=self.quoted), *args)
        except asyncpg.exceptions.UndefinedTableError:
            return missing  # no write made the table yet: nothing is stored

    async def _write(self, sql: str, *args: Any) -> None:
        sql = sql.format(table=self.quoted)
        try:
            await self._run("execute", sql, *args)
        except asyncpg.exceptions.UndefinedTableError:
            await self._create_table()
            try:
                await self._run("execute", sql, *args)
            except asyncpg.exceptions.UndefinedTableError as e:
                raise self._error(e) from None

    async def _create_table(self) -> None:
        async with self._creating:  # the first puts of a burst all find no table: create it once
            # Another daemon may create it at the same moment: IF NOT EXISTS is not atomic.
            with contextlib.suppress(_CREATED_MEANWHILE):
                await self._run("execute", _SCHEMA.format(table=self.quoted), raw=_CREATED_MEANWHILE)

    def _error(self, e: BaseException) -> BindingdError:
        where = f'KV table "{self.table}" of connection "{self.connection.name}" ({self.address})'
        if isinstance(e, BindingdError):
            return e
        if isinstance(
            e, asyncpg.exceptions.InsufficientPrivilegeError | asyncpg.exceptions.ReadOnlySQLTransactionError
        ):
            return permission_denied(f"PostgreSQL refused access to the {where}: {e}")
        if isinstance(
            e,
            asyncpg.exceptions.DataError
            | asyncpg.exceptions.SyntaxOrAccessError
            | asyncpg.exceptions.IntegrityConstraintViolationError,
        ):
            # The table exists but is not bindingd's (other columns or types): not a caller's SQL.
            return backend_unavailable(f"the {where} cannot be used as a KV table: {e}")
        return map_error(e, self.connection)

    async def check(self) -> str:
        version = await self._run("fetchval", "SHOW server_version")
        return f"postgres {version} at {self.address}, table {self.table}"

    async def get(self, key: str, now: float) -> KVRecord | None:
        row = await self._read(
            "fetch",
            f"SELECT value, metadata, expiration FROM {{table}} WHERE key = $1 AND {_LIVE}",
            key.encode(),
            now,
            missing=[],
        )
        return KVRecord(key, bytes(row[0][0]), row[0][1], row[0][2]) if row else None

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        names = [key.encode() for key in keys]
        # Sizes first, so an oversized answer is refused without reading the values.
        total = await self._read(
            "fetchval",
            f"SELECT coalesce(sum(octet_length(value)), 0) FROM {{table}} WHERE key = ANY($1) AND {_LIVE}",
            names,
            now,
            missing=0,
        )
        if total > max_bytes:
            raise bulk_too_large()
        rows = await self._read(
            "fetch",
            f"SELECT key, value, metadata, expiration FROM {{table}} WHERE key = ANY($1) AND {_LIVE}",
            names,
            now,
            missing=[],
        )
        found = {bytes(r[0]): r for r in rows}
        return [
            KVRecord(key, bytes(r[1]), r[2], r[3]) if (r := found.get(name)) is not None else None
            for key, name in zip(keys, names, strict=True)
        ]

    async def put(
        self,
        key: str,
        value: bytes,
        expiration: int | None,
        metadata_json: str | None,
        ttl: int | None = None,
    ) -> None:
        await self._write(
            "INSERT INTO {table} (key, value, metadata, expiration) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata,"
            " expiration = excluded.expiration",
            key.encode(),
            value,
            metadata_json,
            expiration,
        )
        self._puts += 1
        if self._puts % PURGE_EVERY_PUTS == 0:
            await self._write(
                "DELETE FROM {table} WHERE expiration IS NOT NULL AND expiration <= $1", int(time.time())
            )

    async def delete(self, key: str) -> None:
        await self._read("execute", "DELETE FROM {table} WHERE key = $1", key.encode(), missing=None)

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        low = prefix.encode()
        if after is not None and after.encode() >= low:
            low, strict = after.encode(), True
        else:
            strict = False
        high = prefix_upper_bound(prefix.encode())
        rows = await self._read(
            "fetch",
            f"SELECT key, expiration, metadata FROM {{table}}"
            f" WHERE key {'>' if strict else '>='} $1 AND ($3::bytea IS NULL OR key < $3) AND {_LIVE}"
            " ORDER BY key LIMIT $4",
            low,
            now,
            high,
            limit + 1,
            missing=[],
        )
        keys = [
            KVKeyInfo(name=bytes(k).decode(), expiration=exp, metadata_json=meta)
            for k, exp, meta in rows[:limit]
        ]
        return keys, len(rows) > limit
