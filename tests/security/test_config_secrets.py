"""Passwords in connection URLs never show: not in `bindingd check`, health details, call errors
or the daemon's log (issue 12, item 10).

A password with an unencoded '/', '#', '?' or '@' used to be parsed as the port, and its first
part was quoted by every "invalid port" error. Each secret below is two marked halves, so a
leak of either half is caught wherever the split fell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from bindingd_client.proto import bindings_pb2, bindings_pb2_grpc
from support import DaemonProcess, bindingd_cli, write_project

from bindingd.config import ConfigError, load_config
from bindingd.config.urls import RULES, address, check_url, connection_address, safe_address
from bindingd.providers.nats.client import NatsClient
from bindingd.providers.rabbitmq.client import RabbitClient

HALVES = ("Hx7LeftHalf", "Qz9RightHalf")
# kind, option, binding type, a URL template with {password}, a working user where one matters
KINDS = {
    "postgres": ("dsn", "sql", "postgres://postgres:{password}@127.0.0.1:5432/postgres"),
    "mysql": ("dsn", "sql", "mysql://root:{password}@127.0.0.1:3306/mysql"),
    "redis": ("url", "kv", "redis://:{password}@127.0.0.1:6379/0"),
    "nats": ("url", "queue", "nats://user:{password}@127.0.0.1:4222"),
    "rabbitmq": ("url", "queue", "amqp://guest:{password}@127.0.0.1:5672/"),
}


def _config(kind: str) -> str:
    option, binding_type, _ = KINDS[kind]
    return f"""
        version: 1
        connections:
          conn:
            kind: {kind}
            {option}: "${{env:CONN_URL}}"
        bindings:
          B: {{ type: {binding_type}, connection: conn }}
    """


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        for half in HALVES:
            assert half not in text, f"{half!r} leaked in: {text[:2000]}"


@pytest.mark.parametrize("separator", ["/", "#", "?", "@"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_check_refuses_an_unencoded_password_without_quoting_it(
    tmp_path: Path, kind: str, separator: str
) -> None:
    option = KINDS[kind][0]
    url = KINDS[kind][2].format(password=separator.join(HALVES))
    write_project(tmp_path, _config(kind))
    result = bindingd_cli("check", cwd=tmp_path, env={"CONN_URL": url})
    assert result.returncode == 2, result
    _assert_no_secret(result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"bindingd: {tmp_path / 'bindingd.yaml'}:6: connections.conn.{option}: ")
    assert "must be percent-encoded" in lines[0]


def test_a_url_written_in_the_file_is_checked_in_every_env(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          pg: {{ kind: postgres, dsn: "postgres://app:{"#".join(HALVES)}@db:5432/app" }}
        bindings:
          KV: {{ type: kv }}
        envs:
          staging:
            bindings:
              DB: {{ type: sql, connection: pg }}
        """,
    )
    result = bindingd_cli("check", cwd=tmp_path)
    assert result.returncode == 2, result
    assert ":4: connections.pg.dsn: the port is not a number" in result.stderr
    _assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("kind", "url", "message"),
    [
        (
            "postgres",
            "mysql://app:pw@db:5432/app",
            "expected a URL starting with postgres:// or postgresql://",
        ),
        ("postgres", "app:Hx7LeftHalf@db:5432/app", "expected a URL starting with postgres://"),
        ("mysql", "mysql://app:pw@db:99999/app", "the port must be between 1 and 65535"),
        ("mysql", "mysql://app:pw@db:0/app", "the port must be between 1 and 65535"),
        ("redis", "redis://:pw@:6379/0", "the URL names no host"),
        ("nats", "nats://u:Hx7Left\nHalf@db:4222", "control character"),
        ("rabbitmq", "amqp://u:Hx7LeftHalf@[::1/", "not a valid URL"),
        ("postgres", "postgres://u:Hx7LeftHalf@db:5432/app@x", "an '@' after the host"),
    ],
)
def test_each_rule_has_its_message(tmp_path: Path, kind: str, url: str, message: str) -> None:
    write_project(tmp_path, _config(kind))
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "bindingd.yaml", environ={"CONN_URL": url})
    assert raised.value.line == 6
    assert message in raised.value.message
    _assert_no_secret(str(raised.value))
    assert "pw" not in raised.value.message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/app",
        "postgresql:///app?host=/var/run/postgresql",
        "postgres://u:a%2Fb%23c%3Fd%40e@[::1]:5432/app?sslmode=disable",
    ],
)
def test_good_urls_load(tmp_path: Path, url: str) -> None:
    write_project(tmp_path, _config("postgres"))
    config = load_config(tmp_path / "bindingd.yaml", environ={"CONN_URL": url})
    assert config.bindings["B"].connection is not None


ODD_URLS = [
    KINDS[kind][2].format(password=separator.join(HALVES)) for kind in KINDS for separator in "/#?@"
] + [
    "postgres://Hx7LeftHalf:Qz9RightHalf@host:notaport/db",
    "Hx7LeftHalf:Qz9RightHalf@host",
    "redis://Hx7LeftHalf:1234/Qz9RightHalf@host",
    "amqp://Hx7LeftHalf:Qz9RightHalf@[::1/",
]


@pytest.mark.parametrize("url", ODD_URLS)
def test_where_helpers_never_print_credentials(url: str) -> None:
    """What providers put in messages, for URLs that never passed the config check."""
    from bindingd.config.model import Connection

    shown = [
        *(connection_address(Connection("c", kind, {rule.option: url})) for kind, rule in RULES.items()),
        NatsClient(url).where,
        RabbitClient(url).where,
        address("postgres", url, "localhost", 5432),
    ]
    _assert_no_secret(*shown)


def test_address_shows_host_and_port() -> None:
    assert address("nats", "nats://u:p%2Fw@nats.example:4223", "127.0.0.1", 4222) == "nats.example:4223"
    assert address("rabbitmq", "amqp://u:pw@mq/", "127.0.0.1", 5672) == "mq:5672"
    assert safe_address("redis", "unix:///tmp/redis.sock") == "/tmp/redis.sock"
    # Each kind's driver defaults, and the database of a database server.
    assert safe_address("redis", "redis://:pw@cache") == "cache:6379"
    assert safe_address("nats", "nats://u:pw@bus") == "bus:4222"
    assert safe_address("postgres", "postgres://u:pw@db/app") == "db:5432/app"
    assert safe_address("postgres", "postgres://u:pw@db:5433") == "db:5433"
    assert safe_address("postgres", "postgresql:///app?host=/run/postgresql") == "localhost:5432/app"
    assert safe_address("mysql", "mysql://u:pw@db") == "db:3306/"
    assert check_url("redis", "unix://:pw@/tmp/redis.sock") is None


def test_serve_and_calls_never_show_the_password(tmp_path: Path) -> None:
    """Real backends, a wrong password holding '/' and '#' (percent-encoded, as it must be)
    for each kind: health details, call errors and the debug log stay clean."""
    password = quote("/".join(HALVES) + "#" + HALVES[0], safe="")
    connections = "\n".join(
        f'  c_{kind}: {{ kind: {kind}, {option}: "{template.format(password=password)}" }}'
        for kind, (option, _, template) in KINDS.items()
    )
    bindings = "\n".join(
        f"  B_{kind}: {{ type: {binding_type}, connection: c_{kind} }}"
        for kind, (_, binding_type, _) in KINDS.items()
    )
    root = tmp_path / "p"
    write_project(root, f"version: 1\nconnections:\n{connections}\nbindings:\n{bindings}\n")

    check = bindingd_cli("check", cwd=root)
    _assert_no_secret(check.stdout, check.stderr)
    assert "config" in check.stdout

    daemon = DaemonProcess(root, "--log-level", "debug").start()
    try:
        env = {"BINDINGD_ENDPOINT": daemon.endpoint}
        calls = {
            "sql": ("query", "SELECT 1"),
            "kv": ("get", "some-key"),
            "queue": ("send", '"hello"'),
        }
        outputs: list[str] = []
        for kind, (_, binding_type, _) in KINDS.items():
            op, arg = calls[binding_type]
            result = bindingd_cli("call", f"B_{kind}", op, arg, cwd=root, env=env)
            outputs += [result.stdout, result.stderr]
            assert "Traceback" not in result.stderr
        with grpc.insecure_channel(daemon.endpoint) as channel:
            answer = bindings_pb2_grpc.BindingsStub(channel).List(bindings_pb2.ListBindingsRequest())
        details = [f"{b.name}: {b.health} {b.health_detail}" for b in answer.bindings]
        assert len(details) == len(KINDS)
    finally:
        daemon.stop()
    _assert_no_secret(*outputs, *details, daemon.logs())


def test_log_tracebacks_scrub_a_loaded_secret(tmp_path: Path) -> None:
    """An exception whose message quotes the DSN (a driver may do that) is logged with its
    traceback by a real process: the credentials in it are replaced."""
    password = "%2F".join(HALVES)
    dsn = f"postgres://app:{password}@db.example:5432/app"
    write_project(tmp_path, _config("postgres"))
    script = tmp_path / "log_it.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from urllib.parse import unquote, urlsplit

            import structlog

            from bindingd import logs
            from bindingd.config import load_config

            load_config(None)
            logs.configure("info", json=True)
            url = os.environ["CONN_URL"]
            try:
                raise ValueError(f"cannot connect to {url}; password {unquote(urlsplit(url).password)}")
            except ValueError as e:
                structlog.get_logger("t").exception("failed", error=e, text=repr(e))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "CONN_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["exception"].endswith("ValueError: cannot connect to [redacted]; password [redacted]")
    _assert_no_secret(result.stdout, result.stderr)
    assert "/".join(HALVES) not in result.stderr
