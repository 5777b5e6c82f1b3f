"""`bindingd cloudflare deploy`: the proxy Worker's wrangler config from an env's bindings, its
deployment with wrangler, and the public key put in as its secret.

The steps, in order:

1. The signing key of the env's cloudflare connection: a `key: "${file:PATH}"` whose file does
   not exist yet is generated (Ed25519, PKCS#8 PEM, the file 0600 in a 0700 folder). A Workers
   project with no connection yet (its `remote: true` bindings, or every binding with --remote)
   gets one at `$XDG_CONFIG_HOME/bindingd/<worker>.key`.
2. The config is loaded as `serve` would load it; the bindings of the env on that connection
   become the Worker's bindings, under their `remote_binding` names, with the ids given in their
   options (wrangler's names: `id`, `bucket_name`, `database_id` / `database_name`, `queue`).
3. `<out>/wrangler.jsonc` is written (main: this package's worker/proxy.js), and wrangler runs
   `deploy` on it (`--dry-run --outdir` with --dry-run: offline, nothing deployed), then
   `secret put BINDINGD_PUBLIC_KEY` with the key's public half (not on a dry run).
4. The `connections:` entry to add is printed.

wrangler is the npm package: the one in the Node client's node_modules (`make node`, or the
folder BINDINGD_NODE_DIR names) when there is one, else `npx --yes wrangler`. Every failure is a
`DeployError`, one line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.config import ConfigError, find_config, load_config
from bindingd.config import wrangler as wrangler_config
from bindingd.config.loader import CONFIG_FILE, given_file, read_root
from bindingd.config.model import Binding, Config
from bindingd.config.yaml_source import Item
from bindingd.providers.cloudflare.client import load_key
from bindingd.providers.cloudflare.token import public_key_b64

PROXY_JS = Path(__file__).parent / "worker" / "proxy.js"
# The date the proxy Worker is written and tested against (worker/serve.mjs runs it so).
COMPATIBILITY_DATE = "2025-01-01"
SECRET = "BINDINGD_PUBLIC_KEY"
# Stand-ins while loading a Workers project that has no connection yet (nothing is called).
_PLACEHOLDER_URL = "https://bindingd-proxy.invalid"

# Per binding type: the wrangler config section, and the options that become its entry.
_SECTIONS = {
    "kv": ("kv_namespaces", {"id": "id"}),
    "objects": ("r2_buckets", {"bucket_name": "bucket_name"}),
    "sql": ("d1_databases", {"database_id": "database_id", "database_name": "database_name"}),
    "queue": ("queues.producers", {"queue": "queue"}),
}
# What each needs, and where the user finds it.
_REQUIRED = {
    "kv": ("id", "the KV namespace's id (`wrangler kv namespace list`)"),
    "objects": ("bucket_name", "the R2 bucket's name (`wrangler r2 bucket list`)"),
    "sql": ("database_id", "the D1 database's id (`wrangler d1 list`)"),
    "queue": ("queue", "the queue's name (`wrangler queues list`)"),
}


class DeployError(Exception):
    """A one-line failure of `bindingd cloudflare deploy`."""


@dataclass(frozen=True)
class Options:
    env: str | None
    config: Path | None
    cwd: Path
    dry_run: bool = False
    remote: bool = False
    name: str | None = None  # the Worker's name (default bindingd-proxy-<env>)
    out: Path | None = None  # the folder for wrangler.jsonc (default .bindingd/cloudflare/<env>)
    connection: str | None = None  # which cloudflare connection, when the env uses several


@dataclass(frozen=True)
class Plan:
    config: Config
    worker: str
    connection: str
    bindings: tuple[Binding, ...]
    folder: Path
    key: Ed25519PrivateKey
    # The connection entry's key as written, or where a generated key is; None: given by value.
    key_ref: str | None
    url: str | None  # the connection's url, if it has one already


def deploy(options: Options, environ: Mapping[str, str], say: Callable[[str], None]) -> int:
    plan = make_plan(options, environ, say)
    config_file = write_wrangler_config(plan)
    say(f"wrote {config_file}")
    base = wrangler_command(environ)
    command = [*base, "deploy", "--config", str(config_file)]
    if options.dry_run:
        command += ["--dry-run", "--outdir", str(plan.folder / "dist")]
    say("running: " + shlex.join(command))
    child_env = dict(environ)
    if options.dry_run:
        child_env.setdefault("WRANGLER_SEND_METRICS", "false")
    output = _run(command, "deploy", plan.folder, child_env, say)
    url = plan.url
    if not options.dry_run:
        found = re.search(r"https://[A-Za-z0-9.-]+\.workers\.dev", output)
        url = found.group(0) if found else url
        secret_command = [*base, "secret", "put", SECRET, "--config", str(config_file)]
        say("running: " + shlex.join(secret_command))
        _run(secret_command, "secret put", plan.folder, child_env, say, stdin=public_key_b64(plan.key))
        say(f"the Worker's secret {SECRET} is the public half of the connection's key")
    else:
        say(f"dry run: nothing deployed, and the secret {SECRET} was not put in")
        say(f"  its value would be {public_key_b64(plan.key)} (the key's public half)")
    say("")
    say(connection_entry(plan, url))
    return 0


def make_plan(options: Options, environ: Mapping[str, str], say: Callable[[str], None]) -> Plan:
    try:
        file = (
            find_config(options.cwd)
            if options.config is None
            else given_file(options.cwd / options.config.expanduser(), "config file")
        )
        yaml_file = file.parent / CONFIG_FILE if wrangler_config.is_wrangler_file(file) else file
        raw: dict[str, tuple[str | None, Path | None]] = {}
        used: set[str] = set()
        if yaml_file.is_file():
            root = read_root(yaml_file, CONFIG_FILE)
            raw = _raw_cloudflare_connections(root, yaml_file, environ)
            used = _used_connections(root, options.env or environ.get("BINDINGD_ENV"))
            if len(raw) == 1 and wrangler_config.wrangler_beside(yaml_file):
                used |= set(raw)  # the wrangler file's remote bindings use it
        for name, (_ref, path) in raw.items():
            wanted = name in used and options.connection in (None, name)
            if path is not None and wanted and not path.exists():
                generate_key(path)
                say(f"wrote a new signing key for connection {name!r}: {path} (0600)")
        loading_env = dict(environ)
        variables = (wrangler_config.URL_VARIABLE, wrangler_config.KEY_VARIABLE)
        stand_ins = not raw and not all(environ.get(v) for v in variables)
        if stand_ins:
            # A Workers project's remote bindings with no connection yet: loaded on stand-ins,
            # then the key is made where the printed entry will say.
            loading_env[wrangler_config.URL_VARIABLE] = _PLACEHOLDER_URL
            loading_env[wrangler_config.KEY_VARIABLE] = "pending"
        config = load_config(
            file, env=options.env, cwd=options.cwd, environ=loading_env, remote=options.remote
        )
    except ConfigError as e:
        raise DeployError(str(e)) from None
    worker = options.name or f"bindingd-proxy-{config.env}"
    on_cloudflare = [b for b in config.bindings.values() if b.backend_kind == "cloudflare"]
    connections = sorted({b.backend for b in on_cloudflare})
    if not on_cloudflare:
        hint = (
            "mark them remote: true in the wrangler file, or pass --remote"
            if wrangler_config.is_wrangler_file(file) or wrangler_config.wrangler_beside(file)
            else "give them connection: <a kind: cloudflare connection>"
        )
        raise DeployError(
            f'env "{config.env}" has no binding on a cloudflare connection, so the proxy Worker would '
            f"serve nothing ({file.name}; {hint})"
        )
    if options.connection is not None:
        if options.connection not in connections:
            raise DeployError(
                f'env "{config.env}" has no binding on connection "{options.connection}" '
                f"(cloudflare connections it uses: {', '.join(connections)})"
            )
        connections = [options.connection]
    elif len(connections) > 1:
        raise DeployError(
            f'env "{config.env}" uses several cloudflare connections ({", ".join(connections)}): '
            "one Worker serves one; choose it with --connection NAME"
        )
    connection_name = connections[0]
    bindings = tuple(b for b in on_cloudflare if b.backend == connection_name)
    for binding in bindings:
        _check_ids(binding, config)
    connection = bindings[0].connection
    assert connection is not None
    key_ref: str | None
    if stand_ins and connection_name == wrangler_config.VARIABLES_CONNECTION:
        default_key = _config_home(environ) / "bindingd" / f"{worker}.key"
        if not default_key.exists():
            generate_key(default_key)
            say(f"wrote a new signing key: {default_key} (0600)")
        key = _load_key_file(default_key, connection_name)
        key_ref = "${file:" + _tilde(default_key, environ) + "}"
        url = None
    else:
        key = _key(str(connection.options["key"]), connection_name)
        key_ref = raw[connection_name][0] if connection_name in raw else None
        if key_ref is None and connection_name == wrangler_config.VARIABLES_CONNECTION:
            key_ref = "${env:" + wrangler_config.KEY_VARIABLE + "}"
        url = str(connection.options["url"])
    folder = options.out or (config.root / ".bindingd" / "cloudflare" / config.env)
    if not folder.is_absolute():
        folder = options.cwd / folder
    return Plan(config, worker, connection_name, bindings, folder, key, key_ref, url)


def _check_ids(binding: Binding, config: Config) -> None:
    option, what = _REQUIRED[binding.type]
    value = binding.options.get(option)
    if isinstance(value, str) and value:
        return
    where = ""
    if binding.location is not None:
        where = f"{binding.location}: "
    raise DeployError(
        f'{where}binding "{binding.name}" ({binding.type}, env "{config.env}") does not say which '
        f"resource the Worker binds: add {option}: <{what}> to it"
    )


def wrangler_config_for(plan: Plan) -> dict[str, object]:
    data: dict[str, object] = {
        "name": plan.worker,
        "main": os.path.relpath(PROXY_JS, plan.folder),
        "compatibility_date": COMPATIBILITY_DATE,
        "workers_dev": True,
    }
    for binding in sorted(plan.bindings, key=lambda b: b.name):
        section, fields = _SECTIONS[binding.type]
        entry: dict[str, object] = {"binding": str(binding.options.get("remote_binding") or binding.name)}
        for option, key in fields.items():
            value = binding.options.get(option)
            if isinstance(value, str) and value:
                entry[key] = value
        if binding.type == "sql":
            entry.setdefault("database_name", entry["database_id"])
        if section == "queues.producers":
            queues = data.setdefault("queues", {"producers": []})
            assert isinstance(queues, dict)
            entries = queues["producers"]
        else:
            entries = data.setdefault(section, [])
        assert isinstance(entries, list)
        if entry not in entries:
            entries.append(entry)
    return data


def write_wrangler_config(plan: Plan) -> Path:
    try:
        plan.folder.mkdir(parents=True, exist_ok=True)
        path = plan.folder / "wrangler.jsonc"
        header = (
            f"// The bindingd proxy Worker for env {plan.config.env!r}, written by "
            "`bindingd cloudflare deploy` (it is rewritten at each deploy).\n"
        )
        path.write_text(header + json.dumps(wrangler_config_for(plan), indent=2) + "\n")
    except OSError as e:
        raise DeployError(
            f"cannot write the Worker's wrangler config in {plan.folder}: {e.strerror}"
        ) from None
    return path


def wrangler_command(environ: Mapping[str, str]) -> list[str]:
    """The Node client's wrangler (run by node directly: its launcher refuses Node before 22,
    where what deploy and secret put use works), else npx's."""
    node_dir = Path(environ.get("BINDINGD_NODE_DIR") or Path(__file__).parents[3] / "clients" / "node")
    cli = node_dir / "node_modules" / "wrangler" / "wrangler-dist" / "cli.js"
    node = shutil.which("node", path=environ.get("PATH"))
    if cli.is_file() and node:
        return [node, str(cli)]
    npx = shutil.which("npx", path=environ.get("PATH"))
    if npx:
        return [npx, "--yes", "wrangler"]
    raise DeployError(
        "wrangler needs Node.js: neither node with the Node client's packages (make node) nor npx is here"
    )


def _run(
    command: list[str],
    what: str,
    cwd: Path,
    env: Mapping[str, str],
    say: Callable[[str], None],
    stdin: str | None = None,
) -> str:
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=dict(env),
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DeployError(f"cannot run wrangler ({command[0]}): {e}") from None
    output = (done.stdout or "") + (done.stderr or "")
    for line in output.splitlines():
        say("  wrangler: " + line if line.strip() else "")
    if done.returncode != 0:
        raise DeployError(f"wrangler {what} failed (exit {done.returncode}); its output is above")
    return output


def connection_entry(plan: Plan, url: str | None) -> str:
    shown_url = (
        url if url and url != _PLACEHOLDER_URL else f"https://{plan.worker}.<your-subdomain>.workers.dev"
    )
    key = plan.key_ref or "<the key>"
    return (
        "the connection entry for the bindingd.yaml beside your config "
        f"(bindings on it: {', '.join(sorted(b.name for b in plan.bindings))}):\n"
        "connections:\n"
        f'  {plan.connection}: {{ kind: cloudflare, url: "{shown_url}", key: "{key}" }}'
    )


# -- keys ------------------------------------------------------------------------------------------


def generate_key(path: Path) -> None:
    """A new Ed25519 key at `path`: PKCS#8 PEM, the file 0600, a folder it makes 0700."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
    except OSError as e:
        raise DeployError(f"cannot write a new signing key at {path}: {e.strerror}") from None


def _load_key_file(path: Path, connection: str) -> Ed25519PrivateKey:
    try:
        return _key(path.read_text(), connection)
    except OSError as e:
        raise DeployError(f"cannot read the signing key {path}: {e.strerror}") from None


def _key(text: str, connection: str) -> Ed25519PrivateKey:
    try:
        return load_key(text.strip(), connection)
    except Exception as e:  # the client's error type says what the key should be
        raise DeployError(str(getattr(e, "message", e))) from None


def _raw_cloudflare_connections(
    root: Item, yaml_file: Path, environ: Mapping[str, str]
) -> dict[str, tuple[str | None, Path | None]]:
    """The `kind: cloudflare` connections of a bindingd.yaml, as written: name -> (the key's
    reference, if it is one, and the file of a `${file:PATH}` key)."""
    top = root.value if isinstance(root.value, dict) else {}
    connections = top.get("connections")
    out: dict[str, tuple[str | None, Path | None]] = {}
    if not isinstance(connections, Item) or not isinstance(connections.value, dict):
        return out
    for name, entry in connections.value.items():
        fields = entry.value if isinstance(entry.value, dict) else {}
        kind, key = fields.get("kind"), fields.get("key")
        if kind is None or kind.value != "cloudflare":
            continue
        text = key.value if key is not None and isinstance(key.value, str) else None
        ref = text if text is not None and "${" in text else None
        path = None
        match = re.fullmatch(r"\$\{file:([^}]+)\}", text or "")
        if match:
            path = _expand(match.group(1), yaml_file.parent, environ)
        out[name] = (ref, path)
    return out


def _used_connections(root: Item, env: str | None) -> set[str]:
    """The connections that the bindings of the top level and of `env` (default: the file's
    `env:`, else dev) name, as written: whose keys a deploy of that env may need."""

    def fields(item: Item | None) -> dict[str, Item]:
        return item.value if item is not None and isinstance(item.value, dict) else {}

    top = fields(root)
    named = top.get("env")
    env = env or (named.value if named is not None and isinstance(named.value, str) else "dev")
    sections = [top.get("bindings"), fields(fields(top.get("envs")).get(env)).get("bindings")]
    used = set()
    for section in sections:
        for entry in fields(section).values():
            connection = fields(entry).get("connection")
            if connection is not None and isinstance(connection.value, str):
                used.add(connection.value)
    return used


def _expand(arg: str, root: Path, environ: Mapping[str, str]) -> Path:
    """As the config's `${file:PATH}` is read: `~` is $HOME, a relative path the config's folder."""
    home = environ.get("HOME")
    if home and (arg == "~" or arg.startswith("~/")):
        return root / Path(home + arg[1:])
    return root / Path(arg).expanduser()


def _config_home(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path(environ.get("HOME") or Path.home()) / ".config"


def _tilde(path: Path, environ: Mapping[str, str]) -> str:
    home = environ.get("HOME")
    if home and path.is_relative_to(home):
        return "~/" + str(path.relative_to(home))
    return str(path)
