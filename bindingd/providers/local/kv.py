"""Workers KV on a SQLite file under `.bindingd/state/kv/<BINDING>.sqlite3`.

Reads run on the event loop: in WAL mode they never wait for a writer, and a point lookup costs
microseconds, less than a hop to a thread. Writes run on one writer thread with their own
connection, so a write waiting on the file lock (another process, a slow disk) never stalls
the loop. Keys are TEXT with SQLite's BINARY collation, which orders them by UTF-8 bytes, the
order Workers KV lists in.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bindingd.config.model import Binding
from bindingd.domain.kv import KVKeyInfo, KVRecord, bulk_too_large
from bindingd.errors import backend_unavailable
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.sqlite import open_store, private_folder, write_failure

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    metadata   TEXT,
    expiration INTEGER
);
CREATE INDEX IF NOT EXISTS kv_expiration ON kv (expiration) WHERE expiration IS NOT NULL;
"""
# Expired rows are invisible at once; they are deleted in the background every this many puts.
PURGE_EVERY_PUTS = 1000


class LocalKV:
    """The local KV provider; one per binding, one file per binding."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kv-{path.stem}")
        self._puts = 0

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> LocalKV:
        return cls(context.state_dir / "kv" / f"{binding.name}.sqlite3")

    async def start(self) -> None:
        try:
            private_folder(self.path.parent)
            self._writer = await self._in_writer(open_store, self.path)
            await self._in_writer(self._writer.executescript, SCHEMA)
            self._reader = open_store(self.path)
        except (OSError, sqlite3.Error) as e:
            raise backend_unavailable(f"cannot open the local KV store {self.path}: {e}") from e

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            await self._in_writer(self._writer.close)
        self._write_thread.shutdown(wait=True)

    async def check(self) -> str:
        self._read("SELECT 1")
        return f"sqlite file {self.path.name}"

    async def get(self, key: str, now: float) -> KVRecord | None:
        rows = self._read(
            "SELECT key, value, metadata, expiration FROM kv"
            " WHERE key = ? AND (expiration IS NULL OR expiration > ?)",
            (key, now),
        )
        return KVRecord(*rows[0]) if rows else None

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        marks = ",".join("?" * len(keys))
        # Sizes first, so an oversized answer is refused without reading the values.
        total = self._read(
            f"SELECT coalesce(sum(length(value)), 0) FROM kv WHERE key IN ({marks})"
            " AND (expiration IS NULL OR expiration > ?)",
            (*keys, now),
        )[0][0]
        if total > max_bytes:
            raise bulk_too_large()
        rows = self._read(
            f"SELECT key, value, metadata, expiration FROM kv WHERE key IN ({marks})"
            " AND (expiration IS NULL OR expiration > ?)",
            (*keys, now),
        )
        found = {row[0]: KVRecord(*row) for row in rows}
        return [found.get(key) for key in keys]

    async def put(self, key: str, value: bytes, expiration: int | None, metadata_json: str | None) -> None:
        await self._write(
            "INSERT INTO kv (key, value, metadata, expiration) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata,"
            " expiration = excluded.expiration",
            (key, value, metadata_json, expiration),
        )
        self._puts += 1
        if self._puts % PURGE_EVERY_PUTS == 0:
            await self.purge_expired()

    async def delete(self, key: str) -> None:
        await self._write("DELETE FROM kv WHERE key = ?", (key,))

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        # A prefix range instead of LIKE: LIKE is case-insensitive and treats % and _ as wildcards.
        clauses = ["(expiration IS NULL OR expiration > ?)"]
        params: list[object] = [now]
        if prefix:
            clauses.append("key >= ?")
            params.append(prefix)
            upper = _prefix_upper_bound(prefix)
            if upper is not None:
                clauses.append("key < ?")
                params.append(upper)
        if after is not None:
            clauses.append("key > ?")
            params.append(after)
        rows = self._read(
            f"SELECT key, expiration, metadata FROM kv WHERE {' AND '.join(clauses)} ORDER BY key LIMIT ?",
            (*params, limit + 1),
        )
        keys = [KVKeyInfo(name=k, expiration=exp, metadata_json=meta) for k, exp, meta in rows[:limit]]
        return keys, len(rows) > limit

    async def purge_expired(self) -> None:
        await self._write("DELETE FROM kv WHERE expiration IS NOT NULL AND expiration <= ?", (time.time(),))

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        assert self._reader is not None, "provider not started"
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:  # DatabaseError itself: a damaged file
            raise backend_unavailable(f"cannot read the local KV store {self.path}: {e}") from e

    async def _write(self, sql: str, params: tuple[object, ...]) -> None:
        assert self._writer is not None, "provider not started"
        try:
            await self._in_writer(self._writer.execute, sql, params)
        except sqlite3.DatabaseError as e:
            raise write_failure(e, "KV store", self.path) from e

    async def _in_writer(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, fn, *args)


def _prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`, or None."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            chars[-1] = chr(last + 1)
            # Skip the surrogate block, which cannot appear in a UTF-8 key.
            if 0xD800 <= last + 1 <= 0xDFFF:
                chars[-1] = chr(0xE000)
            return "".join(chars)
        chars.pop()
    return None
