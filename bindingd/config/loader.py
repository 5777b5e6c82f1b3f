"""Turn a bindingd.yaml into the `Config` of one env.

The steps, in order: find the file; read it with line numbers; check its shape against the
tables of `schema` (so a new backend adds rows there, never code here); overlay the selected
env on the top-level bindings; resolve `${env:…}` / `${file:…}` in what that env uses.

Every env is checked, so a typo in `production` shows up while working in `dev`. Two checks
are left to the selected env only: that a provider exists for each (type, backend) pair
(a staging-only backend must not block local work) and resolving references (a staging
variable need not be set on a laptop).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bindingd import logs
from bindingd.config import schema, wrangler
from bindingd.config.errors import ConfigError
from bindingd.config.interpolate import Resolver, TemplateError, has_refs, literal_text, parse
from bindingd.config.model import (
    ACCESS_MODES,
    BINDING_TYPES,
    LOCAL,
    Binding,
    Config,
    Connection,
    Gateway,
    Location,
)
from bindingd.config.schema import Option
from bindingd.config.urls import RULES as URL_RULES
from bindingd.config.urls import check_url, secret_parts
from bindingd.config.yaml_source import Item, describe, read_yaml
from bindingd.domain import resiliency
from bindingd.registry import VALUE_TYPES

CONFIG_FILE = "bindingd.yaml"
VERSION = 1
DEFAULT_ENV = "dev"
ENV_VARIABLE = "BINDINGD_ENV"
TOP_LEVEL_KEYS = ("version", "env", "connections", "bindings", "envs")
ENV_KEYS = ("protected", "bindings")
GATEWAY_KEYS = ("url", "ca")
# Binding names become attributes in clients (env.APP_DB), so they must be identifiers.
BINDING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TYPES_TEXT = ", ".join(sorted(BINDING_TYPES))
_ACCESS_TEXT = ", ".join(sorted(ACCESS_MODES))
_EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true or false)"}


def find_config(start: Path) -> Path:
    """The nearest bindingd.yaml in `start` or a parent directory; without one, a Workers
    project's wrangler file, found as wrangler finds it (bindingd.config.wrangler)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    found = wrangler.find_wrangler(start)
    if found is not None:
        return found
    raise ConfigError(
        f"no {CONFIG_FILE} (or wrangler.json, wrangler.jsonc, wrangler.toml) in {start} or any "
        "parent directory; create one or pass --config"
    )


def load_config(
    path: Path | None = None,
    *,
    env: str | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    remote: bool = False,
) -> Config:
    """Load and check a config, and resolve it for one env.

    `path` is `--config` (relative to `cwd`); without it the file is searched from `cwd` up.
    The env is `env` (`--env`), else `$BINDINGD_ENV`, else the file's `env:`, else "dev".
    `environ` stands in for `os.environ` (variables, BINDINGD_ENV and HOME for `~`).
    `remote` (`--remote`): every binding of the wrangler file from the Cloudflare account.
    """
    environ = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else Path(cwd)
    file = find_config(base) if path is None else given_file(base / Path(path).expanduser(), "config file")
    loader = Loader(file, environ)
    if wrangler.is_wrangler_file(file):
        # A Workers project with no bindingd.yaml: its wrangler file alone.
        selected = env or environ.get(ENV_VARIABLE) or DEFAULT_ENV
        found = wrangler.env_bindings(file, selected, default_env=DEFAULT_ENV, environ=environ, remote=remote)
        version = Item(VERSION, 1, ("version",))
        envs = Item({name: Item(None, 1, ("env", name)) for name in found.envs}, 1, ("env",))
        top_items = {"version": version, "bindings": Item(found.bindings, 1, ()), "envs": envs}
        if found.connections:
            top_items["connections"] = Item(found.connections, 1, ("connections",))
        return _with_wrangler(loader.load(Item(top_items, 1, ()), env), found)
    root = read_root(file, CONFIG_FILE)
    beside = wrangler.wrangler_beside(file)
    if beside is None:
        if remote:
            raise ConfigError(
                "--remote serves a wrangler file's bindings from the Cloudflare account, and there is "
                "no wrangler.json, wrangler.jsonc or wrangler.toml beside it (put `connection:` on "
                "the bindings to serve remotely instead)",
                file=file,
            )
        return loader.load(root, env)
    # A bindingd.yaml beside a wrangler file: the wrangler bindings of the env, then this file's
    # (a binding of the same name here replaces the wrangler one whole).
    top = loader.mapping(root)
    named = top.get("env")
    selected = (
        env or environ.get(ENV_VARIABLE) or (named.value if named and isinstance(named.value, str) else None)
    )
    found = wrangler.env_bindings(
        beside,
        selected or DEFAULT_ENV,
        default_env=DEFAULT_ENV,
        environ=environ,
        remote=remote,
        cloudflare=_cloudflare_connections(loader, top.get("connections")),
    )
    merged = dict(top)
    if found.connections:
        own_connections = top.get("connections")
        connections = loader.mapping(own_connections, nullable=True) if own_connections is not None else {}
        merged["connections"] = Item(
            {**found.connections, **connections},
            own_connections.line if own_connections else 1,
            ("connections",),
        )
    own = top.get("bindings")
    own_bindings = loader.mapping(own, nullable=True) if own is not None else {}
    merged["bindings"] = Item({**found.bindings, **own_bindings}, own.line if own else 1, ("bindings",))
    own_envs = top.get("envs")
    envs_value = dict(loader.mapping(own_envs, nullable=True)) if own_envs is not None else {}
    for name in found.envs:
        envs_value.setdefault(name, wrangler.SourcedItem(None, 1, ("env", name), beside))
    if envs_value:
        merged["envs"] = Item(envs_value, own_envs.line if own_envs else 1, ("envs",))
    return _with_wrangler(loader.load(Item(merged, root.line, root.path), env), found)


def _cloudflare_connections(loader: Loader, connections: Item | None) -> tuple[str, ...]:
    """The names of a bindingd.yaml's `kind: cloudflare` connections (the wrangler import's remote
    bindings use the one there is)."""
    if connections is None:
        return ()
    names = []
    for name, entry in loader.mapping(connections, nullable=True).items():
        fields = entry.value if isinstance(entry.value, dict) else {}
        kind = fields.get("kind")
        if kind is not None and kind.value == "cloudflare":
            names.append(name)
    return tuple(names)


def _with_wrangler(config: Config, found: wrangler.WranglerBindings) -> Config:
    migrations = {name: folder for name, folder in found.migrations.items() if name in config.bindings}
    return replace(config, migrations=migrations, not_served=found.not_served)


def given_file(file: Path, what: str) -> Path:
    """The absolute path of a file named with --config, which must exist."""
    try:
        file = file.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise ConfigError(f"cannot resolve the path: {e}", file=file) from None
    if not file.exists():
        raise ConfigError(f"{what} not found; check the path given with --config", file=file)
    return file


def read_root(file: Path, kind: str) -> Item:
    """The file's YAML; an empty file is an error that says how a `kind` file starts."""
    root = read_yaml(file)
    if root is None:
        raise ConfigError(f'the file is empty; a {kind} starts with "version: {VERSION}"', file=file)
    return root


def gateway_url_problem(url: str) -> str | None:
    """What is wrong with a gateway url (HOST:PORT), or None. The url is never quoted: one
    with credentials in it would put them in the message."""
    example = 'write HOST:PORT, e.g. "gw.example.com:8443"'
    if "://" in url:
        return f"a gateway url has no scheme (it is always TLS): {example}"
    if "@" in url:
        return "a gateway url holds no credentials (`bindingd login` authenticates): " + example
    if any(c in url for c in "/?#") or any(c.isspace() for c in url):
        return f"a gateway url has no path, query or spaces: {example}"
    host, colon, port = url.rpartition(":")
    if not colon or not host or host in ("[", "[]"):
        return f"a gateway url needs a host and a port: {example}"
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        return 'an IPv6 gateway address goes in brackets: "[::1]:8443"'
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"a gateway url's port is a number from 1 to 65535: {example}"
    return None


@dataclass(frozen=True)
class _ConnectionSpec:
    name: str
    kind: str
    item: Item
    options: dict[str, Item]  # every key but `kind` and `resiliency`, unresolved
    policy: resiliency.Resiliency = resiliency.DEFAULT


@dataclass(frozen=True)
class _EnvSpec:
    name: str
    protected: bool
    overrides: dict[str, Item]  # binding name -> override mapping
    fields: dict[str, Item]  # every key of the env as written, for a subclass's own keys


@dataclass(frozen=True)
class _BindingSpec:
    """A checked binding of one env, before references are resolved."""

    name: str
    type: str
    item: Item  # where it is written: the env's override when there is one
    connection: _ConnectionSpec | None
    access: str
    options: dict[str, Item]  # provider options, a var's or secret's `value` included
    provider: dict[str, Option] | None  # None: no provider (allowed outside the selected env)
    local: bool = False  # `local: true`: not served through the env's gateway


class Loader:
    """Checks and resolves one file. The gateway's loader (bindingd.gateway.config) subclasses
    it for gateway.yaml: the same sections, checks and errors, with its own keys allowed."""

    top_level_keys: tuple[str, ...] = TOP_LEVEL_KEYS
    # bindingd.yaml's envs may name a gateway; gateway.yaml's envs are the gateway's own.
    env_keys: tuple[str, ...] = (*ENV_KEYS, "gateway")

    def __init__(self, file: Path, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ

    def load(self, root: Item, requested_env: str | None) -> Config:
        top = self.mapping(root)
        self.check_version(root, top)
        self.check_known_keys(top, self.top_level_keys)
        default_env = self.env_name(top["env"]) if "env" in top else None
        connections = self.connections(top.get("connections"))
        base = self.base_bindings(top.get("bindings"))
        envs = self.envs(top.get("envs"))
        gateways = {
            name: self.env_gateway(spec.fields["gateway"])
            for name, spec in envs.items()
            if "gateway" in spec.fields
        }

        names = sorted({*envs, default_env or DEFAULT_ENV})
        selected = self.select_env(requested_env, default_env, names, top)
        # The selected env first, then the others in file order, each checked on its own.
        effective = self.effective(selected, base, envs.get(selected), connections, strict=True)
        for name in dict.fromkeys([*envs, default_env or DEFAULT_ENV]):
            if name != selected:
                self.effective(name, base, envs.get(name), connections, strict=False)

        env_spec = envs.get(selected)
        gateway = gateways.get(selected)
        remote: dict[str, str] = {}
        if gateway is not None:
            # Served through the gateway: only their names and types are needed here (their
            # local definitions, with any credentials they reference, are not resolved).
            remote = {name: spec.type for name, spec in effective.items() if not spec.local}
            effective = {name: spec for name, spec in effective.items() if spec.local}
        return Config(
            path=self.file,
            env=selected,
            bindings=self.resolve(selected, effective),
            protected=env_spec.protected if env_spec else False,
            envs=tuple(names),
            gateway=gateway,
            remote=remote,
        )

    # -- small checks ----------------------------------------------------------------------

    def error(self, where: Item, message: str) -> ConfigError:
        return ConfigError(message, file=self.file_of(where), line=where.line, key_path=where.key_path)

    def location(self, item: Item) -> Location:
        return Location(self.file_of(item), item.line, item.key_path)

    def file_of(self, item: Item) -> Path:
        """The file `item` was written in: a wrangler file's items say so (SourcedItem)."""
        return getattr(item, "file", None) or self.file

    def mapping(self, item: Item, *, nullable: bool = False) -> dict[str, Item]:
        """The keys of a mapping; `nullable` lets an empty `key:` stand for an empty mapping."""
        if item.value is None and nullable:
            return {}
        if not isinstance(item.value, dict):
            where = "" if item.path else " at the top of the file"
            raise self.error(item, f"expected a mapping{where}, got {describe(item.value)}")
        return item.value

    def string(self, item: Item) -> str:
        if not isinstance(item.value, str):
            raise self.error(item, f"expected a string, got {describe(item.value)}")
        return item.value

    def check_known_keys(self, fields: dict[str, Item], allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key, item in fields.items():
            if key not in allowed:
                raise self.error(item, f'unknown key "{key}" (allowed: {", ".join(sorted(allowed))})')

    def check_version(self, root: Item, top: dict[str, Item]) -> None:
        if "version" not in top:
            raise self.error(root, f'missing required key "version" (add "version: {VERSION}")')
        item = top["version"]
        if not isinstance(item.value, int) or isinstance(item.value, bool):
            raise self.error(item, f"expected an integer, got {describe(item.value)}")
        if item.value != VERSION:
            raise self.error(item, f"unsupported version {item.value} (this bindingd reads {VERSION})")

    def required(self, parent: Item, fields: dict[str, Item], key: str) -> Item:
        if key not in fields:
            raise self.error(parent, f'missing required key "{key}"')
        return fields[key]

    def env_name(self, item: Item) -> str:
        name = self.string(item)
        if not name:
            raise self.error(item, "expected an env name, got an empty string")
        return name

    def binding_name(self, name: str, item: Item) -> None:
        if not BINDING_NAME.fullmatch(name):
            raise self.error(
                item,
                f'invalid binding name "{name}": use letters, digits and _, not starting with a digit '
                "(names become attributes in clients)",
            )

    def binding_type(self, item: Item) -> str:
        value = self.string(item)
        if value not in BINDING_TYPES:
            raise self.error(item, f'unknown binding type "{value}" (allowed: {_TYPES_TEXT})')
        return value

    # -- sections --------------------------------------------------------------------------

    def connections(self, section: Item | None) -> dict[str, _ConnectionSpec]:
        if section is None:
            return {}
        kinds = ", ".join(sorted(schema.connection_kinds()))
        out: dict[str, _ConnectionSpec] = {}
        for name, item in self.mapping(section, nullable=True).items():
            if name == LOCAL:
                raise self.error(item, f'"{LOCAL}" means the embedded backend; name the connection otherwise')
            fields = self.mapping(item)
            if "kind" not in fields:
                raise self.error(item, f'missing required key "kind" (one of: {kinds})')
            kind = self.string(fields["kind"])
            if kind not in schema.connection_kinds():
                raise self.error(fields["kind"], f'unknown connection kind "{kind}" (allowed: {kinds})')
            options = {key: value for key, value in fields.items() if key not in ("kind", "resiliency")}
            self.check_options(item, options, schema.connection_kinds()[kind].options, ("kind", "resiliency"))
            policy = self.resiliency(fields["resiliency"]) if "resiliency" in fields else resiliency.DEFAULT
            url = options.get(URL_RULES[kind].option) if kind in URL_RULES else None
            if url is not None and isinstance(url.value, str) and not has_refs(parse(url.value)):
                # A URL written out in full is checked in every env; one with references is
                # checked once resolved, in the selected env only.
                self.check_url(kind, url, literal_text(parse(url.value)))
            out[name] = _ConnectionSpec(name, kind, item, options, policy)
        return out

    def resiliency(self, item: Item) -> resiliency.Resiliency:
        """A connection's `resiliency:` (bindingd.domain.resiliency); each mistake is reported
        at the line of the value that makes it."""
        fields = self.mapping(item, nullable=True)
        self.check_known_keys(fields, resiliency.KEYS)
        parse = {
            "timeout": resiliency.timeouts,
            "retry": resiliency.retry,
            "circuit_breaker": resiliency.breaker,
        }
        parsed: dict[str, Any] = {}
        for key, sub in fields.items():
            if isinstance(sub.value, dict):
                for name, value in sub.value.items():  # each value alone first: its own line
                    self.policy_value(value, lambda v, n=name, k=key: parse[k]({n: v}))
            parsed[key] = self.policy_value(sub, parse[key])
        policy = resiliency.DEFAULT
        if "timeout" in parsed:
            policy = replace(policy, timeouts=parsed["timeout"])
        if "retry" in parsed:
            policy = replace(policy, retry=parsed["retry"])
        if "circuit_breaker" in parsed:
            policy = replace(policy, breaker=parsed["circuit_breaker"])
        return policy

    def policy_value(self, item: Item, parse: Any) -> Any:
        def plain(value: Any) -> Any:
            return {k: plain(v.value) for k, v in value.items()} if isinstance(value, dict) else value

        try:
            return parse(plain(item.value))
        except resiliency.PolicyError as e:
            raise self.error(item, str(e)) from None

    def base_bindings(self, section: Item | None) -> dict[str, Item]:
        """The top-level bindings: each a mapping that gives at least its type."""
        if section is None:
            return {}
        out: dict[str, Item] = {}
        for name, item in self.mapping(section, nullable=True).items():
            self.binding_name(name, item)
            fields = self.mapping(item)
            if "type" not in fields:
                raise self.error(item, f'missing required key "type" (one of: {_TYPES_TEXT})')
            self.binding_type(fields["type"])
            out[name] = item
        return out

    def envs(self, section: Item | None) -> dict[str, _EnvSpec]:
        if section is None:
            return {}
        out: dict[str, _EnvSpec] = {}
        for name, item in self.mapping(section, nullable=True).items():
            fields = self.mapping(item, nullable=True)
            self.check_known_keys(fields, self.env_keys)
            protected = fields.get("protected")
            if protected is not None and not isinstance(protected.value, bool):
                got = describe(protected.value)
                raise self.error(protected, f"expected a boolean (true or false), got {got}")
            overrides: dict[str, Item] = {}
            if "bindings" in fields:
                for binding, override in self.mapping(fields["bindings"], nullable=True).items():
                    self.binding_name(binding, override)
                    self.mapping(override)
                    overrides[binding] = override
            out[name] = _EnvSpec(name, bool(protected and protected.value), overrides, fields)
        return out

    def env_gateway(self, item: Item) -> Gateway:
        """`gateway: {url: HOST:PORT, ca: PATH}`, checked in every env (the CA file itself is
        read by `bindingd login`, which names it when it is missing)."""
        fields = self.mapping(item)
        self.check_known_keys(fields, GATEWAY_KEYS)
        url_item = self.required(item, fields, "url")
        problem = gateway_url_problem(self.string(url_item))
        if problem is not None:
            raise self.error(url_item, problem)
        ca_item = self.required(item, fields, "ca")
        ca = self.string(ca_item)
        if not ca.strip():
            raise self.error(ca_item, "expected the path of the gateway's CA certificate (ca.pem)")
        return Gateway(
            url=url_item.value,
            ca=self.file.parent / Path(ca).expanduser(),
            location=self.location(item),
            ca_location=self.location(ca_item),
        )

    def select_env(
        self, requested: str | None, default_env: str | None, names: list[str], top: dict[str, Item]
    ) -> str:
        if requested:
            name, source = requested, ""
        elif self.environ.get(ENV_VARIABLE):
            name, source = self.environ[ENV_VARIABLE], f" (from {ENV_VARIABLE})"
        else:
            return default_env or DEFAULT_ENV  # always one of `names`
        if name not in names:
            anchor = top.get("envs") or top.get("env")
            raise ConfigError(
                f'unknown env "{name}"{source} (defined: {", ".join(names)})',
                file=self.file,
                line=anchor.line if anchor else None,
                key_path=anchor.key_path if anchor else "",
            )
        return name

    # -- bindings of one env ---------------------------------------------------------------

    def effective(
        self,
        env: str,
        base: dict[str, Item],
        env_spec: _EnvSpec | None,
        connections: dict[str, _ConnectionSpec],
        *,
        strict: bool,
    ) -> dict[str, _BindingSpec]:
        """The env's bindings: each top-level binding with the env's override merged over it
        (key by key), then the bindings that only the env defines, in file order."""
        overrides = env_spec.overrides if env_spec else {}
        out: dict[str, _BindingSpec] = {}
        for name in [*base, *(name for name in overrides if name not in base)]:
            top, override = base.get(name), overrides.get(name)
            fields: dict[str, Item] = dict(top.value) if top else {}
            if override is not None:
                changes: dict[str, Item] = override.value
                if top is None and "type" not in changes:
                    raise self.error(
                        override,
                        f'missing required key "type" ("{name}" is not a top-level binding, '
                        f'so env "{env}" must give its type)',
                    )
                if top is not None and "type" in changes:
                    old, new = top.value["type"].value, self.binding_type(changes["type"])
                    if new != old:
                        raise self.error(
                            changes["type"],
                            f'cannot change the type of binding "{name}" from {old} to {new}; '
                            "a binding has the same type in every env",
                        )
                fields.update(changes)
            where = override if override is not None else top
            assert where is not None
            out[name] = self.binding(name, fields, where, connections, strict=strict)
        return out

    def binding(
        self,
        name: str,
        fields: dict[str, Item],
        where: Item,
        connections: dict[str, _ConnectionSpec],
        *,
        strict: bool,
    ) -> _BindingSpec:
        type_item = fields["type"]
        binding_type = self.binding_type(type_item)
        connection, kind, backend_item = None, LOCAL, type_item
        if "connection" in fields:
            backend_item = fields["connection"]
            connection_name = self.string(backend_item)
            connection = connections.get(connection_name)
            if connection is None:
                defined = f"defined: {', '.join(sorted(connections))}" if connections else "none is defined"
                raise self.error(backend_item, f'unknown connection "{connection_name}" ({defined})')
            kind = connection.kind
            serves = schema.connection_kinds()[kind].serves
            if binding_type not in serves:
                raise self.error(
                    backend_item,
                    f'connection "{connection_name}" is a {kind} connection, which cannot serve '
                    f"{binding_type} bindings ({kind} serves: {', '.join(sorted(serves))})",
                )
        access = ACCESS_MODES[0]
        if "access" in fields:
            access = self.string(fields["access"])
            if access not in ACCESS_MODES:
                raise self.error(fields["access"], f'unknown access "{access}" (allowed: {_ACCESS_TEXT})')
        local = False
        if "local" in fields:
            local_item = fields["local"]
            if not isinstance(local_item.value, bool):
                raise self.error(local_item, f"expected true or false, got {describe(local_item.value)}")
            local = local_item.value
        options = {key: item for key, item in fields.items() if key not in schema.COMMON_BINDING_KEYS}
        provider = schema.binding_options(binding_type, kind)
        if provider is None:
            if strict:
                available = schema.kinds_for(binding_type)
                raise self.error(
                    backend_item,
                    f"bindingd has no provider for {binding_type} bindings on {kind} yet "
                    f"(available for {binding_type}: {', '.join(available) or 'none'})",
                )
        else:
            self.check_options(where, options, provider, schema.COMMON_BINDING_KEYS)
        return _BindingSpec(name, binding_type, where, connection, access, options, provider, local)

    # -- options ---------------------------------------------------------------------------

    def check_options(
        self, where: Item, options: dict[str, Item], table: dict[str, Option], common: Iterable[str]
    ) -> None:
        """Unknown keys, then missing required ones, then each value's type (unresolved)."""
        self.check_known_keys(options, {*common, *table})
        for key, option in table.items():
            if option.required and key not in options:
                raise self.error(where, f'missing required key "{key}"')
        for key, item in options.items():
            self.option_value(item, table[key], None)

    def option_value(self, item: Item, option: Option, resolver: Resolver | None) -> Any:
        """The value of an option, checked against `option.type`.

        Strings are interpolated (only when a `resolver` is given: without one, this only
        checks). A YAML number is accepted where a string is expected (not for a var's or
        secret's value, whose text YAML would change: 0755, 1.50); a string that holds a
        reference is accepted where a number or boolean is, and converted once resolved.
        """
        value = item.value
        expected = _EXPECTED.get(option.type, option.type.__name__)
        if isinstance(value, str):
            try:
                parts = parse(value)
            except TemplateError as exc:
                raise self.error(item, exc.message) from None
            if not has_refs(parts):
                if option.type is str:
                    return self.matching(item, option, literal_text(parts))
                raise self.error(item, f"expected {expected}, got a string")
            if resolver is None:
                return None
            try:
                text = resolver.render(parts)
            except TemplateError as exc:
                raise self.error(item, exc.message) from None
            return self.convert_resolved(item, option, text)
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if option.type is str and is_number and not option.exact:
            return str(value)
        if option.type is int and is_number and isinstance(value, int):
            return value
        if option.type is float and is_number:
            return float(value)
        if option.type is bool and isinstance(value, bool):
            return value
        scalar = not isinstance(value, list | dict)
        hint = "; quote it to write a string" if option.type is str and scalar else ""
        raise self.error(item, f"expected {expected}, got {describe(value)}{hint}")

    def matching(self, item: Item, option: Option, text: str) -> str:
        if option.pattern is not None and not re.fullmatch(option.pattern, text):
            raise self.error(item, f"{text!r} is not {option.pattern_says}")
        return text

    def convert_resolved(self, item: Item, option: Option, text: str) -> Any:
        if option.type is str:
            if option.pattern is not None and not re.fullmatch(option.pattern, text):
                # Quote the reference as written, never what it resolved to (it may be a secret).
                raise self.error(item, f'"{item.value}" does not resolve to {option.pattern_says}')
            return text
        converted: Any = None
        stripped = text.strip()
        try:
            if option.type is int:
                converted = int(stripped)
            elif option.type is float:
                converted = float(stripped)
            elif option.type is bool and stripped.lower() in ("true", "false"):
                converted = stripped.lower() == "true"
        except ValueError:
            converted = None
        if converted is None:
            # Quote the reference as written, never what it resolved to (it may be a secret).
            expected = _EXPECTED.get(option.type, option.type.__name__)
            raise self.error(item, f'expected {expected}, but "{item.value}" does not resolve to one')
        return converted

    def check_url(self, kind: str, item: Item, url: str) -> None:
        """Refuse a malformed connection URL before any driver parses it (and quotes it)."""
        problem = check_url(kind, url)
        if problem is not None:
            raise self.error(item, problem)

    # -- resolution ------------------------------------------------------------------------

    def resolve(self, env: str, specs: dict[str, _BindingSpec]) -> dict[str, Binding]:
        """Bindings of the selected env with references resolved, in their connections too.

        Only connections that a binding uses are resolved: one Connection per name, shared."""
        resolver = Resolver(self.environ, self.file.parent)
        connections: dict[str, Connection] = {}
        bindings: dict[str, Binding] = {}
        for name, spec in specs.items():
            connection = None
            if spec.connection is not None:
                connection = connections.get(spec.connection.name)
                if connection is None:
                    connection = connections[spec.connection.name] = self.resolve_connection(
                        spec.connection, resolver
                    )
            assert spec.provider is not None  # strict checking guarantees a provider
            options = self.resolve_options(spec.options, spec.provider, resolver)
            value = options.pop("value", None) if spec.type in VALUE_TYPES else None
            bindings[name] = Binding(
                name=name,
                type=spec.type,
                env=env,
                connection=connection,
                access=spec.access,
                value=value,
                options=options,
                location=self.location(spec.item),
            )
        return bindings

    def resolve_connection(self, spec: _ConnectionSpec, resolver: Resolver) -> Connection:
        options = self.resolve_options(spec.options, schema.connection_kinds()[spec.kind].options, resolver)
        rule = URL_RULES.get(spec.kind)
        if rule is not None and rule.option in options:
            self.check_url(spec.kind, spec.options[rule.option], str(options[rule.option]))
        return Connection(spec.name, spec.kind, options, self.location(spec.item), spec.policy)

    def resolve_options(
        self, options: dict[str, Item], table: dict[str, Option], resolver: Resolver
    ) -> dict[str, Any]:
        resolved = {key: self.option_value(item, table[key], resolver) for key, item in options.items()}
        for key, value in resolved.items():
            if table[key].secret and isinstance(value, str):
                logs.redact(*secret_parts(value))
        return resolved
