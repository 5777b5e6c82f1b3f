"""How every local provider opens its SQLite file (kv, objects and queues alike)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

# How long a write waits for another process holding the file's write lock.
BUSY_TIMEOUT_S = 5.0


def open_store(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a crash of the daemon; only a power cut can lose the last writes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
