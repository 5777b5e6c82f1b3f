"""Backend clients shared per connection entry: one client for every binding that uses it.

Several bindings may name the same connection (`CACHE` and `SESSIONS` on one Redis, two buckets
on one S3 endpoint, and, for a kind that serves several binding types, a KV and a SQL binding on
one PostgreSQL). They share one client (a connection pool, an S3 client), opened by the kind's
client module (named in `bindingd.registry`) when the first of them starts, and closed when the
last of them closes. The client belongs to the connection entry, not to a provider: every
provider of the entry gets the same object, whatever its binding type. A reload that keeps the
connection entry unchanged therefore keeps its pool, even for bindings that changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bindingd import registry
from bindingd.config.model import Connection

T = TypeVar("T")


def connection_key(connection: Connection) -> tuple[Any, ...]:
    """What makes two connection entries the same: name, kind and every option."""
    return (connection.name, connection.kind, tuple(sorted(connection.options.items())))


@dataclass(frozen=True)
class PoolFigures:
    """What a connection entry's client tells about its connections, for /metrics: a kind's
    client module may define `pool_figures(client) -> PoolFigures`.

    `reconnects`: connections opened to replace one that was lost or closed (None when the
    client cannot tell)."""

    size: int
    in_use: int
    reconnects: int | None = None


class OpenedCount:
    """Counts the connections a pool opens; those beyond the most it has held at once replaced
    one that was lost or closed: its reconnects."""

    def __init__(self) -> None:
        self.opened = 0
        self.peak = 0

    def opened_one(self, size_now: int) -> None:
        self.opened += 1
        self.peak = max(self.peak, size_now)

    def reconnects(self, size_now: int) -> int:
        self.peak = max(self.peak, size_now)
        return max(0, self.opened - self.peak)


@dataclass
class _Shared:
    client: Any
    close: Callable[[Any], Awaitable[None]]
    users: int = 0


class SharedConnections:
    """Reference-counted clients, keyed by connection entry."""

    def __init__(self) -> None:
        self._clients: dict[tuple[Any, ...], _Shared] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, connection: Connection, client_type: type[T]) -> T:
        """The connection's client, opened by its kind's `open_client` if no provider holds it yet.

        `client_type` is what the caller expects the kind's client to be; anything else is a
        TypeError, never a client of another shape handed over quietly. Every acquire is paired
        with one `release` when the provider closes.
        """
        key = connection_key(connection)
        async with self._lock:
            shared = self._clients.get(key)
            if shared is None:
                module = registry.client_module(connection.kind)
                # open_client must not wait on the backend (a pool that connects lazily):
                # readiness never does.
                shared = _Shared(await module.open_client(connection), module.close_client)
                self._clients[key] = shared
            if not isinstance(shared.client, client_type):
                raise TypeError(
                    f'the client of {connection.kind} connection "{connection.name}" is a '
                    f"{type(shared.client).__name__}, not the {client_type.__name__} its provider expects"
                )
            shared.users += 1
            return shared.client

    async def release(self, connection: Connection) -> None:
        key = connection_key(connection)
        async with self._lock:
            shared = self._clients.get(key)
            if shared is None:
                return
            shared.users -= 1
            if shared.users > 0:
                return
            del self._clients[key]
        await shared.close(shared.client)

    def __len__(self) -> int:
        return len(self._clients)

    def figures(self) -> dict[str, PoolFigures]:
        """Per open connection entry (by name): its pool's figures, where its kind tells them."""
        out: dict[str, PoolFigures] = {}
        for (name, kind, _), shared in list(self._clients.items()):
            tell = getattr(registry.client_module(kind), "pool_figures", None)
            if tell is not None:
                out[name] = tell(shared.client)
        return out


@dataclass(frozen=True)
class ProviderContext:
    """What a provider gets from the daemon besides its binding."""

    # `.bindingd/state` of the project: where local providers keep their data.
    state_dir: Path
    connections: SharedConnections
