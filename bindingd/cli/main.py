"""`bindingd serve | check | bindings | call | run | migrations | login | logout | gateway | completion`.

Exit codes: 0 success, 1 a failed operation or probe, 2 a config or usage mistake. Errors are
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bindingd import eventloop, logs
from bindingd.cli import style
from bindingd.cli.call import CallUsageError, run_call
from bindingd.cli.parser import _global_args, build_parser
from bindingd.config import Config, ConfigError, find_config, load_config

if TYPE_CHECKING:
    import grpc
    from bindingd_client import SyncEnv

    from bindingd.runtime import Served

EXIT_FAILED = 1
EXIT_CONFIG = 2
READY_TIMEOUT_S = 30.0


def _log_level(args: argparse.Namespace, command_default: str) -> str:
    return args.log_level or os.environ.get("BINDINGD_LOG_LEVEL") or command_default


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        # Flush here, not at interpreter exit, so a reader gone by now is handled below too.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """`bindingd call ... | head -1`: the reader closed the pipe. End as cat and git do, by
    SIGPIPE (the shell reports 141), with no traceback; the daemon and streams were already
    closed on the way out."""
    # The interpreter flushes stdout once more on exit: let that write go nowhere.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "serve": cmd_serve,
        "check": cmd_check,
        "bindings": cmd_bindings,
        "call": cmd_call,
        "run": cmd_run,
        "migrations": cmd_migrations,
        "login": cmd_login,
        "logout": cmd_logout,
        "gateway": cmd_gateway,
        "cloudflare": cmd_cloudflare,
        "completion": cmd_completion,
    }
    from bindingd_client import BindingError

    try:
        return handler[args.command](args)
    except ConfigError as e:
        _fail(str(e))
        return EXIT_CONFIG
    except BindingError as e:
        _fail(str(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def cmd_completion(args: argparse.Namespace) -> int:
    from bindingd.cli.completion import print_script

    return print_script(args.shell)


def cmd_gateway(args: argparse.Namespace) -> int:
    from bindingd.cli import gateway

    logs.configure(_log_level(args, "error"))
    return gateway.cmd_gateway(args)


def cmd_cloudflare(args: argparse.Namespace) -> int:
    from bindingd.cli import cloudflare

    logs.configure(_log_level(args, "error"))
    return cloudflare.cmd_cloudflare(args)


def cmd_login(args: argparse.Namespace) -> int:
    from bindingd.cli import login

    logs.configure(_log_level(args, "error"))
    return login.cmd_login(args)


def cmd_logout(args: argparse.Namespace) -> int:
    from bindingd.cli import login

    logs.configure(_log_level(args, "error"))
    return login.cmd_logout(args)


def _fail(message: str) -> None:
    # A message may quote a server's or a database's words: shown with control characters escaped.
    print(f"bindingd: {style.printable(message)}", file=sys.stderr)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, env=args.env, remote=getattr(args, "remote", False))


# --- serve -------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    logs.configure(
        _log_level(args, "info"), json=None if args.log_format is None else args.log_format == "json"
    )
    # The server's modules (aiohttp, the gateway's, ...) are imported by the commands that serve
    # only: they would add a third of a second to every `bindingd call`.
    from bindingd.server.app import Daemon, ServeError, ServeOptions
    from bindingd.server.memory import tune_malloc

    try:
        loop = eventloop.loop_factory()
    except eventloop.LoopChoiceError as e:
        _fail(str(e))
        return EXIT_CONFIG
    config = _load(args)
    options = ServeOptions(
        socket=args.socket.resolve() if args.socket else None,
        listen=args.listen,
        metrics=args.metrics,
        token=os.environ.get("BINDINGD_TOKEN"),
        allow_writes=args.allow_writes,
        grace_s=args.grace,
        parent_pid=args.child_of,
    )
    daemon = Daemon(
        config, lambda: load_config(config.path, env=args.env, remote=getattr(args, "remote", False)), options
    )
    tune_malloc()
    try:
        return eventloop.run(daemon.run(), loop)
    except ServeError as e:
        _fail(str(e))
        return EXIT_CONFIG


# --- migrations --------------------------------------------------------------------------------


def cmd_migrations(args: argparse.Namespace) -> int:
    from bindingd.cli import migrations
    from bindingd.errors import BindingdError

    logs.configure(_log_level(args, "error"))
    config = _load(args)
    try:
        if args.migrations_command == "create":
            path = migrations.create(config, args.binding, args.name)
            print(f"created {path.relative_to(config.root)}")
            return 0
        if args.migrations_command == "list":
            statuses = asyncio.run(migrations.status(config, args.binding))
            if not statuses:
                print(f"no migrations in {migrations.folder(config, args.binding).relative_to(config.root)}")
            for s in statuses:
                print(f"{'applied' if s.applied else 'pending'}  {s.migration.name}")
            pending = sum(not s.applied for s in statuses)
            print(f"{pending} pending for {args.binding} in env {config.env}")
            return 0

        def report(migration: migrations.Migration) -> None:
            print(f"applied  {migration.name}", flush=True)

        count = asyncio.run(
            migrations.apply(config, args.binding, allow_writes=args.allow_writes, report=report)
        )
        print(f"{count} migration{'s' if count != 1 else ''} applied to {args.binding} in env {config.env}")
        return 0
    except migrations.MigrationError as e:
        _fail(str(e))
        return EXIT_CONFIG
    except BindingdError as e:
        _fail(f'binding "{args.binding}" (env "{config.env}"): {e.message}')
        return EXIT_FAILED


# --- check -------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    logs.configure(_log_level(args, "error"))
    config = _load(args)
    served = asyncio.run(_probe(config))
    failures = sum(s.health != "serving" for s in served)
    # Each connection a binding uses, once, with its resiliency policy.
    connections = {s.binding.connection.name: s.binding.connection for s in served if s.binding.connection}
    if args.json:
        shown = [
            {
                "name": s.binding.name,
                "type": s.binding.type,
                "backend": s.binding.backend,
                "ok": s.health == "serving",
                "detail": s.health_detail,
            }
            for s in served
        ]
        policies = [
            {"name": c.name, "kind": c.kind, "resiliency": c.resiliency.as_json()}
            for c in connections.values()
        ]
        document = {
            "config": str(config.path),
            "env": config.env,
            "bindings": shown,
            "connections": policies,
            "not_served": [{"name": n.name, "kind": n.kind, "reason": n.reason} for n in config.not_served],
        }
        print(json.dumps(document, indent=2))
        return EXIT_FAILED if failures else 0
    print(f"config {config.path} is valid; env {config.env}")
    for s in served:
        b = s.binding
        mark = (
            style.paint("ok  ", style.GREEN, sys.stdout)
            if s.health == "serving"
            else style.paint("FAIL", style.RED, sys.stdout)
        )
        print(f"{mark}  {b.name} ({b.type}, {b.backend}): {style.printable(s.health_detail)}")
    for c in connections.values():
        print(f"connection {c.name} ({c.kind}): {c.resiliency.describe()}")
    for n in config.not_served:
        skipped = style.paint("skip", style.YELLOW, sys.stdout)
        print(f"{skipped}  {style.printable(n.name)} ({n.kind}): not served: {n.reason}")
    return EXIT_FAILED if failures else 0


async def _probe(config: Config) -> list[Served]:
    from bindingd.runtime import Runtime

    runtime = Runtime(config)
    await runtime.start(background_probes=False)
    try:
        return await runtime.probe()
    finally:
        await runtime.close()


# --- bindings ---------------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> SyncEnv | None:
    """The running daemon serving what `args` ask for, or None when there is none.

    It is $BINDINGD_ENDPOINT, else the one named by .bindingd/endpoint beside the config. A
    daemon of another env than --env / $BINDINGD_ENV does not count: a write meant for a
    protected env must never land in dev.
    """
    from bindingd_client import DaemonUnavailable, connect_sync

    explicit = os.environ.get("BINDINGD_ENDPOINT")
    endpoint = explicit
    if endpoint is None:
        path = find_config(Path.cwd()) if args.config is None else args.config
        endpoint_file = path.resolve().parent / ".bindingd" / "endpoint"
        endpoint = endpoint_file.read_text().strip() if endpoint_file.exists() else None
    if endpoint is None:
        return None
    try:
        _answers_health(endpoint)
        env = connect_sync(endpoint=endpoint)
    except DaemonUnavailable:
        if explicit:
            raise  # the user named this daemon: say it is not there rather than start another
        return None  # a stale endpoint file
    wanted = args.env or os.environ.get("BINDINGD_ENV")
    if not wanted and not explicit:
        wanted = _load(args).env  # the file's default env, which a daemon of this project may not serve
    if wanted and wanted != env._env_name:
        env.close()
        if explicit:
            raise DaemonUnavailable(
                f'the daemon at BINDINGD_ENDPOINT={explicit} serves env "{env._env_name}", not "{wanted}"; '
                "unset BINDINGD_ENDPOINT to have bindingd start one for that env"
            )
        return None
    return env


def _answers_health(endpoint: str, timeout: float = 5.0) -> None:
    """Raise DaemonUnavailable unless the daemon at `endpoint` is serving, answering in time
    (a client call has no deadline, and a wedged or draining daemon must not be used)."""
    import grpc
    from bindingd_client.errors import daemon_unavailable
    from bindingd_client.wire import normalize_endpoint

    target, _ = normalize_endpoint(endpoint)
    with grpc.insecure_channel(target) as channel:
        problem = _not_serving(channel, timeout)
    if problem is not None:
        raise daemon_unavailable(endpoint, f"health check: {problem}")


def _not_serving(channel: grpc.Channel, timeout: float) -> str | None:
    """None when the daemon behind `channel` reports SERVING, else what it said instead."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError as e:
        return e.code().name
    if answer.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def cmd_bindings(args: argparse.Namespace) -> int:
    rows: list[tuple[str, ...]] = []
    env = _connect(args)
    if env is None:
        # No daemon serves this env (none at all, or one for another env): answer anyway, by
        # probing each binding as `bindingd check` does, and say so.
        logs.configure(_log_level(args, "error"))
        config = _load(args)
        if sys.stderr.isatty():  # for the person reading; a program has the health column
            print(
                f'bindingd: no daemon serves env "{config.env}" here; each binding was probed directly',
                file=sys.stderr,
            )
        for s in asyncio.run(_probe(config)):
            b = s.binding
            reason = "" if s.health == "serving" else s.health_detail
            rows.append(
                (b.name, b.type, b.env, b.backend, b.access, s.health, _shown(b.type, b.value), reason)
            )
    else:
        with env:
            for info in env._bindings.values():
                value = env[info.name] if info.type in ("var", "secret") else None
                # Through a gateway: who the session is for and until when, even while serving.
                shown = info.health != "serving" or info.backend_kind == "gateway"
                reason = info.health_detail if shown else ""
                rows.append(
                    (
                        info.name,
                        info.type,
                        info.env,
                        info.backend,
                        info.access,
                        info.health,
                        _shown(info.type, value),
                        reason,
                    )
                )
    header = ("BINDING", "TYPE", "ENV", "BACKEND", "ACCESS", "HEALTH", "VALUE", "REASON")
    if args.json:
        # The same rows as the table, keyed by its lower-cased header; a secret stays masked.
        print(
            json.dumps([dict(zip((h.lower() for h in header), row, strict=True)) for row in rows], indent=2)
        )
        return 0
    health = {"serving": style.GREEN, "not_serving": style.RED, "unknown": style.YELLOW}
    style.columns(header, rows, sys.stdout, colours={5: health})
    return 0


def _shown(binding_type: str, value: str | None) -> str:
    if binding_type == "secret":
        return "••••••"
    return value if binding_type == "var" and value is not None else ""


# --- call --------------------------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    from bindingd_client import connect_sync

    # `bindingd call CACHE put k v --env staging` reads as naturally as `call --env staging ...`.
    late = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _global_args(late)
    found, args.args = late.parse_known_args(args.args)
    for option in ("config", "env", "log_level", "log_format"):
        setattr(args, option, getattr(found, option, None) or getattr(args, option))

    env = _connect(args)
    if env is not None:
        with env:
            return _call(env, args)
    # No daemon running: serve this one call from a short-lived one, as wrangler does. Its only
    # caller is this process, whose call has ended when it is stopped: nothing to drain.
    with _ephemeral_daemon(args, log_level=_log_level(args, "error"), grace=0.0) as (endpoint, code):
        if endpoint is None:
            return code
        with connect_sync(endpoint=endpoint) as env:
            return _call(env, args)


def _call(env, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from bindingd_client import BindingError

    try:
        return run_call(env, args.binding, args.op, args.args)
    except BindingError as e:
        _fail(f"{e} ({e.reason})")
        return EXIT_FAILED
    except (CallUsageError, ValueError, TypeError) as e:
        # A usage mistake, or a key or value that cannot be sent (not UTF-8, a number out of
        # range, ...): the operation's usage line once, then one line naming the call.
        usage = getattr(e, "usage", None)
        if usage:
            print(usage.rstrip(), file=sys.stderr)
        _fail(f"call {' '.join(filter(None, (args.binding, args.op)))}: {e}")
        return EXIT_CONFIG
    except RecursionError:
        # json.loads (and json.dumps) recurse once per level of nesting.
        _fail(f"call {args.binding} {args.op}: a JSON argument is nested too deeply to be read")
        return EXIT_CONFIG


# --- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        _fail("nothing to run: bindingd run [--config F] [--env E] -- CMD [ARGS...]")
        return EXIT_CONFIG
    with (
        _CommandSignals() as signals,
        _ephemeral_daemon(args, log_level=_log_level(args, "warning")) as (endpoint, code),
    ):
        if endpoint is None:
            return code
        try:
            # The command's clients refuse a daemon of another env than BINDINGD_ENV: with --env,
            # the variable says the env this daemon serves.
            served = {"BINDINGD_ENV": args.env} if args.env else {}
            child = subprocess.Popen(cmd, env={**os.environ, "BINDINGD_ENDPOINT": endpoint, **served})
        except OSError as e:
            _fail(f"cannot run {cmd[0]!r}: {e.strerror}")
            # The shell's codes: 127 not found, 126 found but not executable.
            return 127 if isinstance(e, FileNotFoundError) else 126
        signals.child = child
        returncode = child.wait()
        return returncode if returncode >= 0 else 128 - returncode


class _CommandSignals:
    """While `bindingd run` lives, SIGTERM, SIGHUP and SIGINT go to its command.

    Before the command starts they end `run` itself (its daemon is stopped on the way out).
    SIGINT and SIGHUP from the terminal already reach the command through its process group,
    so they are passed on only when `run` is not in the terminal's foreground group.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _CommandSignals:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.child is None:
            raise SystemExit(128 + signum)
        if signum == signal.SIGTERM or not _in_terminal_foreground():
            self.child.send_signal(signum)


def _in_terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _ephemeral_daemon(
    args: argparse.Namespace, *, log_level: str, grace: float | None = None
) -> Iterator[tuple[str | None, int]]:
    """A daemon on a private socket for the duration of the block: (endpoint, 0), or
    (None, exit code) when it did not come up. `grace`: its drain period (serve's default if
    None)."""
    folder = Path(tempfile.mkdtemp(prefix="bindingd-run-"))
    socket_path = folder / "bindingd.sock"
    command = [
        sys.executable,
        "-m",
        "bindingd",
        "serve",
        "--socket",
        str(socket_path),
        "--child-of",
        str(os.getpid()),
    ]
    command += ["--log-level", log_level]
    if grace is not None:
        command += ["--grace", f"{grace:g}"]
    if args.config:
        command += ["--config", str(args.config)]
    if args.env:
        command += ["--env", args.env]
    if getattr(args, "allow_writes", False):
        command.append("--allow-writes")
    if getattr(args, "remote", False):
        command.append("--remote")
    daemon = subprocess.Popen(command, start_new_session=True)
    try:
        endpoint = f"unix://{socket_path}"
        code = _wait_ready(daemon, endpoint)
        yield (endpoint if code is None else None, code or 0)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(daemon: subprocess.Popen[bytes], endpoint: str) -> int | None:
    """None once the daemon answers its health check; its exit code if it died first."""
    import grpc

    deadline = time.monotonic() + READY_TIMEOUT_S
    # Short reconnect backoff: the socket appears within a fraction of a second, and grpc's
    # default first backoff (1 s) would add most of a second to every `run` and `call`.
    backoff = [
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 100),
    ]
    with grpc.insecure_channel(endpoint, options=backoff) as channel:
        while time.monotonic() < deadline:
            code = daemon.poll()
            if code is not None:
                return code or EXIT_FAILED
            if _not_serving(channel, timeout=1.0) is None:
                return None
            time.sleep(0.05)
    _fail(f"the daemon did not become ready within {READY_TIMEOUT_S:.0f}s")
    return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
