"""The resolved configuration: what one env of a bindingd.yaml means, after overlay and
interpolation. Everything downstream (runtime, providers, CLI) reads these types only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bindingd.domain.resiliency import DEFAULT as DEFAULT_RESILIENCY
from bindingd.domain.resiliency import Resiliency

BINDING_TYPES = ("kv", "objects", "sql", "queue", "var", "secret")
ACCESS_MODES = ("read-write", "read-only")
LOCAL = "local"


@dataclass(frozen=True)
class Location:
    """Where a value came from, for error messages: file, line and key path."""

    file: Path
    line: int
    key_path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key_path}"


@dataclass(frozen=True)
class Connection:
    """How to reach a real resource. `options` may hold credentials: never log or return it."""

    name: str
    kind: str
    options: Mapping[str, Any] = field(repr=False)
    location: Location | None = None
    # Timeouts, retries and circuit breaker of the calls through it (`resiliency:`).
    resiliency: Resiliency = DEFAULT_RESILIENCY


@dataclass(frozen=True)
class Binding:
    name: str
    type: str
    env: str
    # None means the embedded local provider.
    connection: Connection | None = None
    access: str = "read-write"
    # The value of a var or secret binding; None for every other type.
    value: str | None = field(default=None, repr=False)
    # Provider-specific options (prefix, bucket, ...), validated against the provider's schema.
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    location: Location | None = None

    @property
    def backend(self) -> str:
        """ "local", or the connection's name."""
        return self.connection.name if self.connection else LOCAL

    @property
    def backend_kind(self) -> str:
        return self.connection.kind if self.connection else LOCAL

    @property
    def is_secret(self) -> bool:
        return self.type == "secret"


@dataclass(frozen=True)
class Gateway:
    """An env's gateway (`envs.NAME.gateway`): where it listens and the CA its certificate is
    checked against (only that CA is trusted for it). The url is HOST:PORT: always TLS, never
    credentials (a developer authenticates with `bindingd login`)."""

    url: str
    ca: Path  # absolute: a relative `ca:` is relative to the config's folder
    location: Location | None = None
    ca_location: Location | None = None

    @property
    def host(self) -> str:
        """The host without the brackets of an IPv6 address."""
        return self.url.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        return int(self.url.rpartition(":")[2])


@dataclass(frozen=True)
class Config:
    path: Path
    env: str
    # Every binding the env serves, by name, in file order.
    bindings: Mapping[str, Binding]
    # Writes are refused unless the daemon runs with --allow-writes.
    protected: bool = False
    # Every env the file defines (for messages and `bindingd check`).
    envs: tuple[str, ...] = ()
    # The env's gateway, if it names one: its bindings are then served through it, but for those
    # marked `local: true` (in `bindings`).
    gateway: Gateway | None = None
    # With a gateway: the bindings this file lists for the env without `local: true` (name ->
    # type); served through the gateway, with the ones it grants beyond them (discovery).
    remote: Mapping[str, str] = field(default_factory=dict)
    # From a wrangler file (bindingd.config.wrangler): each D1 binding's migrations folder, and
    # the bindings of kinds bindingd does not serve (listed by `bindingd check`).
    migrations: Mapping[str, Path] = field(default_factory=dict)
    not_served: tuple[Any, ...] = ()

    @property
    def root(self) -> Path:
        """The folder holding bindingd.yaml: the project root."""
        return self.path.parent

    @property
    def runtime_dir(self) -> Path:
        return self.root / ".bindingd"

    @property
    def state_dir(self) -> Path:
        return self.runtime_dir / "state"
