"""Everything bindingd creates under .bindingd/ is for its user only, whatever the umask
(issue 12, item 11): `check`, `call`, `migrations apply` and `serve` used to leave .bindingd/ and
the stores 0755 / 0644 (0777 / 0666 under umask 000) until the first `serve` tightened part of it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import DaemonProcess, bindingd_cli, write_project

CONFIG = """
    version: 1
    bindings:
      KV: { type: kv }
      DB: { type: sql }
      FILES: { type: objects }
      JOBS: { type: queue }
"""


def run(root: Path, umask: int, *args: str) -> subprocess.CompletedProcess[str]:
    result = bindingd_cli(*args, cwd=root, timeout=120, umask=umask)
    assert result.returncode == 0, result
    return result


def modes(root: Path) -> Iterator[tuple[Path, int, str]]:
    """(path, permission bits, kind) of .bindingd/ and everything in it."""
    state = root / ".bindingd"
    assert state.is_dir()
    for path in [state, *state.rglob("*")]:
        info = path.lstat()
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode) else "file"
        yield path, stat.S_IMODE(info.st_mode), kind


def assert_private(root: Path) -> None:
    wrong = [
        f"{oct(mode)} {kind} {path.relative_to(root)}"
        for path, mode, kind in modes(root)
        if mode != (0o700 if kind == "dir" else 0o600)
    ]
    assert not wrong, "not private: " + ", ".join(wrong)


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_check_creates_private_state(tmp_path: Path, umask: int) -> None:
    write_project(tmp_path, CONFIG)
    run(tmp_path, umask, "check")
    assert (tmp_path / ".bindingd" / "state" / "kv" / "KV.sqlite3").is_file()
    assert_private(tmp_path)


def test_call_creates_private_state(tmp_path: Path, umask: int) -> None:
    write_project(tmp_path, CONFIG)
    run(tmp_path, umask, "call", "KV", "put", "k", "v")
    run(tmp_path, umask, "call", "DB", "exec", "CREATE TABLE t (x)")
    run(tmp_path, umask, "call", "JOBS", "send", '"hello"')
    assert_private(tmp_path)


def test_migrations_apply_creates_private_state(tmp_path: Path, umask: int) -> None:
    write_project(tmp_path, CONFIG)
    folder = tmp_path / "migrations" / "DB"
    folder.mkdir(parents=True)
    (folder / "0001_init.sql").write_text("CREATE TABLE users (id INTEGER PRIMARY KEY);\n")
    run(tmp_path, umask, "migrations", "apply", "DB")
    assert (tmp_path / ".bindingd" / "state" / "sql" / "DB.sqlite3").is_file()
    assert_private(tmp_path)


def test_serve_keeps_state_private_while_serving(tmp_path: Path, umask: int) -> None:
    """Checked while the daemon runs, so the -wal and -shm files of every store are there too."""
    write_project(tmp_path, CONFIG)
    old = os.umask(umask)  # the daemon inherits it
    try:
        daemon = DaemonProcess(tmp_path).start()
    finally:
        os.umask(old)
    try:
        env = {"BINDINGD_ENDPOINT": daemon.endpoint}
        for args in (("KV", "put", "k", "v"), ("DB", "exec", "CREATE TABLE t (x)")):
            result = bindingd_cli("call", *args, cwd=tmp_path, env=env)
            assert result.returncode == 0, result
        names = {path.name for path, _, _ in modes(tmp_path)}
        assert {"KV.sqlite3-wal", "DB.sqlite3-wal", "bindingd.sock"} <= names
        assert_private(tmp_path)
    finally:
        daemon.stop()


def test_existing_user_folders_are_left_alone(tmp_path: Path) -> None:
    """Only what bindingd creates is made private: the project folder keeps its mode."""
    write_project(tmp_path, CONFIG)
    tmp_path.chmod(0o755)
    run(tmp_path, 0o022, "check")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert_private(tmp_path)
