"""The SQLite store under every local provider that keeps its state in one file (kv, objects,
queues; local SQL drives its connections itself, see sql.py).

Reads run on the event loop: in WAL mode they never wait for a writer, and a point lookup costs
microseconds, less than a hop to a thread. Writes run on one writer thread with their own
connection, so a write waiting on the file lock (another process, a slow disk) never stalls the
loop, and a check and the write that follows it on that thread are one step.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bindingd.errors import BindingdError, backend_timeout, backend_unavailable
from bindingd.providers.local.sqlite import BUSY_TIMEOUT_S, private_file, private_folder

T = TypeVar("T")


def open_store(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread."""
    private_file(path)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a crash of the daemon; only a power cut can lose the last writes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def write_failure(
    e: sqlite3.DatabaseError, store: str, path: Path, locked: Path | None = None
) -> BindingdError:
    """The error of a failed write to the local `store` at `path`: BACKEND_TIMEOUT when another
    process held the file's lock (`locked`, default `path`) too long, else BACKEND_UNAVAILABLE."""
    if "locked" in str(e) or "busy" in str(e):
        return backend_timeout(
            f"the local {store} {locked or path} stayed locked by another process for "
            f"{BUSY_TIMEOUT_S:.0f}s; close whatever holds it open"
        )
    return backend_unavailable(f"cannot write the local {store} {path}: {e}")


class SqliteStore:
    """One SQLite file: a reader connection used on the event loop, a writer connection used on
    its own thread. `store` names it in errors ("KV store"); `where` is what the open and write
    errors name (the provider's folder, when the file is one part of it), default the file."""

    def __init__(self, path: Path, *, store: str, thread_name: str, where: Path | None = None) -> None:
        self.path = path
        self.store = store
        self.where = where or path
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    async def open(self, schema: str, then: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Create the file (private) and `schema`, run `then` on the writer thread, open the reader."""
        try:
            private_folder(self.path.parent)
            self._writer = await self._on_thread(open_store, self.path)
            await self._on_thread(self._writer.executescript, schema)
            if then is not None:
                await self._on_thread(then, self._writer)
            self._reader = open_store(self.path)
        except (OSError, sqlite3.Error) as e:
            raise self.open_failure(e) from e

    def open_failure(self, e: Exception) -> BindingdError:
        return backend_unavailable(f"cannot open the local {self.store} {self.where}: {e}")

    async def close(self) -> None:
        """Close both connections; the writer's once the writes queued before it are done."""
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            await self._on_thread(self._writer.close)
        self._thread.shutdown(wait=True)

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql`, read right here on the event loop."""
        assert self._reader is not None, "provider not started"
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:  # DatabaseError itself: a damaged file
            raise backend_unavailable(f"cannot read the local {self.store} {self.path}: {e}") from e

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` on the writer thread with the writer connection. A BindingdError
        of `fn`'s goes through as it is; a failed write or file operation becomes one."""
        assert self._writer is not None, "provider not started"
        try:
            return await self._on_thread(fn, self._writer, *args)
        except BindingdError:
            raise
        except sqlite3.DatabaseError as e:
            raise write_failure(e, self.store, self.where, locked=self.path) from e
        except OSError as e:
            raise backend_unavailable(f"cannot write the local {self.store} {self.where}: {e}") from e

    async def execute(self, sql: str, params: tuple[object, ...]) -> None:
        """One statement on the writer thread (a transaction of its own)."""
        await self.write(sqlite3.Connection.execute, sql, params)

    def submit(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Queue `fn(conn)` on the writer thread without waiting for it (cleanup after a call
        that has gone)."""
        self._thread.submit(fn, self._writer)

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)


def prefix_upper_bound(prefix: str) -> str | None:
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


def prefix_clauses(prefix: str) -> tuple[list[str], list[object]]:
    """WHERE clauses (and their parameters) for the keys that start with `prefix`. A range
    instead of LIKE: LIKE is case-insensitive and treats % and _ as wildcards."""
    if not prefix:
        return [], []
    clauses: list[str] = ["key >= ?"]
    params: list[object] = [prefix]
    upper = prefix_upper_bound(prefix)
    if upper is not None:
        clauses.append("key < ?")
        params.append(upper)
    return clauses, params
