"""The `bindingd` command line as a new user meets it (issue 18): pipes, options, messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import bindingd_cli, write_project

CONFIG = """
    version: 1
    env: dev
    bindings:
      CACHE:  { type: kv }
      ASSETS: { type: objects }
      APP_DB: { type: sql }
      JOBS:   { type: queue }
      SITE_NAME: { type: var, value: "Example Shop" }
    envs:
      production:
        protected: true
      review: {}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, CONFIG)
    return tmp_path


def _piped(project: Path, *args: str, read: int = 0) -> tuple[int, str]:
    """`bindingd ARGS | head -c READ`: read `read` bytes of stdout, close the pipe, and return the
    exit code and stderr (0 bytes: the reader is gone before anything is written, as `| true`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bindingd", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    if read:
        assert len(proc.stdout.read(read)) == read
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    return proc.wait(timeout=60), stderr


def test_a_closed_pipe_ends_quietly(project: Path) -> None:
    (project / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    assert bindingd_cli("call", "ASSETS", "put", "big.bin", "big.bin", cwd=project).returncode == 0
    assert bindingd_cli("call", "JOBS", "send", '{"a": 1}', cwd=project).returncode == 0
    quiet = (0, -signal.SIGPIPE)
    for args, read in (
        (("call", "ASSETS", "get", "big.bin"), 10),
        (("call", "APP_DB", "query", "SELECT 1 AS one"), 0),
        (("call", "ASSETS", "head", "big.bin"), 0),
        (("call", "CACHE", "list"), 0),
        (("call", "JOBS", "consume", "--wait", "2"), 0),
        (("bindings",), 0),
    ):
        code, stderr = _piped(project, *args, read=read)
        assert code in quiet and stderr == "", (args, code, stderr)


def test_global_options_before_or_after_the_command(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    before = bindingd_cli("--env", "review", "call", "CACHE", "put", "k", "v", cwd=project)
    assert before.returncode == 0, before.stderr
    protected = bindingd_cli("--env", "production", "call", "CACHE", "put", "k", "v", cwd=project)
    assert protected.returncode == 1 and 'env "production" is protected' in protected.stderr
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    config = str(project / "bindingd.yaml")
    for args in (
        ("--config", config, "--env", "review", "bindings"),
        ("bindings", "--config", config, "--env", "review"),
        ("--log-level", "debug", "--log-format", "json", "--config", config, "bindings", "--env", "review"),
        ("--config", config, "call", "SITE_NAME", "get", "--env", "review", "--log-level", "error"),
        ("--config", config, "--env", "review", "check"),
        ("--config", config, "--env", "review", "migrations", "list", "APP_DB"),
        ("--config", config, "--env", "review", "run", "--", sys.executable, "-c", "print('review')"),
    ):
        result = bindingd_cli(*args, cwd=elsewhere)
        assert result.returncode == 0, (args, result.stderr)
        assert "review" in result.stdout or "Example Shop" in result.stdout, (args, result.stdout)


def test_usage_errors_show_the_usage_once(project: Path) -> None:
    for args, said in (
        (
            ("CACHE", "put", "k", "v", "--ttl", "abc"),
            "call CACHE put: argument --ttl: invalid int value: 'abc'",
        ),
        (("CACHE", "put", "k", "v", "--metadata", "{x"), "call CACHE put: --metadata is not valid JSON"),
        (("CACHE", "put"), "call CACHE put: the following arguments are required: key, value"),
        (("JOBS", "send", "{x"), "call JOBS send: the body is not valid JSON"),
        (("SITE_NAME", "get", "extra"), "call SITE_NAME get: unrecognized arguments: extra"),
    ):
        result = bindingd_cli("call", *args, cwd=project)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert lines[0].startswith(f"usage: bindingd call {args[0]} {args[1]} "), (args, result.stderr)
        assert result.stderr.count("usage:") == 1 and result.stderr.count("bindingd call") == 1, result.stderr
        assert lines[-1].startswith(f"bindingd: {said}"), (args, result.stderr)
        assert "Traceback" not in result.stderr

    unknown = bindingd_cli("call", "CACHE", "frob", cwd=project)
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines() == [
        "bindingd: call CACHE frob: unknown kv operation 'frob' "
        "(kv: get, get-with-metadata, put, delete, list)"
    ]
    no_op = bindingd_cli("call", "CACHE", cwd=project)
    assert no_op.returncode == 2 and "required" not in no_op.stderr
    assert no_op.stderr.startswith("bindingd: call CACHE: name an operation") and "kv: get," in no_op.stderr

    helped = bindingd_cli("call", "SITE_NAME", "get", "--help", cwd=project)
    assert (helped.returncode, helped.stderr) == (0, "") and helped.stdout.startswith(
        "usage: bindingd call SITE_NAME get"
    )


def test_writes_print_nothing_and_misses_say_so(project: Path) -> None:
    (project / "a.txt").write_text("hello\n")
    for args in (
        ("CACHE", "put", "k", "v"),
        ("CACHE", "delete", "k"),
        ("ASSETS", "put", "a.txt", "a.txt"),
        ("ASSETS", "get", "a.txt", "-o", "copy.txt"),
        ("ASSETS", "delete", "a.txt"),
        ("JOBS", "send", '{"a": 1}'),
        ("JOBS", "send-batch", '[{"body": 2}]'),
    ):
        result = bindingd_cli("call", *args, cwd=project)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), args
    assert (project / "copy.txt").read_text() == "hello\n"
    # --json asks for the stored object's metadata.
    shown = bindingd_cli("call", "ASSETS", "put", "a.txt", "a.txt", "--json", cwd=project)
    assert shown.returncode == 0 and '"key": "a.txt"' in shown.stdout

    for args, said in (
        (("CACHE", "get", "nope"), 'bindingd: key "nope" not found in CACHE\n'),
        (("ASSETS", "head", "nope"), 'bindingd: object "nope" not found in ASSETS\n'),
        (("ASSETS", "get", "nope"), 'bindingd: object "nope" not found in ASSETS\n'),
    ):
        missing = bindingd_cli("call", *args, cwd=project)
        assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", said)

    taken = bindingd_cli("call", "JOBS", "consume", "--wait", "1", cwd=project)
    assert taken.returncode == 0 and len(taken.stdout.splitlines()) == 2
    empty = bindingd_cli("call", "JOBS", "consume", "--wait", "1", cwd=project)
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        1,
        "",
        "bindingd: no messages in JOBS within 1s\n",
    )


def test_the_protected_env_hint_names_the_command_in_use(project: Path) -> None:
    script = (
        "from bindingd_client import PermissionDenied, connect_sync\n"
        "with connect_sync() as env:\n"
        "    try:\n"
        "        env.CACHE.put('k', 'v')\n"
        "    except PermissionDenied as e:\n"
        "        print(e)\n"
    )
    result = bindingd_cli("--env", "production", "run", "--", sys.executable, "-c", script, cwd=project)
    assert result.returncode == 0, result.stderr
    assert 'env "production" is protected' in result.stdout and "run --allow-writes" in result.stdout
    allowed = bindingd_cli(
        "run", "--env", "production", "--allow-writes", "--", sys.executable, "-c", script, cwd=project
    )
    assert (allowed.returncode, allowed.stdout) == (0, ""), allowed.stderr


@pytest.mark.parametrize(
    ("value", "got"), [("0755", "an integer"), ("1.50", "a number"), ("true", "a boolean")]
)
def test_unquoted_var_values_are_refused_alike(tmp_path: Path, value: str, got: str) -> None:
    write_project(tmp_path, f"version: 1\nbindings:\n  MODE: {{ type: var, value: {value} }}\n")
    result = bindingd_cli("check", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"bindingd: {tmp_path / 'bindingd.yaml'}:3: bindings.MODE.value: "
        f"expected a string, got {got}; quote it to write a string\n"
    )


def test_bindings_and_check_as_json(project: Path) -> None:
    import json

    listed = bindingd_cli("bindings", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    rows = {row["binding"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"CACHE", "ASSETS", "APP_DB", "JOBS", "SITE_NAME"}
    assert rows["SITE_NAME"]["value"] == "Example Shop" and rows["CACHE"]["type"] == "kv"
    # No daemon runs: each binding is probed, as check does (it said "no daemon" before).
    assert rows["CACHE"]["env"] == "dev" and rows["CACHE"]["health"] == "serving"

    checked = bindingd_cli("check", "--json", cwd=project)
    assert checked.returncode == 0, checked.stderr
    shown = json.loads(checked.stdout)
    assert shown["env"] == "dev" and shown["config"] == str(project / "bindingd.yaml")
    assert {b["name"]: b["ok"] for b in shown["bindings"]} == dict.fromkeys(rows, True)


def test_an_unreachable_nats_is_named_at_once(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          bus: {{ kind: nats, url: "nats://127.0.0.1:{port}" }}
        bindings:
          Q: {{ type: queue, connection: bus }}
        """,
    )
    said = f"cannot reach nats at 127.0.0.1:{port}: connection refused"
    started = time.monotonic()
    sent = bindingd_cli("call", "Q", "send", "1", cwd=tmp_path)
    assert sent.returncode == 1 and said in sent.stderr, sent.stderr
    checked = bindingd_cli("check", cwd=tmp_path)
    assert checked.returncode == 1 and f"FAIL  Q (queue, bus): {said}" in checked.stdout, checked.stdout
    assert time.monotonic() - started < 12  # it was 5 s for check and 13 s for call, with no cause
