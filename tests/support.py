"""Shared by the test suites: project folders, a controllable clock, a daemon in this process,
the `bindingd` command line, and the machine's SQL servers as their admin sees them."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import grpc
from bindingd_client import Env, connect
from grpc_health.v1 import health_pb2, health_pb2_grpc
from services import ensure

from bindingd.config import load_config
from bindingd.server.app import Daemon, ServeOptions


class FakeClock:
    """Seconds since the epoch, starting now, that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_project(root: Path, config: str, dev_vars: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "bindingd.yaml"
    path.write_text(textwrap.dedent(config))
    if dev_vars is not None:
        (root / ".dev.vars").write_text(textwrap.dedent(dev_vars))
    return path


@contextlib.asynccontextmanager
async def daemon_in_process(
    config_path: Path, *, env: str | None = None, clock: FakeClock | None = None, **options: object
) -> AsyncIterator[Daemon]:
    """The real daemon (real socket, real providers) served by this test's event loop.

    Its grace period is 0 unless a test gives one: the test's calls have ended when it stops, so
    the drain's quiet period (DRAIN_QUIET_S) would only add a quarter second to every test."""
    options.setdefault("grace_s", 0.0)
    config = load_config(config_path, env=env)
    daemon = Daemon(
        config,
        lambda: load_config(config_path, env=env),
        ServeOptions(**options),  # type: ignore[arg-type]
        **({"clock": clock} if clock else {}),
    )
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.shutdown()
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def connected(
    config_path: Path, *, env: str | None = None, clock: FakeClock | None = None
) -> AsyncIterator[Env]:
    """The Python client on a daemon in this process serving `config_path`."""
    async with daemon_in_process(config_path, env=env, clock=clock) as daemon:
        client = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            yield client
        finally:
            await client.aclose()


# argv: RESOURCE LIMIT COMMAND...: the resource limit (resource.RLIMIT_*) set, then COMMAND in
# this same process.
_WITH_LIMIT = (
    "import os, resource, sys; which = getattr(resource, sys.argv[1]); limit = int(sys.argv[2]);"
    " resource.setrlimit(which, (limit, limit)); os.execv(sys.argv[3], sys.argv[3:])"
)


def with_limit(resource_name: str, limit: int, command: list[str]) -> list[str]:
    """`command` run under a resource limit (e.g. "RLIMIT_FSIZE"), set by a small Python that then
    execs it, not by preexec_fn: a fork that runs Python in the child while this process has gRPC
    threads can break the child's gRPC (seen: a daemon aborting on "epoll_wait: Bad file
    descriptor")."""
    return [sys.executable, "-c", _WITH_LIMIT, resource_name, str(limit), *command]


class DaemonProcess:
    """`bindingd serve` as a child process in a project folder, for black-box tests."""

    def __init__(
        self, root: Path, *args: str, env: dict[str, str] | None = None, file_size_limit: int | None = None
    ) -> None:
        self.root = root
        self.args = args
        self.env = {**os.environ, **(env or {})}
        # RLIMIT_FSIZE: a write past it fails with EFBIG, a real disk failure on demand.
        self.file_size_limit = file_size_limit
        self.log_path = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / ".bindingd" / "bindingd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, *, wait: bool = True) -> DaemonProcess:
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "bindingd", "serve", "--log-format", "json", *self.args]
        if self.file_size_limit is not None:
            command = with_limit("RLIMIT_FSIZE", self.file_size_limit, command)
        self.proc = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=log, env=self.env)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def _give_up(self) -> None:
        """A daemon that never became ready is killed, not left running after the test."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.logs()}")
            if self.socket_path.exists() and health_status(self.endpoint) == "SERVING":
                return
            time.sleep(0.05)
        self._give_up()
        raise AssertionError(f"daemon not ready after {timeout}s: {self.logs()}")

    async def served(self, timeout: float = 60.0) -> DaemonProcess:
        """Wait until it serves without blocking this test's event loop (which may be serving a
        gateway the daemon opens its session with), asking its health over grpc.aio on the loop
        rather than from a thread: sync and aio grpc in one process's threads slowed this to
        tens of seconds under load."""
        from grpc_health.v1 import health_pb2 as pb
        from grpc_health.v1 import health_pb2_grpc as pb_grpc

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.logs()}")
            if self.socket_path.exists():
                async with grpc.aio.insecure_channel(self.endpoint) as channel:
                    try:
                        answer = await pb_grpc.HealthStub(channel).Check(pb.HealthCheckRequest(), timeout=1.0)
                        if answer.status == pb.HealthCheckResponse.SERVING:
                            return self
                    except grpc.aio.AioRpcError:
                        pass
            await asyncio.sleep(0.05)
        self._give_up()
        raise AssertionError(f"daemon not ready after {timeout}s: {self.logs()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def health_status(endpoint: str, service: str = "", metadata: tuple[tuple[str, str], ...] = ()) -> str:
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2.0, metadata=metadata
            )
        except grpc.RpcError as e:
            return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def bindingd_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 60.0,
    umask: int | None = None,
    memory_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the `bindingd` command line as a user would; `umask` and `memory_limit` (RLIMIT_AS,
    bytes) are the child's own."""
    command = [sys.executable, "-m", "bindingd", *args]
    if memory_limit is not None:
        command = with_limit("RLIMIT_AS", memory_limit, command)
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        # Set by the child before exec, without running Python there (no preexec_fn).
        umask=-1 if umask is None else umask,
    )


class SqlServer(abc.ABC):
    """One of the machine's SQL servers as its admin sees it: admin SQL, throwaway databases, the
    statements it runs. `kind` is both the connection kind and the tests/services.py name."""

    kind: str
    scheme: str
    port: int
    admin_user: str

    def dsn(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """The DSN of a connection entry on `database` (as the admin unless `user` is given)."""
        login = user or self.admin_user
        if password is not None:
            login += f":{password}"
        return f"{self.scheme}://{login}@127.0.0.1:{self.port}/{database}"

    @abc.abstractmethod
    async def admin(self, sql: str, *args: object, database: str | None = None) -> list[tuple[Any, ...]]:
        """The rows of `sql` run by the admin on a connection of its own."""

    @abc.abstractmethod
    async def running(self, marker: str) -> bool:
        """Whether the server executes a statement containing `marker` (for anyone but us)."""

    @abc.abstractmethod
    def refused_dsn(self, database: str) -> contextlib.AbstractAsyncContextManager[str]:
        """A DSN on `database` whose credentials the server refuses."""

    def _drop(self, name: str) -> str:
        return f"DROP DATABASE IF EXISTS {name}"

    async def create_database(self) -> str:
        ensure(self.kind)
        name = f"bindingd_test_{uuid.uuid4().hex[:12]}"
        await self.admin(f"CREATE DATABASE {name}")
        return name

    async def drop_database(self, name: str) -> None:
        ensure(self.kind)  # a test may have stopped the server
        await self.admin(self._drop(name))

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A throwaway database, created on entry and dropped on exit."""
        name = await self.create_database()
        try:
            yield name
        finally:
            await self.drop_database(name)


class PostgresServer(SqlServer):
    kind, scheme, port, admin_user = "postgres", "postgresql", 5432, "postgres"

    async def admin(self, sql: str, *args: object, database: str | None = None) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(self.dsn(database or "postgres"))
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def running(self, marker: str) -> bool:
        rows = await self.admin(
            "SELECT query FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1"
            " AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
        return bool(rows)

    def _drop(self, name: str) -> str:
        return f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"

    @contextlib.asynccontextmanager
    async def refused_dsn(self, database: str) -> AsyncIterator[str]:
        # The machine's PostgreSQL trusts every local role, so the refused credential is a role.
        yield self.dsn(database, user=f"nobody_{uuid.uuid4().hex[:6]}", password="wrong")


class MysqlServer(SqlServer):
    kind, scheme, port, admin_user = "mysql", "mysql", 3306, "root"

    async def admin(self, sql: str, *args: object, database: str | None = None) -> list[tuple[Any, ...]]:
        conn = await aiomysql.connect(
            host="127.0.0.1", port=self.port, user=self.admin_user, db=database, autocommit=True
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql, args or None)
                return list(await cursor.fetchall())
        finally:
            conn.close()

    async def running(self, marker: str) -> bool:
        rows = await self.admin(
            "SELECT info FROM information_schema.processlist WHERE command = 'Query'"
            f" AND info LIKE '%{marker}%' AND id <> connection_id()"
        )
        return bool(rows)

    @contextlib.asynccontextmanager
    async def refused_dsn(self, database: str) -> AsyncIterator[str]:
        user = f"bd_{uuid.uuid4().hex[:8]}"
        await self.admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password'")
        await self.admin(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-password'")
        try:
            yield self.dsn(database, user=user, password="wrong-password")
        finally:
            await self.admin(f"DROP USER '{user}'@'%'")
            await self.admin(f"DROP USER '{user}'@'localhost'")


POSTGRES = PostgresServer()
MYSQL = MysqlServer()


def connect_envelopes(data: bytes) -> list[tuple[int, Any]]:
    """A Connect stream's body as (flags, JSON message) pairs; flags 2 marks the end message."""
    out = []
    while data:
        flags, length = struct.unpack(">BI", data[:5])
        out.append((flags, json.loads(data[5 : 5 + length])))
        data = data[5 + length :]
    return out


def listen_port(host: str = "127.0.0.1") -> int:
    """A free port whose next one is free too: `--listen HOST:PORT` serves HTTP on PORT + 1, and
    a port picked alone may have its neighbour taken (by another test's connection)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family) as a, socket.socket(family) as b:
            a.bind((host, 0))
            port = int(a.getsockname()[1])
            try:
                b.bind((host, port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no two free neighbouring ports on {host}")
