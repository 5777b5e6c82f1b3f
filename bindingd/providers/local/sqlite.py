"""How every local provider opens its SQLite file (kv, objects and queues alike)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bindingd.errors import BindingdError, backend_timeout, backend_unavailable

# How long a write waits for another process holding the file's write lock.
BUSY_TIMEOUT_S = 5.0


def open_store(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread."""
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
