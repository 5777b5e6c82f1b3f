"""A Workers project's wrangler config, read as bindingd config.

With no bindingd.yaml, bindingd serves the bindings a `wrangler.json` / `wrangler.jsonc` /
`wrangler.toml` names, found the way wrangler finds it (each name searched from the folder
upwards, in that order), under the same names, each on its local simulation:

    kv_namespaces[].binding          -> kv
    r2_buckets[].binding             -> objects
    d1_databases[].binding           -> sql (migrations from `migrations_dir`, default migrations/)
    queues.producers[].binding       -> queue (named `queue`), with the settings of
    queues.consumers[] of that queue    max_retries, dead_letter_queue, retry_delay
    vars                             -> var (a non-string value as its JSON text)
    .dev.vars (or .env)              -> secret

A binding marked `remote: true` (wrangler's own switch), or every binding with `--remote`, is
served from the Cloudflare account instead, through the proxy Worker: kind `cloudflare`, the
Worker's binding of the same name (`remote_binding`). Its connection is the `kind: cloudflare`
entry of a bindingd.yaml beside the wrangler file, else one made of the variables
BINDINGD_CLOUDFLARE_URL and BINDINGD_CLOUDFLARE_KEY; with neither, the binding's line says so.

`env.NAME` sections follow wrangler's rules: bindings and vars are not inherited, so an env
serves exactly what its own section declares. The top level is bindingd's default env ("dev").
A `bindingd.yaml` beside the wrangler file adds to it and overrides it binding by binding (its
connections, envs, `protected`, gateways apply as usual).

The wrangler file becomes the same `Item` tree a bindingd.yaml is read into, each value
carrying the wrangler file's line, so the one loader checks both and every mistake is one
`file:line: key.path: message` line naming the file it is in. Kinds bindingd does not serve
(Durable Objects, services, AI, ...) are reported by `bindingd check` and never stop the rest.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bindingd.config.errors import ConfigError
from bindingd.config.interpolate import parse_dotenv
from bindingd.config.yaml_source import Item
from bindingd.registry import CLOUDFLARE_DEPLOY_OPTIONS

# wrangler's own order: the whole way up for each name before the next.
WRANGLER_FILES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")
DEFAULT_MIGRATIONS_DIR = "migrations"
# Where remote bindings find the proxy Worker when no bindingd.yaml beside names a connection.
URL_VARIABLE = "BINDINGD_CLOUDFLARE_URL"
KEY_VARIABLE = "BINDINGD_CLOUDFLARE_KEY"
# The name of the connection made of those variables.
VARIABLES_CONNECTION = "cloudflare"

# Binding kinds of wrangler's config that bindingd does not serve, and what they are.
UNSUPPORTED: dict[str, str] = {
    "durable_objects": "Durable Objects",
    "services": "service bindings",
    "ai": "Workers AI",
    "vectorize": "Vectorize",
    "hyperdrive": "Hyperdrive",
    "analytics_engine_datasets": "Analytics Engine",
    "browser": "Browser Rendering",
    "mtls_certificates": "mTLS certificates",
    "send_email": "Email",
    "dispatch_namespaces": "dispatch namespaces",
    "workflows": "Workflows",
    "images": "Images",
    "version_metadata": "version metadata",
    "assets": "static assets",
    "pipelines": "Pipelines",
    "secrets_store_secrets": "Secrets Store",
    "unsafe": "unsafe bindings",
}


@dataclass(frozen=True)
class SourcedItem(Item):
    """An Item read from a file other than the one being loaded (a wrangler file beside a
    bindingd.yaml): errors name that file."""

    file: Path | None = None


@dataclass(frozen=True)
class NotServed:
    """A binding of the wrangler file that bindingd does not serve, and why."""

    name: str
    kind: str
    reason: str
    line: int


@dataclass(frozen=True)
class WranglerBindings:
    """What one env of a wrangler file gives bindingd."""

    file: Path
    envs: tuple[str, ...]  # the env sections it defines
    bindings: dict[str, Item]  # bindingd.yaml-shaped binding definitions, by name
    migrations: dict[str, Path]  # sql binding -> its migrations folder
    not_served: tuple[NotServed, ...]
    # Connections the import adds (the one made of BINDINGD_CLOUDFLARE_*), by name.
    connections: dict[str, Item] = field(default_factory=dict)


def find_wrangler(start: Path) -> Path | None:
    for name in WRANGLER_FILES:
        for folder in (start, *start.parents):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def wrangler_beside(config: Path) -> Path | None:
    """The wrangler file in the folder of `config` (a bindingd.yaml), if any."""
    for name in WRANGLER_FILES:
        candidate = config.parent / name
        if candidate.is_file():
            return candidate
    return None


def is_wrangler_file(path: Path) -> bool:
    return path.name in WRANGLER_FILES


# -- reading ---------------------------------------------------------------------------------------


def _strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas as plain JSON, every newline kept (so a JSON
    error's line is the file's)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        else:
            out.append(c)
            i += 1
    # A comma before a closing bracket (whitespace between) is a trailing comma.
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_wrangler(file: Path) -> tuple[dict[str, Any], str]:
    """The file's contents as plain values, and its text (for line numbers)."""
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the wrangler config: {e.strerror}", file=file) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("the wrangler config is not UTF-8 text", file=file) from None
    if file.suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            at = re.search(r"\(at line (\d+)", str(e))
            raise ConfigError(
                f"invalid TOML: {str(e).split(' (at')[0]}", file=file, line=int(at.group(1)) if at else None
            ) from None
    else:
        try:
            data = json.loads(_strip_jsonc(text), object_pairs_hook=_no_duplicates) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON: {e.msg}", file=file, line=e.lineno) from None
        except _DuplicateKey as e:
            # wrangler keeps the last one silently; a second binding list or vars table is
            # almost always a mistake, so it is named (at its second appearance).
            quoted = [n for n, line in enumerate(text.splitlines(), 1) if f'"{e.key}"' in line]
            line = quoted[1] if len(quoted) > 1 else (quoted[0] if quoted else None)
            raise ConfigError(
                f'duplicate key "{e.key}" (the first would be ignored)', file=file, line=line
            ) from None
    if not isinstance(data, dict):
        raise ConfigError("a wrangler config is an object at the top", file=file, line=1)
    return data, text


class _Reader:
    """Turns one env's section of a wrangler file into bindingd.yaml-shaped Items."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.lines = text.splitlines()

    def line_of(self, *needles: str) -> int:
        """The first line naming all of `needles` (quoted names), else the first naming any."""
        for needle in needles:
            pattern = re.compile(rf"[\"']{re.escape(needle)}[\"']|\b{re.escape(needle)}\s*=")
            for number, line in enumerate(self.lines, 1):
                if pattern.search(line):
                    return number
        return 1

    def item(self, value: Any, line: int, path: tuple[str, ...]) -> SourcedItem:
        if isinstance(value, dict):
            value = {k: self.item(v, line, (*path, k)) for k, v in value.items()}
        return SourcedItem(value, line, path, self.file)

    def error(self, message: str, line: int, path: tuple[str, ...]) -> ConfigError:
        return ConfigError(message, file=self.file, line=line, key_path=".".join(path))

    def entries(
        self, section: Mapping[str, Any], key: str, prefix: tuple[str, ...]
    ) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
        value = section.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(f"expected a list of {key} entries", self.line_of(key), (*prefix, key))
        out = []
        for index, entry in enumerate(value):
            path = (*prefix, key, str(index))
            if not isinstance(entry, dict):
                raise self.error("expected an object (binding = NAME, ...)", self.line_of(key), path)
            out.append((entry, path))
        return out

    def binding_name(self, entry: dict[str, Any], path: tuple[str, ...], field: str = "binding") -> str:
        name = entry.get(field)
        if not isinstance(name, str) or not name:
            raise self.error(f'missing "{field}" (the name the Worker uses)', self.line_of(path[-2]), path)
        return name


class _Remote:
    """Which connection serves the remote bindings, found on first need (a project with no
    remote binding needs no connection)."""

    def __init__(
        self, reader: _Reader, every: bool, candidates: tuple[str, ...], environ: Mapping[str, str]
    ) -> None:
        self.reader = reader
        self.every = every
        self.candidates = candidates
        self.environ = environ
        self.added: dict[str, Item] = {}

    def wanted(self, entry: dict[str, Any]) -> bool:
        return self.every or entry.get("remote") is True

    def connection(self, entry: dict[str, Any], name: str, line: int, path: tuple[str, ...]) -> str:
        why, at = (
            ("--remote", path) if entry.get("remote") is not True else ("remote: true", (*path, "remote"))
        )
        if len(self.candidates) == 1:
            return self.candidates[0]
        if self.candidates:
            raise self.reader.error(
                f'binding "{name}" is {why}, and bindingd.yaml has several cloudflare connections '
                f"({', '.join(self.candidates)}): keep one, or define {name} in bindingd.yaml with its "
                "connection",
                line,
                at,
            )
        url, key = self.environ.get(URL_VARIABLE), self.environ.get(KEY_VARIABLE)
        if url and key:
            if not self.added:
                here = ("connections", VARIABLES_CONNECTION)
                self.added[VARIABLES_CONNECTION] = self.reader.item(
                    {
                        "kind": "cloudflare",
                        "url": f"${{env:{URL_VARIABLE}}}",
                        "key": f"${{env:{KEY_VARIABLE}}}",
                    },
                    line,
                    here,
                )
            return VARIABLES_CONNECTION
        missing = " and ".join(v for v, value in ((URL_VARIABLE, url), (KEY_VARIABLE, key)) if not value)
        raise self.reader.error(
            f'binding "{name}" is {why} (served from the Cloudflare account) but no cloudflare '
            f"connection is set: add a bindingd.yaml beside {self.reader.file.name} with the "
            "connections: entry that `bindingd cloudflare deploy` prints "
            "({ kind: cloudflare, url: ..., key: ... }), or set "
            f"{missing}",
            line,
            at,
        )


def env_bindings(
    file: Path,
    env: str | None,
    *,
    default_env: str,
    environ: Mapping[str, str] | None = None,
    remote: bool = False,
    cloudflare: tuple[str, ...] = (),
) -> WranglerBindings:
    """The bindings of `env` (None or `default_env` and no such env section: the top level).

    `remote`: every binding from the account (`--remote`), not only the `remote: true` ones.
    `cloudflare`: the names of the `kind: cloudflare` connections of a bindingd.yaml beside.
    """
    data, text = read_wrangler(file)
    reader = _Reader(file, text)
    remotes = _Remote(reader, remote, cloudflare, {} if environ is None else environ)
    sections = data.get("env") or {}
    if not isinstance(sections, dict):
        raise reader.error("expected a table of env sections", reader.line_of("env"), ("env",))
    section: Mapping[str, Any] = data
    prefix: tuple[str, ...] = ()
    if env is not None and env in sections:
        section = sections[env]
        prefix = ("env", env)
        if not isinstance(section, dict):
            raise reader.error("expected a table", reader.line_of(env), prefix)
    bindings: dict[str, Item] = {}
    migrations: dict[str, Path] = {}
    not_served: list[NotServed] = []

    def add(name: str, fields: dict[str, Any], line: int, path: tuple[str, ...]) -> None:
        if name in bindings:
            raise reader.error(f'binding "{name}" is defined twice', line, path)
        bindings[name] = reader.item(fields, line, path)

    def where(
        entry: dict[str, Any], name: str, line: int, path: tuple[str, ...], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """`fields` for the local simulation, or the Worker's binding of the same name."""
        if not remotes.wanted(entry):
            return fields
        connection = remotes.connection(entry, name, line, path)
        # The resource's id as wrangler names it, for `bindingd cloudflare deploy`.
        ids = {
            k: entry[k] for k in CLOUDFLARE_DEPLOY_OPTIONS[fields["type"]] if isinstance(entry.get(k), str)
        }
        return {**fields, **ids, "connection": connection, "remote_binding": name}

    for entry, path in reader.entries(section, "kv_namespaces", prefix):
        name = reader.binding_name(entry, path)
        line = reader.line_of(name)
        add(name, where(entry, name, line, path, {"type": "kv"}), line, path)
    for entry, path in reader.entries(section, "r2_buckets", prefix):
        name = reader.binding_name(entry, path)
        line = reader.line_of(name)
        add(name, where(entry, name, line, path, {"type": "objects"}), line, path)
    for entry, path in reader.entries(section, "d1_databases", prefix):
        name = reader.binding_name(entry, path)
        line = reader.line_of(name)
        add(name, where(entry, name, line, path, {"type": "sql"}), line, path)
        folder = entry.get("migrations_dir", DEFAULT_MIGRATIONS_DIR)
        if not isinstance(folder, str) or not folder:
            raise reader.error("expected a folder name", line, (*path, "migrations_dir"))
        migrations[name] = file.parent / folder

    queues = section.get("queues") or {}
    if not isinstance(queues, dict):
        raise reader.error(
            "expected a table with producers and consumers", reader.line_of("queues"), (*prefix, "queues")
        )
    consumers: dict[str, dict[str, Any]] = {}
    for entry, path in reader.entries(queues, "consumers", (*prefix, "queues")):
        queue = reader.binding_name(entry, path, "queue")
        consumers[queue] = entry
    for entry, path in reader.entries(queues, "producers", (*prefix, "queues")):
        name = reader.binding_name(entry, path)
        line = reader.line_of(name)
        queue = entry.get("queue", name)
        if not isinstance(queue, str) or not queue:
            raise reader.error("expected the queue's name", line, (*path, "queue"))
        fields: dict[str, Any] = {"type": "queue", "queue": queue}
        if isinstance(entry.get("delivery_delay"), int):
            fields["delivery_delay"] = entry["delivery_delay"]
        consumer = consumers.get(queue, {})
        for key in ("max_retries", "dead_letter_queue", "retry_delay"):
            if key in consumer:
                fields[key] = consumer[key]
        add(name, where(entry, name, line, path, fields), line, path)

    vars_ = section.get("vars") or {}
    if not isinstance(vars_, dict):
        raise reader.error("expected a table of NAME = value", reader.line_of("vars"), (*prefix, "vars"))
    for name, value in vars_.items():
        text_value = value if isinstance(value, str) else json.dumps(value)
        add(
            name,
            {"type": "var", "value": _literal(text_value)},
            reader.line_of(name),
            (*prefix, "vars", name),
        )

    for name, value in _dev_vars(file.parent, env if prefix else None).items():
        if name not in bindings:  # a var of the same name is what wrangler shows the Worker
            add(name, {"type": "secret", "value": _literal(value)}, 1, (".dev.vars", name))

    for key, what in UNSUPPORTED.items():
        value = section.get(key)
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(value.get("bindings"), list):
            value = value["bindings"]  # durable_objects = { bindings = [...] }
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            name = (entry.get("binding") or entry.get("name") or key) if isinstance(entry, dict) else key
            not_served.append(
                NotServed(
                    str(name), key, f"{what}: bindingd has no such binding type", reader.line_of(str(name))
                )
            )
    return WranglerBindings(
        file, tuple(sections), bindings, migrations, tuple(not_served), dict(remotes.added)
    )


def _literal(value: str) -> str:
    """A wrangler value taken as written: bindingd's `${...}` references escaped."""
    return value.replace("${", "$${")


def _dev_vars(root: Path, env: str | None) -> dict[str, str]:
    """wrangler's secrets for local development: `.dev.vars.ENV` for an env that has one, else
    `.dev.vars`, else `.env` (wrangler reads `.env` only when there is no `.dev.vars`)."""
    names = ([f".dev.vars.{env}"] if env else []) + [".dev.vars", ".env"]
    for name in names:
        path = root / name
        if path.is_file():
            try:
                return parse_dotenv(path.read_text(), path)
            except OSError as e:
                raise ConfigError(f"cannot read it: {e.strerror}", file=path) from None
    return {}
