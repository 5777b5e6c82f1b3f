"""Remote bindings as a developer gets them: worker -> `bindingd serve` -> `bindingd gateway serve`
-> provider, every hop a real process, the gateway over real TLS, the developer logged in with
`bindingd login` (issue 14, the daemon's side).

The worker uses the Python client exactly as against local bindings; the bindings are discovered
from the gateway (bindingd.yaml lists none of them), one stays local with `local: true`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from bindingd_client import connect
from bindingd_client.errors import BackendUnavailable, NotLoggedIn, PermissionDenied
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import DaemonProcess, bindingd_cli, write_project

SECRET = "s3cr3t-remote-value-5d1e"
TOKEN_MARK = "v4.public."
GATEWAY_YAML = """\
    version: 1
    gateway:
      id: team-gw
      listen: "127.0.0.1:{port}"
      tls: {{ cert: gw/server.pem, key: gw/server.key }}
      signing_key: gw/signing.key
      state: {{ kind: sqlite, path: gw/state.sqlite3 }}
      audit: {{ path: gw/audit.jsonl }}
    bindings:
      CACHE: {{ type: kv }}
      ASSETS: {{ type: objects }}
      APP_DB: {{ type: sql }}
      JOBS: {{ type: queue }}
      GREETING: {{ type: var, value: hello-from-staging }}
      API_KEY: {{ type: secret, value: "{secret}" }}
      HIDDEN: {{ type: kv }}
    envs:
      staging: {{ token_ttl: 3600 }}
      quick: {{ token_ttl: 3 }}
      production: {{ protected: true }}
    policy:
      groups: {{ developers: [alice] }}
      grants:
        - {{ who: "group:developers", env: staging, bindings: [CACHE, ASSETS, APP_DB, JOBS, GREETING],
             actions: [read, write, send, consume] }}
        - {{ who: "group:developers", env: quick, bindings: [CACHE], actions: [read, write] }}
        - {{ who: "group:developers", env: staging, bindings: [API_KEY], actions: [read] }}
        - {{ who: "group:developers", env: production, bindings: [CACHE, APP_DB], actions: [read, write] }}
      denies:
        - {{ who: "user:alice", env: staging, bindings: [APP_DB], actions: [write] }}
"""


@dataclass
class Gateway:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    def audit_lines(self) -> list[dict[str, object]]:
        path = self.root / "gw" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def logs(self) -> str:
        return (self.root / "gateway.log").read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(root: Path, port: int) -> subprocess.Popen[bytes]:
    with (root / "gateway.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bindingd", "gateway", "serve", "--config", "gateway.yaml"],
            cwd=root,
            stdout=out,
            stderr=out,
        )
    ca = (root / "gw" / "ca.pem").read_bytes()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / "gateway.log").read_text()
        with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(ca)) as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                return proc
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError("gateway not serving: " + (root / "gateway.log").read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gw")
    assert bindingd_cli("gateway", "init", "gw", cwd=root).returncode == 0
    port = _free_port()
    (root / "gateway.yaml").write_text(textwrap.dedent(GATEWAY_YAML.format(port=port, secret=SECRET)))
    gw = Gateway(root, port, _start(root, port))
    try:
        yield gw
    finally:
        _stop(gw.proc)


@dataclass
class Laptop:
    root: Path
    environ: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = bindingd_cli(*args, cwd=self.root, env=self.environ)
        assert TOKEN_MARK not in result.stdout + result.stderr
        return result

    def daemon(self, env: str, *args: str) -> DaemonProcess:
        return DaemonProcess(self.root, "--env", env, *args, env=self.environ).start()


def laptop(tmp_path: Path, gateway: Gateway, *, logged_in: bool = True) -> Laptop:
    root = tmp_path / "app"
    root.mkdir()
    (root / "team-ca.pem").write_bytes((gateway.root / "gw" / "ca.pem").read_bytes())
    url = f"localhost:{gateway.port}"
    gateway_key = f'gateway: {{ url: "{url}", ca: team-ca.pem }}'
    envs = "".join(
        f"  {env}:\n    {gateway_key}\n    bindings:\n      NOTES: {{ local: true }}\n"
        for env in ("staging", "quick", "production")
    )
    # CACHE is listed (its local definition serves the default env); the rest is discovered.
    write_project(
        root, f"version: 1\nbindings:\n  NOTES: {{ type: kv }}\n  CACHE: {{ type: kv }}\nenvs:\n{envs}"
    )
    lap = Laptop(root, {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "BINDINGD_LOG_LEVEL": "debug"})
    if logged_in:
        granted = bindingd_cli(
            "gateway", "grant", "--config", "gateway.yaml", "--user", "alice", cwd=gateway.root
        )
        assert granted.returncode == 0, granted.stderr
        login = lap.cli("login", "--env", "staging", "--code", granted.stdout.splitlines()[-1])
        assert login.returncode == 0, login.stderr
    return lap


def test_a_worker_uses_every_binding_type_through_the_gateway(tmp_path: Path, gateway: Gateway) -> None:
    lap = laptop(tmp_path, gateway)
    daemon = lap.daemon("staging")

    async def worker() -> None:
        env = await connect(endpoint=daemon.endpoint)
        try:
            await env.CACHE.put("k", "v1")
            assert await env.CACHE.get("k") == "v1"
            body = os.urandom(3 << 20)  # several chunks each way
            await env.ASSETS.put("big.bin", body)
            got = await env.ASSETS.get("big.bin")
            assert got is not None and await got.bytes() == body
            assert [r["n"] for r in (await env.APP_DB.prepare("SELECT 1 AS n").all()).results] == [1]
            with pytest.raises(PermissionDenied) as denied:  # a read grant: read-only, at the gateway
                await env.APP_DB.exec("CREATE TABLE t (x)")
            assert "alice" in str(denied.value) and "read-only transaction" in str(denied.value)
            await env.JOBS.send({"n": 1})
            async with asyncio.timeout(30):
                async for batch in env.JOBS.consume(batch_size=1, max_wait=1):
                    if batch.messages:
                        assert batch.messages[0].body == {"n": 1}
                        await batch.ack_all()
                        break
            assert env.GREETING == "hello-from-staging" and env.API_KEY == SECRET
            await env.NOTES.put("n", "local")  # local: true, never through the gateway
            assert await env.NOTES.get("n") == "local"
            with pytest.raises(Exception) as hidden:
                await env.HIDDEN.get("k")  # not granted: not discovered, not served
            assert "HIDDEN" in str(hidden.value)
        finally:
            await env.aclose()

    try:
        asyncio.run(worker())
        listing = lap.cli("bindings", "--env", "staging", "--json")
        assert listing.returncode == 0, listing.stderr
        rows = {row["binding"]: row for row in json.loads(listing.stdout)}
        assert rows["CACHE"]["backend"] == f"gateway localhost:{gateway.port}"
        assert rows["CACHE"]["access"] == "read, write" and rows["JOBS"]["access"] == "consume, send"
        assert "as alice" in rows["CACHE"]["reason"] and "session until" in rows["CACHE"]["reason"]
        assert rows["NOTES"]["backend"] == "local" and "HIDDEN" not in rows
    finally:
        assert daemon.stop() == 0
    logs = daemon.logs()
    assert TOKEN_MARK not in logs and SECRET not in logs
    deadline = time.monotonic() + 10  # the gateway writes a call's line just after the call
    while True:
        lines = gateway.audit_lines()
        audited = {(line["binding"], line["decision"]) for line in lines if line.get("user") == "alice"}
        if {("CACHE", "allow"), ("APP_DB", "allow")} <= audited or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ("CACHE", "allow") in audited and ("APP_DB", "allow") in audited
    assert not any(line.get("binding") == "NOTES" for line in lines)


def test_not_logged_in_says_how_and_local_bindings_still_serve(tmp_path: Path, gateway: Gateway) -> None:
    lap = laptop(tmp_path, gateway, logged_in=False)
    daemon = lap.daemon("staging")

    async def worker() -> None:
        env = await connect(endpoint=daemon.endpoint)
        try:
            await env.NOTES.put("n", "x")
            with pytest.raises(NotLoggedIn) as info:
                await env.CACHE.get("k")  # listed in bindingd.yaml, served by the gateway
            assert "bindingd login --env staging" in str(info.value)
            assert "ASSETS" not in env  # nothing is discovered without a session
        finally:
            await env.aclose()

    try:
        asyncio.run(worker())
    finally:
        assert daemon.stop() == 0


def test_a_protected_env_refuses_writes_without_allow_writes(tmp_path: Path, gateway: Gateway) -> None:
    lap = laptop(tmp_path, gateway)
    granted = bindingd_cli(
        "gateway", "grant", "--config", "gateway.yaml", "--user", "alice", cwd=gateway.root
    )
    assert lap.cli("login", "--env", "production", "--code", granted.stdout.splitlines()[-1]).returncode == 0
    daemon = lap.daemon("production")

    async def worker() -> None:
        env = await connect(endpoint=daemon.endpoint)
        try:
            assert await env.CACHE.get("nothing") is None  # a read goes through
            with pytest.raises(PermissionDenied) as info:
                await env.CACHE.put("k", "v")
            assert "--allow-writes" in str(info.value)
            # SQL cannot be told read or write by the daemon: the gateway runs it read-only,
            # although the policy grants alice `write` on APP_DB in production.
            assert [r["n"] for r in (await env.APP_DB.prepare("SELECT 2 AS n").all()).results] == [2]
            with pytest.raises(PermissionDenied) as sql:
                await env.APP_DB.exec("CREATE TABLE t (x)")
            assert "read-only" in str(sql.value)
        finally:
            await env.aclose()

    try:
        asyncio.run(worker())
    finally:
        assert daemon.stop() == 0


def test_tokens_of_3_seconds_are_renewed_without_a_failed_call(tmp_path: Path, gateway: Gateway) -> None:
    lap = laptop(tmp_path, gateway)
    daemon = lap.daemon("quick")

    async def worker(env: object, n: int) -> int:
        calls = 0
        deadline = time.monotonic() + 8.0  # about three token lifetimes
        while time.monotonic() < deadline:
            await env.CACHE.put(f"w{n}", str(calls))  # type: ignore[attr-defined]
            assert await env.CACHE.get(f"w{n}") == str(calls)  # type: ignore[attr-defined]
            calls += 1
            await asyncio.sleep(0.02)
        return calls

    async def main() -> list[int]:
        env = await connect(endpoint=daemon.endpoint)
        try:
            return await asyncio.gather(*(worker(env, n) for n in range(4)))
        finally:
            await env.aclose()

    try:
        counts = asyncio.run(main())
    finally:
        assert daemon.stop() == 0
    assert all(c > 20 for c in counts), counts
    opened = [line for line in gateway.logs().splitlines() if "session opened" in line and "quick" in line]
    assert len(opened) >= 3, "the token was not renewed"


def test_a_stopped_gateway_is_named_and_calls_come_back_when_it_returns(
    tmp_path: Path, gateway: Gateway
) -> None:
    lap = laptop(tmp_path, gateway)
    daemon = lap.daemon("staging")

    async def call(env: object) -> object:
        return await env.CACHE.get("k")  # type: ignore[attr-defined]

    async def main() -> None:
        env = await connect(endpoint=daemon.endpoint)
        try:
            await call(env)
            _stop(gateway.proc)
            with pytest.raises(BackendUnavailable) as info:
                await call(env)
            assert f"localhost:{gateway.port}" in str(info.value)
            gateway.proc = _start(gateway.root, gateway.port)
            deadline = time.monotonic() + 15  # the same daemon, no restart: it reconnects
            while True:
                try:
                    await call(env)
                    break
                except BackendUnavailable:
                    assert time.monotonic() < deadline, "still unreachable 15 s after the gateway came back"
                    await asyncio.sleep(0.2)
        finally:
            await env.aclose()

    try:
        asyncio.run(main())
    finally:
        assert daemon.stop() == 0
