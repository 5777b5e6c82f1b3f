"""Backend clients shared per connection entry: one pool for every binding that uses it.

Several bindings may name the same connection (`CACHE` and `SESSIONS` on one Redis, two buckets
on one S3 endpoint). They share one client (a connection pool, an S3 client), opened when the
first of them starts and closed when the last of them closes. A reload that keeps the
connection entry unchanged therefore keeps its pool, even for bindings that changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bindingd.config.model import Connection

T = TypeVar("T")


def connection_key(connection: Connection) -> tuple[Any, ...]:
    """What makes two connection entries the same: name, kind and every option."""
    return (connection.name, connection.kind, tuple(sorted(connection.options.items())))


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

    async def acquire(
        self,
        connection: Connection,
        open: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
    ) -> T:
        """The connection's client, opened with `open` if no binding holds it yet.

        `open` must not wait on the backend (a pool that connects lazily): readiness never does.
        Every acquire is paired with one `release` when the provider closes.
        """
        key = connection_key(connection)
        async with self._lock:
            shared = self._clients.get(key)
            if shared is None:
                shared = _Shared(await open(), close)
                self._clients[key] = shared
            shared.users += 1
            return shared.client  # type: ignore[no-any-return]

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


@dataclass(frozen=True)
class ProviderContext:
    """What a provider gets from the daemon besides its binding."""

    # `.bindingd/state` of the project: where local providers keep their data.
    state_dir: Path
    connections: SharedConnections
