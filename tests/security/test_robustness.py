"""Hostile or damaged input gets a typed error or a one-line message, never a traceback, an
INTERNAL answer or unbounded memory (issue 12, items 15 and 16)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindingd_client import BackendUnavailable, InvalidArgument, connect_sync
from support import DaemonProcess, bindingd_cli, health_status, write_project

CONFIG = """
    version: 1
    bindings:
      KV: { type: kv }
      DB: { type: sql }
      FILES: { type: objects }
      JOBS: { type: queue }
"""


def alias_bomb(levels: int, width: int = 9) -> str:
    """A few hundred bytes whose aliases expand to width**levels values."""
    lines = ["version: 1", "l0: &l0 [" + ",".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# --- item 15: YAML alias bombs -----------------------------------------------------------------


def test_check_refuses_an_alias_bomb_in_bounded_memory(tmp_path: Path) -> None:
    bomb = alias_bomb(9)  # 9**9 = 387 million values once expanded
    assert len(bomb) < 500
    (tmp_path / "bindingd.yaml").write_text(bomb)
    limit = 1024 * 1024 * 1024  # before the fix this ran out of it (1.5 GiB unbounded)
    result = bindingd_cli("check", cwd=tmp_path, timeout=120, memory_limit=limit)
    assert result.returncode == 2, result
    line = one_error_line(result)
    assert line.startswith(f"bindingd: {tmp_path / 'bindingd.yaml'}:")
    assert "YAML aliases repeat more than" in line


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        """
        version: 1
        x-kv: &kv { type: kv }
        bindings:
          A: *kv
          B: { <<: *kv }
        """,
    )
    result = bindingd_cli("check", cwd=tmp_path)
    assert 'unknown key "x-kv"' in result.stderr  # the file's own mistake, found after expansion


def test_deep_nesting_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bindingd.yaml").write_text("version: 1\nx: " + "[" * 900 + "]" * 900 + "\n")
    result = bindingd_cli("check", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "nested more than" in one_error_line(result)


def test_sighup_with_an_alias_bomb_keeps_the_old_config_in_bounded_memory(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    daemon = DaemonProcess(tmp_path).start()
    try:
        assert daemon.proc is not None
        with connect_sync(endpoint=daemon.endpoint) as env:
            env.KV.put("before", "v")
        before = vm_hwm_kib(daemon.proc.pid)
        # 9**6 = 531441 values: over 100 MiB before the fix, yet small enough for a shared box.
        (tmp_path / "bindingd.yaml").write_text(alias_bomb(6))
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "reload failed" not in daemon.logs():
            assert time.monotonic() < deadline, daemon.logs()
            time.sleep(0.1)
        grown_mib = (vm_hwm_kib(daemon.proc.pid) - before) / 1024
        assert grown_mib < 64, f"the reload grew the daemon by {grown_mib:.0f} MiB"
        assert "YAML aliases repeat more than" in daemon.logs()
        assert health_status(daemon.endpoint) == "SERVING"
        with connect_sync(endpoint=daemon.endpoint) as env:
            assert env.KV.get("before") == "v"  # the old config still serves
    finally:
        daemon.stop()


# --- item 16: nested JSON, damaged stores, stale sockets -------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    write_project(tmp_path, CONFIG)
    d = DaemonProcess(tmp_path).start()
    yield d
    d.stop()


def test_a_cursor_of_deeply_nested_json_is_invalid_argument(daemon: DaemonProcess) -> None:
    for nested in ("[" * 100_000, '{"a":' * 50_000):
        cursor = base64.urlsafe_b64encode(nested.encode()).decode().rstrip("=")
        with connect_sync(endpoint=daemon.endpoint) as env:
            with pytest.raises(InvalidArgument, match="cursor is not valid"):
                env.KV.list(cursor=cursor)
            with pytest.raises(InvalidArgument, match="cursor is not valid"):
                env.FILES.list(cursor=cursor)


def damage_after_first_page(path: Path) -> None:
    """Keep page 1 (the header and the schema) and overwrite every later page with bytes that
    are no valid b-tree page."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    size = path.stat().st_size
    assert size > 4096, size
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(bytes(range(256)) * ((size - 4096) // 256))


def test_damaged_local_stores_are_backend_unavailable_naming_the_file(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    daemon = DaemonProcess(tmp_path).start()
    with connect_sync(endpoint=daemon.endpoint) as env:
        for i in range(20):
            env.KV.put(f"key-{i}", "v" * 500)
            env.FILES.put(f"obj-{i}", b"x" * 100)
            env.JOBS.send({"n": i})
        env.DB.exec("CREATE TABLE t (x BLOB)")
        env.DB.prepare("INSERT INTO t VALUES (randomblob(3000))").run()
    daemon.stop()
    state = tmp_path / ".bindingd" / "state"
    stores = {
        "KV": state / "kv" / "KV.sqlite3",
        "DB": state / "sql" / "DB.sqlite3",
        "FILES": state / "objects" / "FILES" / "objects.sqlite3",
        "JOBS": state / "queues" / "queues.sqlite3",
    }
    for path in stores.values():
        damage_after_first_page(path)
    daemon = DaemonProcess(tmp_path).start()
    try:
        with connect_sync(endpoint=daemon.endpoint) as env:
            calls = {
                "KV get": lambda: env.KV.get("key-1"),
                "KV list": lambda: env.KV.list(),
                "DB query": lambda: env.DB.prepare("SELECT * FROM t").all(),
                "FILES head": lambda: env.FILES.head("obj-1"),
                "FILES list": lambda: env.FILES.list(),
                "JOBS send": lambda: env.JOBS.send({"n": 99}),
            }
            for name, call in calls.items():
                with pytest.raises(BackendUnavailable) as raised:
                    call()
                binding = name.split()[0]
                where = stores[binding] if binding != "FILES" else stores[binding].parent
                assert str(where) in str(raised.value), f"{name}: {raised.value}"
    finally:
        daemon.stop()
    assert "unexpected failure" not in daemon.logs()


def test_call_with_deeply_nested_json_is_one_line(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    result = bindingd_cli("call", "KV", "put", "k", "v", "--metadata", "[" * 100_000, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "nested too deeply" in one_error_line(result)
    result = bindingd_cli("call", "JOBS", "send-batch", "-", cwd=tmp_path, stdin=b"[" * 100_000)
    assert result.returncode == 2, result
    assert "nested too deeply" in one_error_line(result)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the socket to another user")
def test_serve_onto_another_users_stale_socket_is_one_line(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()  # nobody answers on it any more
    os.chown(stale, 65534, 65534)
    result = bindingd_cli("serve", "--socket", str(stale), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result
    assert "socket of another user" in one_error_line(result)
    assert stale.is_socket()  # theirs: left in place
