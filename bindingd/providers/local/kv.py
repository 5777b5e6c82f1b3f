"""Workers KV on a SQLite file under `.bindingd/state/kv/<BINDING>.sqlite3`.

Reads run on the event loop, writes on the store's writer thread (see store.py). Keys are TEXT
with SQLite's BINARY collation, which orders them by UTF-8 bytes, the order Workers KV lists in.
"""

from __future__ import annotations

import time
from pathlib import Path

from bindingd.config.model import Binding
from bindingd.domain.kv import KVKeyInfo, KVRecord, bulk_too_large
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.store import SqliteStore, prefix_clauses

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
        self.store = SqliteStore(path, store="KV store", thread_name=f"kv-{path.stem}")
        self._puts = 0

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> LocalKV:
        return cls(context.state_dir / "kv" / f"{binding.name}.sqlite3")

    async def start(self) -> None:
        await self.store.open(SCHEMA)

    async def close(self) -> None:
        await self.store.close()

    async def check(self) -> str:
        self.store.read("SELECT 1")
        return f"sqlite file {self.path.name}"

    async def get(self, key: str, now: float) -> KVRecord | None:
        rows = self.store.read(
            "SELECT key, value, metadata, expiration FROM kv"
            " WHERE key = ? AND (expiration IS NULL OR expiration > ?)",
            (key, now),
        )
        return KVRecord(*rows[0]) if rows else None

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        marks = ",".join("?" * len(keys))
        # Sizes first, so an oversized answer is refused without reading the values.
        total = self.store.read(
            f"SELECT coalesce(sum(length(value)), 0) FROM kv WHERE key IN ({marks})"
            " AND (expiration IS NULL OR expiration > ?)",
            (*keys, now),
        )[0][0]
        if total > max_bytes:
            raise bulk_too_large()
        rows = self.store.read(
            f"SELECT key, value, metadata, expiration FROM kv WHERE key IN ({marks})"
            " AND (expiration IS NULL OR expiration > ?)",
            (*keys, now),
        )
        found = {row[0]: KVRecord(*row) for row in rows}
        return [found.get(key) for key in keys]

    async def put(
        self,
        key: str,
        value: bytes,
        expiration: int | None,
        metadata_json: str | None,
        ttl: int | None = None,
    ) -> None:
        await self.store.execute(
            "INSERT INTO kv (key, value, metadata, expiration) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata,"
            " expiration = excluded.expiration",
            (key, value, metadata_json, expiration),
        )
        self._puts += 1
        if self._puts % PURGE_EVERY_PUTS == 0:
            await self.purge_expired()

    async def delete(self, key: str) -> None:
        await self.store.execute("DELETE FROM kv WHERE key = ?", (key,))

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        clauses, params = prefix_clauses(prefix)
        clauses.insert(0, "(expiration IS NULL OR expiration > ?)")
        params.insert(0, now)
        if after is not None:
            clauses.append("key > ?")
            params.append(after)
        rows = self.store.read(
            f"SELECT key, expiration, metadata FROM kv WHERE {' AND '.join(clauses)} ORDER BY key LIMIT ?",
            (*params, limit + 1),
        )
        keys = [KVKeyInfo(name=k, expiration=exp, metadata_json=meta) for k, exp, meta in rows[:limit]]
        return keys, len(rows) > limit

    async def purge_expired(self) -> None:
        await self.store.execute(
            "DELETE FROM kv WHERE expiration IS NOT NULL AND expiration <= ?", (time.time(),)
        )
