"""How every local provider opens its SQLite file (kv, objects and queues alike), and how the
state under .bindingd/ is created: for this user only, whatever the umask."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bindingd.errors import BindingdError, backend_timeout, backend_unavailable

# How long a write waits for another process holding the file's write lock.
BUSY_TIMEOUT_S = 5.0


def private_folder(path: Path) -> None:
    """Create `path` and its missing parents (.bindingd/, state/, ...) as 0700 folders.

    Path.mkdir(parents=True) gives parents the umask's mode: 0755 (or 0777 under umask 000)
    would let other users list and read the stores. Existing folders are left as they are.
    """
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another process made it at the same instant
        os.chmod(folder, 0o700)  # a umask can take bits away from mkdir's mode, never add any


def private_file(path: Path) -> None:
    """Create `path` as an empty 0600 file if it does not exist yet. SQLite would create it
    0644 (0666 under umask 000), and its -wal and -shm files copy the database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


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
