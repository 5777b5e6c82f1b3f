"""gateway.yaml: what a gateway serves, to whom, and where it keeps its keys, state and audit.

`connections:`, `bindings:` and `envs:` are bindingd.yaml's, read by bindingd's own loader (a
subclass of `bindingd.config.loader.Loader`), so they mean the same, fail with the same
`file:line: key.path: message` errors and resolve `${env:…}` / `${file:…}` the same way (secrets
are never shown). What a gateway adds:

    gateway:   id, listen (required); tls {cert, key}, signing_key (required: `gateway init`
               writes them); previous_signing_keys [paths] (after a rotation: their tokens
               verify until they expire); state {kind: sqlite, path} | {kind: postgres, dsn} (default: sqlite,
               gateway-state.sqlite3 beside the file); audit {path} | {stdout: true} (default
               stdout). Paths are relative to the file.
    envs.NAME: protected, token_ttl (seconds, 1 to 86400; default 900 protected, 3600 otherwise)
    policy:    groups {name: [users]}; grants and denies [{who, env, bindings, actions}]

Unlike the daemon, a gateway serves every env of its file at once: each is checked strictly
(a provider for every binding) and resolved (every reference set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bindingd import logs
from bindingd.config.interpolate import Resolver
from bindingd.config.loader import ENV_KEYS, Loader, given_file, read_root
from bindingd.config.model import Binding, Config
from bindingd.config.schema import Option
from bindingd.config.urls import secret_parts
from bindingd.config.yaml_source import Item, describe
from bindingd.gateway.policy import ACTIONS, ACTIONS_BY_TYPE, ANY, WHO_KINDS, Policy, Rule

TOP_LEVEL_KEYS = ("version", "gateway", "connections", "bindings", "envs", "policy")
GATEWAY_KEYS = ("id", "listen", "tls", "signing_key", "previous_signing_keys", "state", "audit")
TTL_PROTECTED_S = 900
TTL_DEFAULT_S = 3600
TTL_MAX_S = 86_400  # a day: a token is meant to be short-lived
DEFAULT_STATE_FILE = "gateway-state.sqlite3"
STATE_KINDS = ("sqlite", "postgres")
RULE_KEYS = ("who", "env", "bindings", "actions")
# The gateway id is a token's audience and appears in messages: a plain name.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*")

_TEXT = Option(str)
_SECRET = Option(str, secret=True)


@dataclass(frozen=True)
class StateConfig:
    kind: str  # "sqlite" | "postgres"
    path: Path | None = None  # sqlite
    dsn: str | None = field(default=None, repr=False)  # postgres: may hold a password


@dataclass(frozen=True)
class AuditConfig:
    path: Path | None = None  # None: stdout


@dataclass(frozen=True)
class GatewayEnv:
    name: str
    protected: bool
    token_ttl: int  # seconds
    bindings: Mapping[str, Binding]


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    id: str
    listen: str  # HOST:PORT
    tls_cert: Path
    tls_key: Path
    signing_key: Path
    state: StateConfig
    audit: AuditConfig
    envs: Mapping[str, GatewayEnv]
    policy: Policy
    # Keys that signed tokens before a rotation: their tokens verify until they expire.
    previous_signing_keys: tuple[Path, ...] = ()

    def runtime_config(self, env: str) -> Config:
        """What a bindingd `Runtime` needs to serve `env`: its bindings, with local state of its
        own (see `EnvConfig`). Never protected: at the gateway the policy decides writes (a
        protected env's writes need a grant naming it), not the daemon's --allow-writes."""
        return EnvConfig(path=self.path, env=env, bindings=self.envs[env].bindings, envs=tuple(self.envs))


@dataclass(frozen=True)
class EnvConfig(Config):
    """One env of a gateway.yaml as a bindingd Config. A gateway serves every env at once, so
    each keeps its local state (`.bindingd-ENV/state` beside the file) apart: the local
    providers name their files by binding name, and the same name in two envs must not share
    them. The folder sits beside the file, as `.bindingd/` does, so a local sql `path:`
    relative to the project root (state_dir's grandparent) still means the same."""

    @property
    def runtime_dir(self) -> Path:
        return self.root / f".bindingd-{self.env}"


def load_gateway_config(path: Path, *, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load and check a gateway.yaml; every env is resolved. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    file = given_file(Path(path).expanduser(), "gateway config")
    root = read_root(file, "gateway.yaml")
    return GatewayLoader(file, environ).load_gateway(root)


class GatewayLoader(Loader):
    top_level_keys = TOP_LEVEL_KEYS
    env_keys = (*ENV_KEYS, "token_ttl")

    def load_gateway(self, root: Item) -> GatewayConfig:
        top = self.mapping(root)
        self.check_version(root, top)
        self.check_known_keys(top, self.top_level_keys)
        if "gateway" not in top:
            raise self.error(root, 'missing required key "gateway" (its id, listen, tls and signing_key)')
        resolver = Resolver(self.environ, self.file.parent)
        settings = self.mapping(top["gateway"])
        self.check_known_keys(settings, GATEWAY_KEYS)
        gateway_id = self.gateway_id(self.required(top["gateway"], settings, "id"))
        listen = self.listen(self.required(top["gateway"], settings, "listen"), resolver)
        tls = self.mapping(self.required(top["gateway"], settings, "tls"))
        self.check_known_keys(tls, ("cert", "key"))
        tls_cert = self.path(self.required(settings["tls"], tls, "cert"), resolver)
        tls_key = self.path(self.required(settings["tls"], tls, "key"), resolver)
        signing_key = self.path(self.required(top["gateway"], settings, "signing_key"), resolver)
        previous: list[Path] = []
        if "previous_signing_keys" in settings:
            listed = settings["previous_signing_keys"]
            if not isinstance(listed.value, list):
                raise self.error(listed, "expected a list of key files (the keys used before a rotation)")
            previous = [self.path(item, resolver) for item in listed.value]
        state = self.state(settings.get("state"), resolver)
        audit = self.audit(settings.get("audit"), resolver)

        connections = self.connections(top.get("connections"))
        base = self.base_bindings(top.get("bindings"))
        env_specs = self.envs(top.get("envs"))
        if not env_specs:
            where = top.get("envs") or root
            raise self.error(where, "a gateway serves at least one env: add one under envs:")
        effective = {
            name: self.effective(name, base, spec, connections, strict=True)
            for name, spec in env_specs.items()
        }
        types = {env: {name: spec.type for name, spec in specs.items()} for env, specs in effective.items()}
        protected = frozenset(name for name, spec in env_specs.items() if spec.protected)
        policy = self.policy(top.get("policy"), types, protected)
        envs = {
            name: GatewayEnv(
                name=name,
                protected=spec.protected,
                token_ttl=self.token_ttl(spec.fields.get("token_ttl"), spec.protected),
                bindings=self.resolve(name, effective[name]),
            )
            for name, spec in env_specs.items()
        }
        return GatewayConfig(
            path=self.file,
            id=gateway_id,
            listen=listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
            signing_key=signing_key,
            state=state,
            audit=audit,
            envs=envs,
            policy=policy,
            previous_signing_keys=tuple(previous),
        )

    # -- gateway: --------------------------------------------------------------------------

    def text(self, item: Item, resolver: Resolver, option: Option = _TEXT) -> str:
        """A string value with its references resolved; never empty."""
        value = self.option_value(item, option, resolver)
        if not value:
            raise self.error(item, "expected a non-empty string")
        return str(value)

    def path(self, item: Item, resolver: Resolver) -> Path:
        return self.file.parent / Path(self.text(item, resolver)).expanduser()

    def gateway_id(self, item: Item) -> str:
        value = self.string(item)
        if not _ID.fullmatch(value):
            raise self.error(
                item, f'invalid gateway id "{value}": use letters, digits and . _ : - (at most 128)'
            )
        return value

    def listen(self, item: Item, resolver: Resolver) -> str:
        value = self.text(item, resolver)
        host, colon, port = value.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.error(item, f'"{item.value}" is not HOST:PORT (e.g. "0.0.0.0:8443" or "[::]:8443")')
        return value

    def state(self, item: Item | None, resolver: Resolver) -> StateConfig:
        if item is None:
            return StateConfig("sqlite", path=self.file.parent / DEFAULT_STATE_FILE)
        fields = self.mapping(item)
        kind_item = self.required(item, fields, "kind")
        kind = self.string(kind_item)
        if kind == "sqlite":
            self.check_known_keys(fields, ("kind", "path"))
            path = self.path(fields["path"], resolver) if "path" in fields else None
            return StateConfig("sqlite", path=path or self.file.parent / DEFAULT_STATE_FILE)
        if kind == "postgres":
            self.check_known_keys(fields, ("kind", "dsn"))
            dsn = self.text(self.required(item, fields, "dsn"), resolver, _SECRET)
            logs.redact(*secret_parts(dsn))  # as a connection's secret options are
            return StateConfig("postgres", dsn=dsn)
        raise self.error(kind_item, f'unknown state kind "{kind}" (allowed: {", ".join(STATE_KINDS)})')

    def audit(self, item: Item | None, resolver: Resolver) -> AuditConfig:
        if item is None:
            return AuditConfig()  # on by default: stdout
        fields = self.mapping(item)
        self.check_known_keys(fields, ("path", "stdout"))
        if ("path" in fields) == ("stdout" in fields):
            raise self.error(item, 'give exactly one of "path" (a file) or "stdout: true"')
        if "stdout" in fields:
            if fields["stdout"].value is not True:
                raise self.error(fields["stdout"], 'expected true (to log to a file, give "path")')
            return AuditConfig()
        return AuditConfig(self.path(fields["path"], resolver))

    def token_ttl(self, item: Item | None, protected: bool) -> int:
        if item is None:
            return TTL_PROTECTED_S if protected else TTL_DEFAULT_S
        value = item.value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(item, f"expected an integer (seconds), got {describe(value)}")
        if not 0 < value <= TTL_MAX_S:
            raise self.error(item, f"token_ttl must be between 1 and {TTL_MAX_S} seconds, got {value}")
        return value

    # -- policy: ---------------------------------------------------------------------------

    def policy(
        self, item: Item | None, types: dict[str, dict[str, str]], protected: frozenset[str]
    ) -> Policy:
        """The policy, checked against the envs and their bindings (name -> type)."""
        if item is None:
            return Policy(protected_envs=protected)  # nothing granted: every call is denied
        fields = self.mapping(item, nullable=True)
        self.check_known_keys(fields, ("groups", "grants", "denies"))
        groups: dict[str, frozenset[str]] = {}
        if "groups" in fields:
            for name, members in self.mapping(fields["groups"], nullable=True).items():
                self.name(name, members, "group")
                users = self.names(members, "user")
                groups[name] = frozenset(users)
        grants = tuple(self.rules(fields.get("grants"), "grants", types))
        denies = tuple(self.rules(fields.get("denies"), "denies", types))
        return Policy(grants=grants, denies=denies, groups=groups, protected_envs=protected)

    def name(self, value: str, item: Item, what: str) -> str:
        if not _NAME.fullmatch(value):
            raise self.error(item, f'invalid {what} name "{value}": use letters, digits and _ . @ + -')
        return value

    def names(self, item: Item, what: str) -> list[str]:
        if not isinstance(item.value, list):
            raise self.error(item, f"expected a list of {what} names, got {describe(item.value)}")
        return [self.name(self.string(entry), entry, what) for entry in item.value]

    def rules(self, item: Item | None, section: str, types: dict[str, dict[str, str]]) -> list[Rule]:
        if item is None or item.value is None:
            return []
        if not isinstance(item.value, list):
            raise self.error(
                item, f"expected a list of rules ({', '.join(RULE_KEYS)}), got {describe(item.value)}"
            )
        return [self.rule(entry, f"policy.{section}[{i}]", types) for i, entry in enumerate(item.value)]

    def rule(self, item: Item, where: str, types: dict[str, dict[str, str]]) -> Rule:
        fields = self.mapping(item)
        self.check_known_keys(fields, RULE_KEYS)
        for key in RULE_KEYS:
            self.required(item, fields, key)
        who = self.who(fields["who"])
        env = self.string(fields["env"])
        if env != ANY and env not in types:
            raise self.error(fields["env"], f'unknown env "{env}" (defined: {", ".join(types)}; or "*")')
        envs = list(types) if env == ANY else [env]
        # The bindings the rule can reach, with their types, over the envs it names.
        reachable: dict[str, str] = {}
        for name in envs:
            reachable.update(types[name])
        bindings: str | frozenset[str] = ANY
        if fields["bindings"].value != ANY:
            listed = self.names(fields["bindings"], "binding")
            for name, entry in zip(listed, fields["bindings"].value, strict=True):
                if name not in reachable:
                    scope = f'env "{env}"' if env != ANY else "any env"
                    defined = ", ".join(reachable) or "none"
                    raise self.error(entry, f'unknown binding "{name}" in {scope} (defined: {defined})')
            bindings = frozenset(listed)
        applies_to = sorted({reachable[name] for name in reachable if bindings == ANY or name in bindings})
        actions: str | frozenset[str] = ANY
        if fields["actions"].value != ANY:
            listed = self.names(fields["actions"], "action")
            for action, entry in zip(listed, fields["actions"].value, strict=True):
                if action not in ACTIONS:
                    raise self.error(
                        entry, f'unknown action "{action}" (allowed: {", ".join(ACTIONS)}; or "*")'
                    )
                if not any(action in ACTIONS_BY_TYPE[t] for t in applies_to):
                    has = (
                        "; ".join(f"{t}: {', '.join(ACTIONS_BY_TYPE[t])}" for t in applies_to)
                        or "no bindings"
                    )
                    raise self.error(
                        entry, f'action "{action}" applies to none of the bindings this rule names ({has})'
                    )
            actions = frozenset(listed)
        return Rule(who, env, bindings, actions, where)

    def who(self, item: Item) -> str:
        value = self.string(item)
        if value == ANY:
            return value
        kind, colon, name = value.partition(":")
        if not colon or kind not in WHO_KINDS or not _NAME.fullmatch(name):
            raise self.error(item, f'invalid who "{value}": expected "user:NAME", "group:NAME" or "*"')
        return value
