"""Shared by the test suites: project folders, a controllable clock, a daemon in this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
    """The real daemon (real socket, real providers) served by this test's event loop."""
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


# argv: LIMIT COMMAND...: RLIMIT_FSIZE set to LIMIT, then COMMAND in this same process.
_WITH_FILE_SIZE_LIMIT = (
    "import os, resource, sys; limit = int(sys.argv[1]);"
    " resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); os.execv(sys.argv[2], sys.argv[2:])"
)


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
            # The limit is set by a small Python that then execs the daemon, not by preexec_fn:
            # a fork that runs Python in the child while this process has gRPC threads can break
            # the child's gRPC (seen: a daemon aborting on "epoll_wait: Bad file descriptor").
            command = [sys.executable, "-c", _WITH_FILE_SIZE_LIMIT, str(self.file_size_limit), *command]
        self.proc = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=log, env=self.env)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.logs()}")
            if self.socket_path.exists() and health_status(self.endpoint) == "SERVING":
                return
            time.sleep(0.05)
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
) -> subprocess.CompletedProcess[str]:
    """Run the `bindingd` command line as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "bindingd", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
