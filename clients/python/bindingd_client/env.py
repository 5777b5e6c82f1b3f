"""``env``: the bindings of the daemon's current environment as attributes, like a Worker's ``env``.

Binding names are identifiers chosen by the user, so the object's own state and helpers live
under underscore names (``_env_name``, ``_bindings``) or a few verbs (``refresh``, ``close`` /
``aclose``); a binding with one of those names is still reachable as ``env["close"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Generator, Iterator
from types import TracebackType
from typing import Any, NoReturn

from ._transport import ENDPOINT_ENV as ENDPOINT_VARIABLE
from ._transport import AsyncTransport, Call, SyncTransport, resolve_endpoint
from .errors import BindingNotFound, WrongEnv
from .kv import KVNamespace, KVNamespaceSync
from .objects import R2Bucket, R2BucketSync
from .proto import bindings_pb2, vars_pb2
from .queue import Queue, QueueSync
from .sql import D1Database, D1DatabaseSync
from .types import BindingInfo

__all__ = ["Env", "SyncEnv", "UnsupportedBinding", "connect", "connect_sync"]

_VALUE_TYPES = ("var", "secret")
ENV_VARIABLE = "BINDINGD_ENV"


def _wanted_env(env: str | None) -> tuple[str, str] | None:
    """The env the caller asked for and where it said so: the argument, else ``BINDINGD_ENV``;
    None when it did not ask (any env will do)."""
    if env:
        return env, "connect(env=...)"
    from_variable = os.environ.get(ENV_VARIABLE, "").strip()
    return (from_variable, ENV_VARIABLE) if from_variable else None


class UnsupportedBinding:
    """Stands for a binding type this client version cannot drive yet; any use raises."""

    __slots__ = ("_binding", "_type")

    def __init__(self, binding: str, type: str) -> None:
        self._binding = binding
        self._type = type

    def _fail(self) -> NoReturn:
        raise NotImplementedError(
            f'binding "{self._binding}": the Python client of this version does not support '
            f"{self._type} bindings yet"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self._fail()

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def __repr__(self) -> str:
        return f"<UnsupportedBinding {self._binding} ({self._type})>"


def _list_call() -> Call[bindings_pb2.ListBindingsResponse]:
    return Call("Bindings.List", bindings_pb2.ListBindingsRequest(), lambda r: r)


def _vars_call() -> Call[dict[str, str]]:
    return Call("Vars.GetAll", vars_pb2.VarGetAllRequest(), lambda r: dict(r.values))


def _info(message: bindings_pb2.BindingInfo) -> BindingInfo:
    return BindingInfo(
        name=message.name,
        type=message.type,
        env=message.env,
        backend=message.backend,
        backend_kind=message.backend_kind,
        access=message.access,
        health=message.health,
        health_detail=message.health_detail,
    )


class _EnvBase:
    """What the async and sync envs share: attribute access, ``[]``, ``dir``, ``in``, repr."""

    # The class serving each binding type, built as `cls(transport, binding_name)`.
    _binding_classes: dict[str, Callable[[Any, str], Any]]

    def __init__(self, transport: Any, wanted_env: tuple[str, str] | None = None) -> None:
        self._transport = transport
        self._wanted_env = wanted_env
        self._env_name = ""
        self._writes_refused = False
        self._bindings: dict[str, BindingInfo] = {}
        self._values: dict[str, Any] = {}

    def _apply(self, listing: bindings_pb2.ListBindingsResponse, values: dict[str, Any]) -> None:
        """Rebuild the binding objects, keeping those whose type did not change (identity stays)."""
        if self._wanted_env is not None and listing.env != self._wanted_env[0]:
            # Talking to dev while staging was asked for would read and write the wrong data.
            wanted, asked_by = self._wanted_env
            raise WrongEnv(
                f'the bindingd daemon at {self._transport.target} serves env "{listing.env}", not '
                f'"{wanted}" (asked for by {asked_by}); start one for it (bindingd serve --env {wanted}, '
                f"or bindingd run --env {wanted} -- ...) and point {ENDPOINT_VARIABLE} at it, or ask for "
                f'"{listing.env}"',
                env=listing.env,
            )
        old_bindings, old_values = self._bindings, self._values
        self._env_name = listing.env
        self._writes_refused = listing.writes_refused
        self._bindings = {b.name: _info(b) for b in sorted(listing.bindings, key=lambda b: b.name)}
        built: dict[str, Any] = {}
        for name, info in self._bindings.items():
            if info.type in _VALUE_TYPES:
                built[name] = values.get(name)
            elif name in old_values and old_bindings[name].type == info.type:
                built[name] = old_values[name]
            elif info.type in self._binding_classes:
                built[name] = self._binding_classes[info.type](self._transport, name)
            else:
                built[name] = UnsupportedBinding(name, info.type)
        self._values = built

    @property
    def env_name(self) -> str:
        """The env the daemon serves (e.g. "dev"); a binding named ``env_name`` is ``env["env_name"]``."""
        return self._env_name

    def _not_found(self, name: str) -> BindingNotFound:
        defined = ", ".join(self._bindings) or "none"
        return BindingNotFound(
            f'binding "{name}" is not defined in env "{self._env_name}" (defined: {defined})',
            binding=name,
            env=self._env_name or None,
        )

    def __getitem__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is None or name not in values:
            raise self._not_found(name)
        return values[name]

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; dunders (copy, pickle, inspect probes) stay plain.
        if name.startswith("__") or "_values" not in self.__dict__:
            raise AttributeError(name)
        return self[name]

    def __contains__(self, name: object) -> bool:
        return name in self._bindings

    def __iter__(self) -> Iterator[str]:
        return iter(self._bindings)

    def __len__(self) -> int:
        return len(self._bindings)

    def __dir__(self) -> list[str]:
        return sorted(set(self._bindings) | set(super().__dir__()))

    def __repr__(self) -> str:
        # Types only: a secret's value must never end up in a log line.
        bindings = ", ".join(f"{n} ({b.type})" for n, b in self._bindings.items())
        return f'<{type(self).__name__} "{self._env_name}" at {self._transport.target}: {bindings}>'


class Env(_EnvBase):
    """The env for asyncio code, from ``await connect()``."""

    _binding_classes = {"kv": KVNamespace, "objects": R2Bucket, "sql": D1Database, "queue": Queue}
    _transport: AsyncTransport

    async def refresh(self) -> None:
        """Re-read the bindings and var values, e.g. after the daemon reloaded its config (SIGHUP)."""
        listing = await self._transport.call(_list_call())
        values: dict[str, Any] = await self._transport.call(_vars_call())
        self._apply(listing, values)

    async def aclose(self) -> None:
        """Close the channel; bindings taken from this env stop working."""
        await self._transport.close()

    async def __aenter__(self) -> Env:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncEnv(_EnvBase):
    """The env for blocking code, from ``connect_sync()``."""

    _binding_classes = {
        "kv": KVNamespaceSync,
        "objects": R2BucketSync,
        "sql": D1DatabaseSync,
        "queue": QueueSync,
    }
    _transport: SyncTransport

    def refresh(self) -> None:
        """Re-read the bindings and var values, e.g. after the daemon reloaded its config (SIGHUP)."""
        listing = self._transport.call(_list_call())
        values: dict[str, Any] = self._transport.call(_vars_call())
        self._apply(listing, values)

    def close(self) -> None:
        """Close the channel; bindings taken from this env stop working."""
        self._transport.close()

    def __enter__(self) -> SyncEnv:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Connecting(Coroutine[Any, Any, "Env"]):
    """What ``connect()`` returns: await it (``env = await connect()``), hand it to
    ``asyncio.run()`` / ``create_task()`` like any coroutine, or use it as
    ``async with connect() as env:``, which closes the channel on exit.

    The connecting coroutine is made on first use, so an ``async with`` (which never awaits this
    object) leaves no never-awaited coroutine behind."""

    __slots__ = ("_coro", "_env", "_factory")

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, Env]]) -> None:
        self._factory = factory
        self._coro: Coroutine[Any, Any, Env] | None = None
        self._env: Env | None = None

    def _coroutine(self) -> Coroutine[Any, Any, Env]:
        if self._coro is None:
            self._coro = self._factory()
        return self._coro

    def __await__(self) -> Generator[Any, None, Env]:
        return self._coroutine().__await__()

    def send(self, value: Any) -> Any:
        return self._coroutine().send(value)

    def throw(self, *args: Any) -> Any:
        return self._coroutine().throw(*args)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def __getattr__(self, name: str) -> NoReturn:
        # The common slip: `env = connect()` without await, then `env.CACHE`.
        raise AttributeError(
            f"{name!r}: connect() must be awaited (env = await connect()); blocking code uses connect_sync()"
        )

    async def __aenter__(self) -> Env:
        self._env = await self._factory()
        return self._env

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._env is not None:
            await self._env.aclose()


async def _connect(endpoint: str | None, token: str | None, env_name: str | None) -> Env:
    wanted = _wanted_env(env_name)
    target, tok = resolve_endpoint(endpoint, token)
    transport = AsyncTransport(target, tok)
    env = Env(transport, wanted)
    try:
        await env.refresh()
    except BaseException:
        await transport.close()
        raise
    return env


def connect(endpoint: str | None = None, token: str | None = None, *, env: str | None = None) -> _Connecting:
    """Connect to the daemon and read its bindings: ``env = await connect()``.

    ``endpoint`` / ``token`` default to ``BINDINGD_ENDPOINT`` / ``BINDINGD_TOKEN``, then to the
    ``.bindingd/endpoint`` file the daemon writes beside its config (searched upwards from the
    working directory to the project's root). Raises DaemonUnavailable when there is no daemon to
    talk to, and its subclass WrongEnv when ``env`` (default ``BINDINGD_ENV``) is given and the
    daemon serves another env.
    """
    return _Connecting(lambda: _connect(endpoint, token, env))


def connect_sync(endpoint: str | None = None, token: str | None = None, *, env: str | None = None) -> SyncEnv:
    """Blocking twin of :func:`connect`, for scripts and sync frameworks."""
    wanted = _wanted_env(env)
    target, tok = resolve_endpoint(endpoint, token)
    transport = SyncTransport(target, tok)
    env_ = SyncEnv(transport, wanted)
    try:
        env_.refresh()
    except BaseException:
        transport.close()
        raise
    return env_
