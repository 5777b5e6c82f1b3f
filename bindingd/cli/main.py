"""`bindingd serve | check | bindings | call | run | migrations`.

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
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bindingd import logs
from bindingd.cli.call import CallUsageError, run_call
from bindingd.config import Config, ConfigError, find_config, load_config
from bindingd.runtime import Runtime, Served
from bindingd.server.app import Daemon, ServeError, ServeOptions
from bindingd.server.memory import tune_malloc

if TYPE_CHECKING:
    import grpc
    from bindingd_client import SyncEnv

EXIT_FAILED = 1
EXIT_CONFIG = 2
READY_TIMEOUT_S = 30.0


def _global_args(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--config, --env, --log-level and --log-format, accepted before and after the command.

    Below the top level their default is SUPPRESS, so a command's parser does not overwrite with
    None what was given before the command (`bindingd --env review call ...`).
    """
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--config", type=Path, default=default, help="bindingd.yaml to use (default: search upward from here)"
    )
    parser.add_argument(
        "--env", default=default, help="environment to use (default: $BINDINGD_ENV, then the file's env:)"
    )
    parser.add_argument(
        "--log-level",
        default=default,
        choices=logs.LEVELS,
        help="default: $BINDINGD_LOG_LEVEL, else info for serve, warning for run, error otherwise",
    )
    parser.add_argument(
        "--log-format",
        default=default,
        choices=("console", "json"),
        help="default: console on a TTY, else json",
    )


def _log_level(args: argparse.Namespace, command_default: str) -> str:
    return args.log_level or os.environ.get("BINDINGD_LOG_LEVEL") or command_default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bindingd", description=__doc__.splitlines()[0])
    # The installed distribution's version: pyproject.toml is its one source.
    version = f"bindingd {metadata.version('bindingd')}"
    parser.add_argument("-V", "--version", action="version", version=version)
    _global_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon")
    _global_args(serve)
    serve.add_argument("--listen", help="also listen on loopback TCP HOST:PORT (requires the bearer token)")
    serve.add_argument("--socket", type=Path, help="unix socket path (default: .bindingd/bindingd.sock)")
    serve.add_argument("--allow-writes", action="store_true", help="allow writes in a protected env")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to drain calls on SIGTERM")
    # Used by `bindingd run` and `call`: serve for that process only, and stop when it is gone.
    serve.add_argument("--child-of", type=int, help=argparse.SUPPRESS)

    check = sub.add_parser("check", help="validate the config and probe every binding's backend")
    _global_args(check)
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    bindings = sub.add_parser("bindings", help="table of the bindings of the env")
    _global_args(bindings)
    bindings.add_argument("--json", action="store_true", help="print the bindings as a JSON array")

    call = sub.add_parser("call", help="one operation on a binding, e.g. `bindingd call CACHE get user:1`")
    _global_args(call)
    call.add_argument("binding")
    # Optional here so that `bindingd call CACHE` can answer with that binding's operations.
    call.add_argument(
        "op",
        nargs="?",
        help="kv: get, get-with-metadata, put, delete, list; objects: head, get, put, delete, list; "
        "sql: query, exec; queue: send, send-batch, consume; var/secret: get",
    )
    remainder = call.add_argument(
        "args", nargs=argparse.REMAINDER, help="the operation's arguments (see --help of each op)"
    )
    # argparse counts an empty REMAINDER as a missing argument ("required: args").
    remainder.required = False

    migrations = sub.add_parser("migrations", help="create, list and apply an sql binding's migrations")
    _global_args(migrations)
    msub = migrations.add_subparsers(dest="migrations_command", required=True)
    create = msub.add_parser("create", help="add migrations/<BINDING>/NNNN_<name>.sql")
    _global_args(create)
    create.add_argument("binding")
    create.add_argument("name")
    listing = msub.add_parser("list", help="the binding's migrations and whether each is applied")
    _global_args(listing)
    listing.add_argument("binding")
    apply = msub.add_parser("apply", help="apply the pending migrations, each in its own transaction")
    _global_args(apply)
    apply.add_argument("binding")
    apply.add_argument("--allow-writes", action="store_true", help="needed to apply in a protected env")

    run = sub.add_parser("run", help="start the daemon, run CMD with BINDINGD_ENDPOINT set, stop the daemon")
    _global_args(run)
    run.add_argument("--allow-writes", action="store_true")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    return parser


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


def _fail(message: str) -> None:
    print(f"bindingd: {message}", file=sys.stderr)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, env=args.env)


# --- serve -------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    logs.configure(
        _log_level(args, "info"), json=None if args.log_format is None else args.log_format == "json"
    )
    config = _load(args)
    options = ServeOptions(
        socket=args.socket.resolve() if args.socket else None,
        listen=args.listen,
        token=os.environ.get("BINDINGD_TOKEN"),
        allow_writes=args.allow_writes,
        grace_s=args.grace,
        parent_pid=args.child_of,
    )
    daemon = Daemon(config, lambda: load_config(config.path, env=args.env), options)
    tune_malloc()
    try:
        return asyncio.run(daemon.run())
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
        print(json.dumps({"config": str(config.path), "env": config.env, "bindings": shown}, indent=2))
        return EXIT_FAILED if failures else 0
    print(f"config {config.path} is valid; env {config.env}")
    for s in served:
        b = s.binding
        if s.health == "serving":
            print(f"ok    {b.name} ({b.type}, {b.backend}): {s.health_detail}")
        else:
            print(f"FAIL  {b.name} ({b.type}, {b.backend}): {s.health_detail}")
    return EXIT_FAILED if failures else 0


async def _probe(config: Config) -> list[Served]:
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
        config = _load(args)
        for b in config.bindings.values():
            rows.append((b.name, b.type, b.env, b.backend, b.access, "no daemon", _shown(b.type, b.value)))
    else:
        with env:
            for info in env._bindings.values():
                value = env[info.name] if info.type in ("var", "secret") else None
                rows.append(
                    (
                        info.name,
                        info.type,
                        info.env,
                        info.backend,
                        info.access,
                        info.health,
                        _shown(info.type, value),
                    )
                )
    header = ("BINDING", "TYPE", "ENV", "BACKEND", "ACCESS", "HEALTH", "VALUE")
    if args.json:
        # The same rows as the table, keyed by its lower-cased header; a secret stays masked.
        print(
            json.dumps([dict(zip((h.lower() for h in header), row, strict=True)) for row in rows], indent=2)
        )
        return 0
    _table(header, rows)
    return 0


def _shown(binding_type: str, value: str | None) -> str:
    if binding_type == "secret":
        return "••••••"
    return value if binding_type == "var" and value is not None else ""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


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
    # No daemon running: serve this one call from a short-lived one, as wrangler does.
    with _ephemeral_daemon(args, log_level=_log_level(args, "error")) as (endpoint, code):
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
def _ephemeral_daemon(args: argparse.Namespace, *, log_level: str) -> Iterator[tuple[str | None, int]]:
    """A daemon on a private socket for the duration of the block: (endpoint, 0), or
    (None, exit code) when it did not come up."""
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
    if args.config:
        command += ["--config", str(args.config)]
    if args.env:
        command += ["--env", args.env]
    if getattr(args, "allow_writes", False):
        command.append("--allow-writes")
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
