"""The daemon's lifecycle: listeners, signals, reload and drain.

One grpc.aio server listens on the project's unix socket (0600 in a 0700 folder). With
`--listen`, a second server on loopback TCP serves the same service objects behind a bearer
token check, with its own limits on connections (see `tcp_server_options`).
SIGTERM/SIGINT drain in-flight calls within the grace period and exit 0; SIGHUP
reloads the config and keeps the old one when the new one is bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import resource
import secrets
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog
from bindingd_client.proto import (
    bindings_pb2,
    database_pb2,
    kv_pb2,
    objects_pb2,
    queue_pb2,
    vars_pb2,
)
from bindingd_client.wire import MAX_MESSAGE_BYTES
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bindingd import eventloop
from bindingd.config import Config, ConfigError
from bindingd.providers.gateway.target import UsageError
from bindingd.runtime import SERVING, UNKNOWN, Runtime
from bindingd.server import tracing
from bindingd.server.auth import BearerTokenInterceptor, check_token
from bindingd.server.bindings import BindingsService
from bindingd.server.calls import add_service
from bindingd.server.forward import Forwarder
from bindingd.server.http_app import HttpListeners, http_listen_of, http_socket_path
from bindingd.server.kv import KVService
from bindingd.server.metrics import Metrics, MetricsServer, registry_for
from bindingd.server.objects import ObjectsService
from bindingd.server.queue import QueueService
from bindingd.server.sql import SqlService
from bindingd.server.vars import VarsService

log = structlog.get_logger("bindingd.server")

# The longest path a unix socket address can hold (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
# A drain stops the listeners once no call has started for this long...
DRAIN_QUIET_S = 0.25
# ...or when only this much of the grace period is left (half of it, if it is shorter), for the
# calls being answered. A client that never pauses (a load balancer that does not check health,
# a busy worker) would otherwise hold the listeners open until the deadline, and grpc's stop()
# would then cancel every call in flight. Not less: the calls still queued in grpc (a burst sent
# just before SIGTERM) are cancelled when stop() is called, however much grace is left.
DRAIN_ANSWER_S = 1.0
# grpc.aio asks grpc-core for one incoming call at a time, so a burst of calls waits in core's
# pending queue until the event loop takes it. Core's defaults (1000 soft, 3000 hard) drop calls
# past the soft limit at random with a bare CANCELLED and no ErrorInfo: ~8% of 2000 puts in
# flight over one channel. Equal limits this high mean no random drop; a burst this deep is
# never a real client, and each waiting call only holds its headers and first message.
MAX_PENDING_CALLS = 100_000
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
]
# TCP peers: a connection must send its HTTP/2 settings this soon, and is closed after this long
# without a call; each may have this many calls open at once (more wait in the client).
HANDSHAKE_TIMEOUT_MS = 5_000
TCP_IDLE_MS = 120_000
TCP_MAX_STREAMS = 1_000
TCP_STREAM_WINDOW = 1 << 20
SERVICE_NAMES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
    objects_pb2.DESCRIPTOR.services_by_name["Objects"].full_name,
    database_pb2.DESCRIPTOR.services_by_name["Database"].full_name,
    vars_pb2.DESCRIPTOR.services_by_name["Vars"].full_name,
    queue_pb2.DESCRIPTOR.services_by_name["Queue"].full_name,
    bindings_pb2.DESCRIPTOR.services_by_name["Bindings"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)


class ServeError(Exception):
    """The daemon cannot start as asked (socket in use, non-loopback address, ...)."""


@dataclass
class ServeOptions:
    socket: Path | None = None
    listen: str | None = None
    # HOST:PORT (loopback) for Prometheus text at /metrics; None: no metrics are kept.
    metrics: str | None = None
    token: str | None = None
    allow_writes: bool = False
    grace_s: float = 10.0
    # Set by `bindingd run`: that process hands the endpoint to its command, so this daemon does
    # not write .bindingd/endpoint (it must not hide a daemon already serving), and it stops
    # when that process is gone, even if it was killed without a chance to stop it.
    parent_pid: int | None = None

    @property
    def advertise(self) -> bool:
        """Write .bindingd/endpoint, so clients find this daemon by walking up."""
        return self.parent_pid is None


def default_socket_path(config: Config) -> Path:
    """`.bindingd/bindingd.sock` beside the config, or a short path when that one is too long."""
    path = config.runtime_dir / "bindingd.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(config.root).encode()).hexdigest()[:16]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    folder = (
        Path(runtime_dir) / "bindingd"
        if runtime_dir
        else Path(tempfile.gettempdir()) / f"bindingd-{os.getuid()}"
    )
    return folder / f"{digest}.sock"


def parse_listen(
    listen: str,
    flag: str = "--listen",
    doing: str = "listen on",
    why: str = "without TLS",
    example: str = "127.0.0.1:7400",
) -> tuple[str, int]:
    """Split HOST:PORT and refuse anything but a loopback address (no TLS yet)."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not host or not 1 <= int(port_text) <= 65535:
        raise ServeError(f"{flag} {listen!r} is not HOST:PORT with a port 1-65535 (for example {example})")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ServeError(
                f"refusing to {doing} {listen}: {why} only loopback addresses "
                "(127.0.0.1, ::1, localhost) are allowed"
            )
    return host, int(port_text)


def load_or_create_token(runtime_dir: Path, given: str | None) -> str:
    """The TCP bearer token: the one given (BINDINGD_TOKEN), else .bindingd/token, created 0600.

    A blank token is refused (it would let `Bearer ` through), and so is a token file that is
    not this user's own regular 0600 file: whoever else could write or read it knows the token.
    """
    if given:  # an empty variable counts as unset; one of spaces is a mistake
        try:
            return check_token(given, "BINDINGD_TOKEN")
        except ValueError as e:
            raise ServeError(f"{e}: unset it to use .bindingd/token (generated), or set a real token") from e
    path = runtime_dir / "token"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    except OSError as e:
        why = "it is a symlink" if path.is_symlink() else e.strerror
        raise ServeError(f"cannot use the TCP token {path}: {why}; remove it to have a new one made") from e
    try:
        info = os.fstat(fd)
        problem = (
            "is not a regular file"
            if not stat.S_ISREG(info.st_mode)
            else f"belongs to uid {info.st_uid}, not to this user"
            if info.st_uid != os.getuid()
            else f"has mode {stat.S_IMODE(info.st_mode):o}, not 600"
            if stat.S_IMODE(info.st_mode) != 0o600
            else None
        )
        text = os.read(fd, 4096).decode("utf-8", errors="replace").strip() if problem is None else ""
    finally:
        os.close(fd)
    if problem is None:
        try:
            return check_token(text, str(path))
        except ValueError as e:
            problem = str(e).removeprefix(f"the TCP token from {path} ")
    raise ServeError(
        f"not using the TCP token {path}: it {problem}, so it may be known to others; "
        "remove it to have a new one made (clients then need the new one)"
    )


def raise_descriptor_limit() -> None:
    """Lift the soft limit on open files to the hard one: each TCP or unix connection, socket and
    backend connection takes a descriptor, and at the usual soft 1024 a crowd of idle TCP peers
    left none for the owner's unix socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tcp_server_options() -> list[tuple[str, int]]:
    """The TCP listener's limits, so that what its peers do cannot use up the daemon (the unix
    socket has its own server and stays usable).

    Connections are capped at a quarter of the descriptor limit (bounded to 64-1024), and one
    that has not sent its HTTP/2 settings within HANDSHAKE_TIMEOUT_MS, or has had no call for
    TCP_IDLE_MS, is closed (a grpc client reconnects on its next call). Streams per connection
    are bounded too: each holds a flow-control window of unread bytes until it is answered.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    descriptors = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    return [
        ("grpc.max_allowed_incoming_connections", max(64, min(1024, descriptors // 4))),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", TCP_IDLE_MS),
        ("grpc.max_concurrent_streams", TCP_MAX_STREAMS),
        # A fixed window per stream rather than grpc's BDP probe, which on loopback grows a
        # stream's window to tens of MiB: a call refused for its token then still had that much
        # of its body taken in (six refused 60 MiB puts: +5 to +77 MiB of RSS, by timing). With
        # 1 MiB it is +4 MiB every time, and a 20 MiB put runs as fast (about 180 MB/s either
        # way, measured on 2 cores).
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", TCP_STREAM_WINDOW),
    ]


def _private_dir(path: Path) -> None:
    """A folder of bindingd's own, for this user only. One that someone else made (in /tmp, say)
    or a symlink is refused: whoever controls it could stand in for the daemon."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise ServeError(f"{path} is not a folder of this user's; remove it, or pass --socket")
        os.chmod(path, 0o700)
    except OSError as e:
        raise ServeError(f"cannot create the private folder {path}: {e.strerror}") from e


def _answers(path: Path) -> bool:
    """Whether a daemon is accepting connections on the unix socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _claim_socket(path: Path) -> None:
    """Remove a stale socket file; refuse if a daemon is still answering on it."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ServeError(f"the socket path {path} is over the {MAX_SOCKET_PATH}-byte limit of unix sockets")
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ServeError(f"{path} exists and is not a socket; remove it or pass --socket")
    if _answers(path):
        raise ServeError(f"another bindingd is already serving on {path}; stop it first or pass --socket")
    # Another user's socket is theirs to remove (and may not be removable at all).
    if path.lstat().st_uid != os.getuid():
        raise ServeError(f"{path} is a socket of another user; have them remove it, or pass another --socket")
    try:
        path.unlink()
    except OSError as e:
        raise ServeError(f"cannot remove the stale socket {path}: {e.strerror}") from e


def _bind(server: grpc.aio.Server, address: str) -> None:
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ServeError(f"cannot listen on {address}: {e}") from e
    if bound == 0:
        raise ServeError(f"cannot listen on {address}: the address is in use or not available")


class Daemon:
    def __init__(
        self,
        config: Config,
        reload_config: Callable[[], Config],
        options: ServeOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self._reload_config = reload_config
        self.health = health.aio.HealthServicer()
        self.runtime = Runtime(
            config, allow_writes=options.allow_writes, clock=clock, on_health=self._set_health
        )
        self.socket_path = options.socket or default_socket_path(config)
        self._servers: list[grpc.aio.Server] = []
        # One set of service objects for every listener: a SQL cursor parked by a Query over HTTP
        # is fetched over HTTP, and both transports run exactly the same code.
        self._services: list[tuple[object, Any]] = [
            (KVService(self.runtime), kv_pb2.DESCRIPTOR.services_by_name["KV"]),
            (VarsService(self.runtime), vars_pb2.DESCRIPTOR.services_by_name["Vars"]),
            (ObjectsService(self.runtime), objects_pb2.DESCRIPTOR.services_by_name["Objects"]),
            (SqlService(self.runtime), database_pb2.DESCRIPTOR.services_by_name["Database"]),
            (QueueService(self.runtime), queue_pb2.DESCRIPTOR.services_by_name["Queue"]),
            (BindingsService(self.runtime), bindings_pb2.DESCRIPTOR.services_by_name["Bindings"]),
        ]
        self.http_socket_path = http_socket_path(self.socket_path)
        self._http: HttpListeners | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._stop = asyncio.Event()
        self._endpoint_file = config.runtime_dir / "endpoint"
        self._listen_file = config.runtime_dir / "listen"
        self._advertised = False
        self._bound = False
        self.metrics_server: MetricsServer | None = None
        if options.metrics:
            self.runtime.metrics = Metrics(self.runtime)
        self.runtime.tracing = tracing.from_environment()

    def _set_health(self, name: str, status: str) -> None:
        value = {
            SERVING: health_pb2.HealthCheckResponse.SERVING,
            UNKNOWN: health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
        }.get(status, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._spawn(self.health.set(name, value))

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _build_server(
        self, interceptors: list[grpc.aio.ServerInterceptor], options: list[tuple[str, int]] | None = None
    ) -> grpc.aio.Server:
        server = grpc.aio.server(options=[*SERVER_OPTIONS, *(options or [])], interceptors=interceptors)
        # Calls naming a binding served through the env's gateway are relayed there (Vars.GetAll
        # and Bindings answer for the whole env, merging what the gateway serves).
        relay = Forwarder(self.runtime)
        for servicer, service in self._services:
            forwarder = None if service.name == "Bindings" else relay
            local_only = ("GetAll",) if service.name == "Vars" else ()
            add_service(server, servicer, service, forwarder, local_only=local_only)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        return server

    async def start(self) -> None:
        """Bind the listeners and start the providers; on failure, undo what was done."""
        try:
            await self._start()
        except BaseException:
            await asyncio.gather(*(s.stop(0) for s in self._servers))
            if self.metrics_server is not None:
                await self.metrics_server.close()
            if self._http is not None:
                await self._http.stop()
            await self.runtime.close()
            if self._bound:
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
            raise

    async def _start(self) -> None:
        config = self.runtime.config
        if self.options.listen:
            host, port = parse_listen(self.options.listen)
        if self.options.metrics:
            metrics_at = parse_listen(
                self.options.metrics,
                "--metrics",
                "serve metrics on",
                "they have no token, so",
                "127.0.0.1:9464",
            )
        _private_dir(config.runtime_dir)
        if self.options.socket is None:
            _private_dir(self.socket_path.parent)
        elif not self.socket_path.parent.is_dir():
            # The user's folder: created if missing, never re-permissioned.
            raise ServeError(
                f"--socket {self.socket_path}: the folder {self.socket_path.parent} does not exist"
            )
        _claim_socket(self.socket_path)
        _claim_socket(self.http_socket_path)
        raise_descriptor_limit()
        token = load_or_create_token(config.runtime_dir, self.options.token) if self.options.listen else ""
        try:
            await self.runtime.start(serve_gateway=True)
        except UsageError as e:  # the env's gateway CA file cannot be read or is not a certificate
            raise ServeError(str(e)) from None

        unix_server = self._build_server([])
        self._servers.append(unix_server)
        # A 0o177 umask makes the socket 0600 from its first instant (the folder is 0700 too).
        old_umask = os.umask(0o177)
        try:
            _bind(unix_server, f"unix://{self.socket_path}")
            self._bound = True
            if self.options.listen:
                tcp_server = self._build_server(
                    [BearerTokenInterceptor(token, self.options.listen)], tcp_server_options()
                )
                self._servers.append(tcp_server)
                _bind(tcp_server, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            for server in self._servers:
                await server.start()
            self._http = HttpListeners(
                self._services,
                token if self.options.listen else None,
                self.options.grace_s,
                Forwarder(self.runtime),
            )
            http_tcp = http_listen_of(self.options.listen) if self.options.listen else None
            await self._http.start(self.http_socket_path, http_tcp)
        finally:
            os.umask(old_umask)
        if self.runtime.metrics is not None:
            self.metrics_server = MetricsServer(
                registry_for(self.runtime.metrics), self.runtime.metrics.read_backlogs
            )
            try:
                await self.metrics_server.start(*metrics_at)
            except OSError as e:
                raise ServeError(f"cannot serve metrics on {self.options.metrics}: {e.strerror}") from e
        os.chmod(self.socket_path, 0o600)
        os.chmod(self.http_socket_path, 0o600)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._advertised = self.options.advertise and self._may_advertise()
        if self._advertised:
            # 0600 like everything in .bindingd/, whatever the umask.
            _write_private(self._endpoint_file, f"{self._endpoint}\n")
            # Where this daemon listens on TCP: a client given that address sends the project's
            # token there, and nowhere else (gone again at shutdown, as the endpoint is).
            if self.options.listen:
                _write_private(self._listen_file, f"{self.options.listen}\n")
            else:
                with contextlib.suppress(FileNotFoundError):
                    self._listen_file.unlink()
        log.info(
            "serving",
            env=config.env,
            config=str(config.path),
            socket=str(self.socket_path),
            http_socket=str(self.http_socket_path),
            tcp=self.options.listen or "",
            metrics=self.options.metrics or "",
            http_tcp=http_listen_of(self.options.listen) if self.options.listen else "",
            bindings=len(config.bindings),
            writes_refused=self.runtime.writes_refused,
            loop=eventloop.loop_name(),
        )
        for skipped in config.not_served:  # a wrangler file's kinds bindingd has no type for
            log.warning("binding not served", binding=skipped.name, kind=skipped.kind, reason=skipped.reason)

    @property
    def _endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    def _may_advertise(self) -> bool:
        """False when .bindingd/endpoint names another daemon that is still serving."""
        try:
            current = self._endpoint_file.read_text().strip()
        except FileNotFoundError:
            return True
        other = Path(current.removeprefix("unix://"))
        if current == self._endpoint or not current.startswith("unix://") or not _answers(other):
            return True
        log.warning(
            "not advertising: another daemon serves this project", endpoint_file=str(self._endpoint_file)
        )
        return False

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit code."""
        loop = asyncio.get_running_loop()
        await self.start()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if self.options.parent_pid is not None:
            self._spawn(self._stop_with_parent(self.options.parent_pid))
        await self._stop.wait()
        await self.shutdown()
        return 0

    def _on_sighup(self) -> None:
        if not self._stop.is_set():  # no new providers while shutting down
            self._spawn(self.reload())

    async def _stop_with_parent(self, pid: int) -> None:
        while os.getppid() == pid:
            await asyncio.sleep(1.0)
        log.warning("the process that started this daemon is gone; stopping", parent_pid=pid)
        self._stop.set()

    async def reload(self) -> bool:
        try:
            # In a thread: a config on a hung mount must not freeze the calls being served.
            config = await asyncio.to_thread(self._reload_config)
            changes = await self.runtime.reload(config)
        except ConfigError as e:
            log.error("reload failed; still serving the previous config", error=str(e))
            return self._reloaded(False)
        except Exception:
            log.exception("reload failed; still serving the previous config")
            return self._reloaded(False)
        log.info("reloaded", env=config.env, **changes)
        return self._reloaded(True)

    def _reloaded(self, ok: bool) -> bool:
        if self.runtime.metrics is not None:
            self.runtime.metrics.reloaded(ok)
        return ok

    async def shutdown(self) -> None:
        """Drain: stop being found, answer what is on its way, then stop within the grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.grace_s
        log.info("draining", grace_s=self.options.grace_s)
        self.runtime.draining = True
        await self.health.enter_graceful_shutdown()
        with contextlib.suppress(FileNotFoundError):
            if self._advertised and self._endpoint_file.read_text().strip() == self._endpoint:
                self._endpoint_file.unlink()
                with contextlib.suppress(FileNotFoundError):
                    self._listen_file.unlink()
        runtime = self.runtime
        await serve_until_quiet(runtime, self.options.grace_s)
        await asyncio.gather(
            *(s.stop(max(0.0, deadline - loop.time())) for s in self._servers),
            *([self._http.stop()] if self._http is not None else []),
        )
        if self.metrics_server is not None:
            await self.metrics_server.close()
        await runtime.close()
        if runtime.tracing is not None:
            await asyncio.to_thread(runtime.tracing.close)  # flushes the last spans
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.http_socket_path.unlink()
        log.info("stopped")


class CallCounter(Protocol):
    calls_in_flight: int
    last_call_at: float  # time.monotonic() of the last call's start


async def serve_until_quiet(calls: CallCounter, grace_s: float) -> None:
    """A drain's lame-duck part: go on serving (health already says NOT_SERVING) until no call
    is running and none has started for DRAIN_QUIET_S, at most until DRAIN_ANSWER_S of the grace
    period is left. grpc's stop() ends with CANCELLED every call that reached the socket but not
    yet a handler, so stopping while calls still arrive would lose them; a load balancer that
    checks health has moved its calls to another instance by the end of this wait."""
    loop = asyncio.get_running_loop()
    until = loop.time() + grace_s - min(DRAIN_ANSWER_S, grace_s / 2)
    while loop.time() < until and (
        calls.calls_in_flight or time.monotonic() - calls.last_call_at < DRAIN_QUIET_S
    ):
        await asyncio.sleep(0.05)


def _write_private(path: Path, text: str) -> None:
    """`text` into `path`, mode 0600 whatever the umask (a file clients trust only when it is)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
