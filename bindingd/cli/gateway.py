"""`bindingd gateway init | serve | grant | revoke`: setting up a gateway, running it, and
managing who may use it.

init writes the files a gateway needs; serve runs it (bindingd/gateway/server.py); grant and
revoke act on the state store that gateway.yaml names.

Exit codes as the rest of the CLI: 0 done, 1 the operation failed (a file already there, the
state store cannot be opened), 2 a usage or config mistake. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bindingd import eventloop, logs
from bindingd.config import ConfigError
from bindingd.errors import BindingdError, Reason
from bindingd.gateway import admin, pki
from bindingd.gateway.config import load_gateway_config
from bindingd.gateway.state import StateStore, open_state

EXIT_FAILED = 1
EXIT_CONFIG = 2


def cmd_gateway(args: argparse.Namespace) -> int:
    try:
        if args.gateway_command == "init":
            return _init(args)
        if args.config is None:
            raise UsageError(f"gateway {args.gateway_command} needs --config gateway.yaml")
        if args.gateway_command == "serve":
            return _serve(args)
        store = state_store(args.config)
        if args.gateway_command == "grant":
            admin.grant(store, args.user, args.group or ())
        else:
            admin.revoke(store, user=args.user, token=args.token)
        return 0
    except UsageError as e:
        _fail(str(e))
        return EXIT_CONFIG
    except pki.PkiError as e:
        _fail(str(e))
        return EXIT_FAILED
    except BindingdError as e:
        _fail(e.message)
        # An empty --user or --token is the caller's mistake; anything else (the store cannot
        # be opened or written) is a failed operation.
        return EXIT_CONFIG if e.reason == Reason.INVALID_ARGUMENT else EXIT_FAILED


class UsageError(Exception):
    pass


def _fail(message: str) -> None:
    print(f"bindingd: {message}", file=sys.stderr)


def _init(args: argparse.Namespace) -> int:
    try:
        hosts = pki.parse_hosts(args.host or ())
    except pki.PkiError as e:
        raise UsageError(str(e)) from None
    written = pki.init(args.dir, hosts, force=args.force)
    folder = written.folder
    print(f"wrote {folder / pki.CA_FILE}: the development CA; give it to developers with its fingerprint")
    print(
        f"wrote {folder / pki.CERT_FILE}, {folder / pki.KEY_FILE}: "
        f"the gateway's TLS certificate for {', '.join(written.hosts)}"
    )
    print(f"wrote {folder / pki.SIGNING_KEY_FILE}: the key that signs access tokens (keep it private)")
    print("the CA's SHA-256 fingerprint, for developers to check their ca.pem against:")
    # Last, alone on its line: scripts take it with `tail -1`.
    print(written.fingerprint, flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from bindingd.gateway.server import Gateway
    from bindingd.server.app import ServeError

    level = args.log_level or os.environ.get("BINDINGD_LOG_LEVEL") or "info"
    logs.configure(level, json=None if args.log_format is None else args.log_format == "json")
    try:
        loop = eventloop.loop_factory()
    except eventloop.LoopChoiceError as e:
        _fail(str(e))
        return EXIT_CONFIG
    gateway = Gateway(load_gateway_config(args.config), grace_s=args.grace)
    try:
        return eventloop.run(gateway.run(), loop)
    except ServeError as e:
        _fail(str(e))
        return EXIT_FAILED


def state_store(config: Path) -> StateStore:
    """The state store that gateway.yaml names (not opened yet). The whole file is loaded and
    checked, as `gateway serve` does: grant and revoke refuse a file the gateway would refuse."""
    loaded = load_gateway_config(config)
    state = loaded.state
    if state.kind != "sqlite" or state.path is None:
        raise ConfigError(
            f'state store kind "{state.kind}" is not supported yet (use sqlite)', file=loaded.path
        )
    return open_state("sqlite", path=state.path)
