"""How the state under .bindingd/ is created (for this user only, whatever the umask), and how
long a local SQLite file's writer waits for another process: for every local provider."""

from __future__ import annotations

import os
from pathlib import Path

# How long a write waits for another process holding the file's write lock.
BUSY_TIMEOUT_S = 5.0
BUSY_MS = round(BUSY_TIMEOUT_S * 1000)


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
