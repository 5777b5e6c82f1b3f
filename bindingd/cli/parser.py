"""The command line's grammar: every command, option and choice, in one argparse tree.

Its own module, importing nothing heavy, so that shell completion (`bindingd __complete`, run at
every TAB) reads the same tree as the commands without loading the daemon.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

LEVELS = ("debug", "info", "warning", "error")
DESCRIPTION = (
    "bindingd serve | check | bindings | call | run | migrations | login | logout | gateway | cloudflare | "
    "completion"
)


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
        choices=LEVELS,
        help="default: $BINDINGD_LOG_LEVEL, else info for serve, warning for run, error otherwise",
    )
    parser.add_argument(
        "--log-format",
        default=default,
        choices=("console", "json"),
        help="default: console on a TTY, else json",
    )


def _remote_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--remote",
        action="store_true",
        default=argparse.SUPPRESS,
        help="serve every binding of the wrangler file from the Cloudflare account (the proxy Worker)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bindingd", description=DESCRIPTION)
    # The installed distribution's version: pyproject.toml is its one source.
    version = f"bindingd {metadata.version('bindingd')}"
    parser.add_argument("-V", "--version", action="version", version=version)
    _global_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon")
    _global_args(serve)
    _remote_arg(serve)
    serve.add_argument("--listen", help="also listen on loopback TCP HOST:PORT (requires the bearer token)")
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (loopback)",
    )
    serve.add_argument("--socket", type=Path, help="unix socket path (default: .bindingd/bindingd.sock)")
    serve.add_argument("--allow-writes", action="store_true", help="allow writes in a protected env")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to drain calls on SIGTERM")
    # Used by `bindingd run` and `call`: serve for that process only, and stop when it is gone.
    serve.add_argument("--child-of", type=int, help=argparse.SUPPRESS)

    check = sub.add_parser("check", help="validate the config and probe every binding's backend")
    _global_args(check)
    _remote_arg(check)
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    bindings = sub.add_parser("bindings", help="table of the bindings of the env")
    _global_args(bindings)
    _remote_arg(bindings)
    bindings.add_argument("--json", action="store_true", help="print the bindings as a JSON array")

    call = sub.add_parser("call", help="one operation on a binding, e.g. `bindingd call CACHE get user:1`")
    _global_args(call)
    _remote_arg(call)
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
    _remote_arg(create)
    create.add_argument("binding")
    create.add_argument("name")
    listing = msub.add_parser("list", help="the binding's migrations and whether each is applied")
    _global_args(listing)
    _remote_arg(listing)
    listing.add_argument("binding")
    apply = msub.add_parser("apply", help="apply the pending migrations, each in its own transaction")
    _global_args(apply)
    _remote_arg(apply)
    apply.add_argument("binding")
    apply.add_argument("--allow-writes", action="store_true", help="needed to apply in a protected env")

    run = sub.add_parser("run", help="start the daemon, run CMD with BINDINGD_ENDPOINT set, stop the daemon")
    _global_args(run)
    _remote_arg(run)
    run.add_argument("--allow-writes", action="store_true")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    login = sub.add_parser(
        "login",
        help="enrol this device at the env's gateway with a one-time code, and open a session",
        description="Enrol this device's key at the gateway that the env names in bindingd.yaml "
        "(envs.ENV.gateway), with the one-time code from `bindingd gateway grant`; then open a "
        "session and print what the gateway grants in the env. Without --code, the code is asked "
        "for on a terminal (never when stdin is not one).",
    )
    _global_args(login)
    login.add_argument("--code", metavar="CODE", help="the one-time enrolment code")
    logout = sub.add_parser(
        "logout", help="make the env's gateway forget this device, and delete its key here"
    )
    _global_args(logout)

    _gateway_args(sub)
    _cloudflare_args(sub)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script: source <(bindingd completion bash)",
        description="Print a completion script for bash, zsh or fish. It completes commands, "
        "options, env names, and the binding names and operations of the bindingd.yaml found "
        "from the current folder.",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


def _cloudflare_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bindingd cloudflare deploy` (bindingd/cli/cloudflare.py)."""
    cloudflare = sub.add_parser("cloudflare", help="deploy the proxy Worker that serves a Cloudflare account")
    csub = cloudflare.add_subparsers(dest="cloudflare_command", required=True)
    deploy = csub.add_parser(
        "deploy",
        help="write the proxy Worker's wrangler config from the env's bindings and deploy it",
        description="Write the proxy Worker's wrangler.jsonc (one Worker binding per binding of the env "
        "on a cloudflare connection), make the connection's signing key if its file does not exist, "
        "deploy with wrangler, put the public key in as the Worker's secret BINDINGD_PUBLIC_KEY, and "
        "print the connections: entry to add.",
    )
    _global_args(deploy)
    _remote_arg(deploy)
    deploy.add_argument(
        "--dry-run",
        action="store_true",
        help="wrangler deploy --dry-run --outdir: build only, offline; no secret put",
    )
    deploy.add_argument("--name", help="the Worker's name (default: bindingd-proxy-<env>)")
    deploy.add_argument(
        "--out",
        type=Path,
        help="folder for the Worker's wrangler.jsonc (default: .bindingd/cloudflare/<env>)",
    )
    deploy.add_argument(
        "--connection", metavar="NAME", help="the cloudflare connection, when the env uses several"
    )


def _gateway_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`bindingd gateway init | serve | grant | revoke` (bindingd/cli/gateway.py)."""
    gateway = sub.add_parser("gateway", help="set up a gateway (remote access) and manage who may use it")
    gsub = gateway.add_subparsers(dest="gateway_command", required=True)

    init = gsub.add_parser(
        "init",
        help="write a development CA, a server certificate and a token signing key in DIR",
        description="Write DIR/ca.pem (a development CA), DIR/server.pem and DIR/server.key (the "
        "gateway's TLS certificate for localhost, 127.0.0.1 and each --host), DIR/signing.key (the "
        "Ed25519 key that signs access tokens); print the CA's SHA-256 fingerprint last.",
    )
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="another DNS name or IP address for the server certificate (repeatable)",
    )
    init.add_argument(
        "--force", action="store_true", help="replace existing files (a new CA and signing key)"
    )

    # --config is also accepted before the command, as everywhere: SUPPRESS keeps that value.
    config_help = "the gateway's gateway.yaml (its gateway.state names the state store)"
    serve = gsub.add_parser(
        "serve",
        help="serve gateway.yaml's envs over TLS to callers with an access token",
        description="Serve every env of gateway.yaml over TLS with the daemon's services, each call "
        "checked against the policy and audited. SIGHUP reloads the envs and the policy; SIGTERM drains.",
    )
    serve.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help="the gateway.yaml"
    )
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to drain calls on SIGTERM")

    grant = gsub.add_parser("grant", help="print a one-time enrolment code (valid 15 minutes) for a user")
    grant.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help=config_help)
    grant.add_argument("--user", required=True, metavar="NAME")
    grant.add_argument(
        "--group", action="append", metavar="G", help="a policy group of the user (repeatable)"
    )

    revoke = gsub.add_parser("revoke", help="revoke a user's devices and tokens, or one token")
    revoke.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help=config_help)
    who = revoke.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="NAME", help="every device and token of this user")
    who.add_argument("--token", metavar="JTI", help="one token, by its id (jti)")
