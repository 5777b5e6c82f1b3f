"""`bindingd gateway init | grant | revoke`: setting up a gateway and managing who may use it.

`gateway serve` (and `login` / `logout` on the developer's side) come with the gateway server;
these commands work on their own today: init writes the files a gateway needs, grant and
revoke act on the state store that gateway.yaml names.

Exit codes as the rest of the CLI: 0 done, 1 the operation failed (a file already there, the
state store cannot be opened), 2 a usage or config mistake. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bindingd.config import ConfigError
from bindingd.config.yaml_source import Item, describe, read_yaml
from bindingd.errors import BindingdError, Reason
from bindingd.gateway import admin, pki
from bindingd.gateway.state import StateStore, open_state

EXIT_FAILED = 1
EXIT_CONFIG = 2


def cmd_gateway(args: argparse.Namespace) -> int:
    try:
        if args.gateway_command == "init":
            return _init(args)
        if args.config is None:
            raise UsageError(f"gateway {args.gateway_command} needs --config gateway.yaml")
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


def state_store(config: Path) -> StateStore:
    """The state store that gateway.yaml's `gateway.state` names (not opened yet).

    Only that section is read here, by a stand-in for the full gateway.yaml loader
    (bindingd/gateway/config.py, written beside this): once it lands, replace this function
    with a call to it so that grant and revoke check the whole file as `gateway serve` will.
    """
    root = read_yaml(config)
    if root is None:
        raise ConfigError("the file is empty; it needs a `gateway:` section with `state:`", file=config)
    gateway = _mapping(root, "gateway", config)
    state = _mapping(gateway, "state", config)
    fields: dict[str, Item] = state.value
    kind = fields.get("kind")
    if kind is None or not isinstance(kind.value, str):
        raise ConfigError("needs `kind: sqlite`", file=config, line=state.line, key_path=state.key_path)
    if kind.value != "sqlite":
        raise ConfigError(
            f'state store kind "{kind.value}" is not supported yet (use sqlite)',
            file=config,
            line=kind.line,
            key_path=kind.key_path,
        )
    path = fields.get("path")
    if path is None or not isinstance(path.value, str) or not path.value:
        got = "nothing" if path is None else describe(path.value)
        raise ConfigError(
            f"a sqlite state store needs `path:` (a file, relative to gateway.yaml), got {got}",
            file=config,
            line=state.line if path is None else path.line,
            key_path=f"{state.key_path}.path",
        )
    return open_state("sqlite", path=config.resolve().parent / Path(path.value).expanduser())


def _mapping(parent: Item, key: str, config: Path) -> Item:
    value: Item | None = parent.value.get(key) if isinstance(parent.value, dict) else None
    where = ".".join((*parent.path, key))
    if value is None:
        raise ConfigError(f"`{where}:` is missing", file=config, line=parent.line)
    if not isinstance(value.value, dict):
        raise ConfigError(
            f"expected a mapping, got {describe(value.value)}", file=config, line=value.line, key_path=where
        )
    return value
