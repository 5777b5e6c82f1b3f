"""The client of a postgres connection entry: its asyncpg pools, shared by its bindings.

One pool per access mode and statement timeout in use (`Pools.get`), each opened on first use:
the limits of a call live in the session (see `bindingd.providers.postgres.sql`). Also what
every provider on postgres needs: the mapping of asyncpg's errors to the error table, and the
session reset a connection gets before the pool hands it to another call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import asyncpg
import structlog

from bindingd.config.model import Connection
from bindingd.config.urls import connection_address
from bindingd.domain.sql import sql_error
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable, permission_denied
from bindingd.providers.connections import OpenedCount, PoolFigures

log = structlog.get_logger("bindingd.postgres")

# Beyond the server-side statement timeout, how long the daemon waits for an answer at all.
CLIENT_GRACE_S = 5.0
# A connection that is gone, or a server that is not there (yet): nothing ran.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def reset_query(conn: asyncpg.Connection) -> str:
    """asyncpg's session reset, and `DISCARD SEQUENCES`: `lastval()` then tells only what the
    next call's own INSERT drew from a sequence (its meta.last_row_id), never an earlier call's."""
    return f"{conn.get_reset_query()}\nDISCARD SEQUENCES;"


def map_error(e: BaseException, connection: Connection) -> BindingdError:
    """An asyncpg failure as the error table's reason; never the DSN, which may hold a password."""
    if isinstance(e, BindingdError):
        return e
    name, where = connection.name, connection_address(connection)
    if isinstance(
        e,
        asyncpg.exceptions.InvalidPasswordError | asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    ):
        return BindingdError(
            Reason.AUTH_FAILED, f'authentication failed for connection "{name}": {e.args[0] if e.args else e}'
        )
    if isinstance(e, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return permission_denied(f"PostgreSQL refused the write: {e}")
    if isinstance(e, asyncpg.exceptions.QueryCanceledError):
        return backend_timeout(f"PostgreSQL cancelled the statement: {e}")
    if isinstance(e, asyncpg.exceptions.InvalidCatalogNameError):
        return backend_unavailable(f'connection "{name}" ({where}): {e}')
    if isinstance(e, TimeoutError):
        return backend_timeout(f'PostgreSQL at {where} did not answer in time (connection "{name}")')
    if isinstance(e, CONNECTION_ERRORS):
        return backend_unavailable(
            f'cannot reach PostgreSQL at {where} (connection "{name}"): {e or type(e).__name__}'
        )
    if isinstance(e, asyncpg.exceptions.PostgresError | asyncpg.exceptions.InterfaceError):
        return sql_error(str(e))
    return backend_unavailable(f'PostgreSQL failed (connection "{name}"): {type(e).__name__}: {e}')


class Pool:
    """An asyncpg pool whose sessions carry one access mode and statement timeout, created
    without touching the server (min size 0) and warmed up to min_size in the background."""

    def __init__(self, connection: Connection, read_only: bool, timeout_ms: int) -> None:
        options = connection.options
        self.name = connection.name
        self.read_only = read_only
        self.warned = False
        self.min_size = int(options.get("min_size") or 0)
        max_size = int(options.get("max_size") or 10)
        # Server pids of connections whose COMMIT carried the session reset already.
        self.reset_done: set[int] = set()
        self.pool = asyncpg.create_pool(
            str(options["dsn"]),
            min_size=0,
            max_size=max(max_size, self.min_size, 1),
            reset=self._reset,
            init=self._init,
            # Startup settings: what `RESET ALL` returns to after a call SET something else.
            server_settings={
                "statement_timeout": str(timeout_ms),
                "default_transaction_read_only": "on" if read_only else "off",
            },
        )
        self._ready: asyncio.Task[Any] | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        self.opened = OpenedCount()

    async def _reset(self, conn: asyncpg.Connection) -> None:
        """The pool's reset on release (an open transaction is already rolled back by then):
        skipped when the call's COMMIT carried it."""
        pid = conn.get_server_pid()
        if pid in self.reset_done:
            self.reset_done.discard(pid)
            return
        await conn.execute(reset_query(conn))

    async def _init(self, conn: asyncpg.Connection) -> None:
        """A new connection: a read-only pool warns once when it logs in as a superuser, whom
        no read-only transaction stops from writing files (COPY ... TO, lo_export) or running
        programs on the server (COPY ... TO PROGRAM)."""
        self.opened.opened_one(self.pool.get_size())
        if self.read_only and not self.warned and conn.get_settings().is_superuser == "on":
            self.warned = True
            log.warning(
                "postgres read-only calls log in as a superuser: a read-only transaction does not"
                " stop a superuser's server-side file writes or programs; give the connection a"
                " role that is not a superuser",
                connection=self.name,
            )

    def release_later(self, conn: asyncpg.Connection, end: str | None = None) -> None:
        """Give a connection back once its session reset is done, without waiting for it: the
        call's answer does not depend on it (a failed reset drops the connection). `end` (COMMIT
        or ROLLBACK) closes a read-only transaction in the same round trip as the reset."""
        self.in_background(self._release_quietly(conn, end))

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` on a connection (its release, or a cancelled call's drop) without a caller
        waiting on it; close() waits for what is still running."""
        task = asyncio.get_running_loop().create_task(work)
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def release_clean(self, conn: asyncpg.Connection) -> None:
        """Give back a connection whose session the caller did not change (only its own fixed
        statements ran, none left open): no session reset, no round trip."""
        self.reset_done.add(conn.get_server_pid())
        self.release_later(conn)

    async def _release_quietly(self, conn: asyncpg.Connection, end: str | None = None) -> None:
        try:
            if end is not None:
                await conn.execute(f"{end};\n{reset_query(conn)}", timeout=CLIENT_GRACE_S)
                self.reset_done.add(conn.get_server_pid())
            await self.pool.release(conn, timeout=CLIENT_GRACE_S)
        except Exception as e:  # the connection is terminated; the pool opens another
            with contextlib.suppress(asyncpg.InterfaceError):  # released by the failed release
                conn.terminate()
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
            log.debug("postgres session reset failed", error=type(e).__name__)

    async def open(self) -> Pool:
        await self.pool  # min_size=0: no connection is made here
        if self.min_size:
            self._ready = asyncio.get_running_loop().create_task(self._warm())
        return self

    async def _warm(self) -> None:
        with contextlib.suppress(Exception):
            conns = [await self.pool.acquire() for _ in range(self.min_size)]
            for conn in conns:
                await self.pool.release(conn)

    async def close(self) -> None:
        if self._ready is not None:
            self._ready.cancel()
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=CLIENT_GRACE_S)
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except (TimeoutError, Exception):
            self.pool.terminate()


class Pools:
    """The pools of one connection entry, one per access mode and statement timeout in use (so
    max_size holds per pool), each opened on first use."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._pools: dict[tuple[bool, int], asyncio.Task[Pool]] = {}
        self._open: dict[tuple[bool, int], Pool] = {}

    async def get(self, read_only: bool, timeout_ms: int) -> Pool:
        key = (read_only, timeout_ms)
        pool = self._open.get(key)
        if pool is not None:
            return pool
        opening = self._pools.get(key)
        if opening is None:
            opening = asyncio.get_running_loop().create_task(
                Pool(self.connection, read_only, timeout_ms).open()
            )
            self._pools[key] = opening
        pool = self._open[key] = await opening
        return pool

    def figures(self) -> PoolFigures:
        pools = list(self._open.values())
        sizes = [p.pool.get_size() for p in pools]
        return PoolFigures(
            size=sum(sizes),
            in_use=sum(size - p.pool.get_idle_size() for p, size in zip(pools, sizes, strict=True)),
            reconnects=sum(p.opened.reconnects(size) for p, size in zip(pools, sizes, strict=True)),
        )

    async def close(self) -> None:
        pools, self._pools, self._open = list(self._pools.values()), {}, {}
        for opening in pools:
            with contextlib.suppress(Exception):
                await (await opening).close()


async def open_client(connection: Connection) -> Pools:
    """The entry's pools; none is opened, nor the server contacted, until a call needs one."""
    return Pools(connection)


def pool_figures(pools: Pools) -> PoolFigures:
    return pools.figures()


async def close_client(pools: Pools) -> None:
    await pools.close()
