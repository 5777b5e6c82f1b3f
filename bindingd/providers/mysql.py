"""D1 on MySQL / MariaDB through an aiomysql pool, one pool per connection entry.

Each call is one transaction. Refused writes run with the session's access mode set to READ
ONLY, which the server enforces for DDL too (a `START TRANSACTION READ ONLY` alone would let a
DDL statement commit implicitly and run). A statement that outlives the binding's timeout, or
whose call is cancelled, is stopped on the server with `KILL QUERY` from a second connection,
which works on MySQL and MariaDB alike. Rows stream with an unbuffered cursor, page by page.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomysql
import pymysql
import structlog

from bindingd.config.model import Binding, Connection
from bindingd.config.urls import UNKNOWN_ADDRESS, address
from bindingd.errors import (
    BindingdError,
    Reason,
    backend_timeout,
    backend_unavailable,
    permission_denied,
)
from bindingd.providers.base import SqlAccess, SqlMeta, SqlResult, SqlStatement
from bindingd.providers.connections import ProviderContext
from bindingd.sql import PAGE_ROWS, StopReading, batch_error, normalize, sql_error, translate

log = structlog.get_logger("bindingd.mysql")
T = TypeVar("T")

BEGIN_TRIES = 4
BEGIN_RETRY_DELAY_S = 0.5
CONNECT_TIMEOUT_S = 10.0
AUTH_CODES = frozenset({1044, 1045, 1698, 1251})
UNAVAILABLE_CODES = frozenset({1040, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055})
TIMEOUT_CODES = frozenset({1205, 1317, 1969, 3024})
READ_ONLY_CODES = frozenset({1792, 1290})
IN_TRANSACTION = 0x0001  # SERVER_STATUS_IN_TRANS
COM_RESET_CONNECTION = 0x1F  # MySQL 5.7.3+, MariaDB 10.2.4+; PyMySQL has no name for it


def connect_options(connection: Connection) -> dict[str, Any]:
    """aiomysql.connect keywords from a `mysql://user:password@host:port/db?opt=v` DSN."""
    parts = urlsplit(str(connection.options["dsn"]))
    options: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "db": unquote(parts.path.lstrip("/")) or None,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    for key, value in parse_qsl(parts.query):
        if key in ("charset", "unix_socket"):
            options[key] = value
    return options


def _where(connection: Connection) -> str:
    """host:port/db of a DSN, for messages: never the user or the password."""
    dsn = str(connection.options["dsn"])
    where = address("mysql", dsn, "localhost", 3306)
    return where if where == UNKNOWN_ADDRESS else f"{where}{urlsplit(dsn).path or '/'}"


def map_error(e: BaseException, connection: Connection) -> BindingdError:
    name = connection.name
    if isinstance(e, BindingdError):
        return e
    code = e.args[0] if isinstance(e, pymysql.err.MySQLError) and e.args else None
    message = e.args[1] if isinstance(e, pymysql.err.MySQLError) and len(e.args) > 1 else str(e)
    if code in AUTH_CODES:
        return BindingdError(Reason.AUTH_FAILED, f'authentication failed for connection "{name}": {message}')
    if code in READ_ONLY_CODES:
        return permission_denied(f"MySQL refused the write: {message}")
    if code in TIMEOUT_CODES:
        return backend_timeout(f"MySQL stopped the statement: {message}")
    if isinstance(e, TimeoutError):
        return backend_timeout(f'MySQL at {_where(connection)} did not answer in time (connection "{name}")')
    if code in UNAVAILABLE_CODES or isinstance(e, OSError | pymysql.err.InterfaceError):
        return backend_unavailable(
            f'cannot reach MySQL at {_where(connection)} (connection "{name}"): {message or type(e).__name__}'
        )
    if isinstance(e, pymysql.err.MySQLError):
        return sql_error(f"({code}) {message}" if code else message)
    return backend_unavailable(f'MySQL failed (connection "{name}"): {type(e).__name__}: {e}')


def render(conn: aiomysql.Connection, sql: str, params: list[Any]) -> str:
    """The statement with its values escaped in, as the driver would do it (`sql` comes from
    `translate`, `%s` per value and `%%` for `%`). Blobs are written as hex literals: the driver's
    own bytes escaping does not work with current PyMySQL."""
    values = tuple(f"X'{v.hex()}'" if isinstance(v, bytes) else conn.escape(v) for v in params)
    return sql % values


def _is_connection_error(e: BaseException) -> bool:
    if isinstance(e, OSError | pymysql.err.InterfaceError):
        return True
    return isinstance(e, pymysql.err.MySQLError) and bool(e.args) and e.args[0] in UNAVAILABLE_CODES


async def _reset_session(conn: aiomysql.Connection) -> None:
    """Clear what a call left on its session (user variables, SETs, temporary tables, locks)
    before the pool hands the connection to another call; aiomysql's pool does not."""
    if conn.closed:
        return
    try:
        await conn._execute_command(COM_RESET_CONNECTION, b"")
        await conn._read_ok_packet()
    except Exception:
        conn.close()


class _Killed(Exception):
    """The statement outlived its timeout and was stopped with KILL QUERY."""


class MySQLDatabase:
    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.connection = binding.connection
        self.context = context
        self._pool: aiomysql.Pool | None = None

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> MySQLDatabase:
        return cls(binding, context)

    async def start(self) -> None:
        options = self.connection.options
        max_size = int(options.get("max_size") or 10)

        async def open_pool() -> aiomysql.Pool:
            # minsize=0: creating the pool connects to nothing; connections open on demand.
            return await aiomysql.create_pool(
                minsize=0, maxsize=max(max_size, 1), **connect_options(self.connection)
            )

        async def close_pool(pool: aiomysql.Pool) -> None:
            pool.close()
            try:
                await asyncio.wait_for(pool.wait_closed(), 10)
            except TimeoutError:
                pool.terminate()

        self._pool = await self.context.connections.acquire(self.connection, open_pool, close_pool)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool = None
            await self.context.connections.release(self.connection)

    async def check(self) -> str:
        # One try: a probe reports the backend as it is now.
        async with self._transaction(SqlAccess(read_only=True, timeout=5.0), tries=1) as conn:
            version = conn.get_server_info()
        return f"mysql {version} at {_where(self.connection)}"

    async def _kill(self, thread_id: int) -> None:
        """KILL QUERY from a connection of its own: the pool may be exhausted."""
        try:
            killer = await aiomysql.connect(**connect_options(self.connection))
        except Exception as e:
            log.warning("cannot connect to stop a statement", error=str(e), thread_id=thread_id)
            return
        try:
            async with killer.cursor() as cursor:
                await cursor.execute(f"KILL QUERY {int(thread_id)}")
        except Exception as e:
            log.warning("KILL QUERY failed", error=str(e), thread_id=thread_id)
        finally:
            killer.close()

    async def _bounded(self, conn: aiomysql.Connection, work: Awaitable[T], timeout: float) -> T:
        """Await `work` (a statement on `conn`); past `timeout`, or when cancelled, stop the
        statement on the server."""
        thread_id = conn.thread_id()
        loop = asyncio.get_running_loop()
        killed: list[asyncio.Task[None]] = []
        timer = loop.call_later(timeout, lambda: killed.append(loop.create_task(self._kill(thread_id))))
        try:
            result = await work
        except asyncio.CancelledError:
            timer.cancel()
            await asyncio.shield(self._kill(thread_id))
            conn.close()  # the protocol was cut mid-answer
            raise
        except pymysql.err.MySQLError as e:
            if killed:
                await killed[0]
                raise _Killed() from e
            raise
        finally:
            timer.cancel()
        if killed:  # SLEEP() and a few others answer normally when killed
            await killed[0]
            raise _Killed()
        return result

    @contextlib.asynccontextmanager
    async def _transaction(
        self, access: SqlAccess, tries: int = BEGIN_TRIES
    ) -> AsyncIterator[aiomysql.Connection]:
        assert self._pool is not None, "provider not started"
        pool = self._pool
        mode = "READ ONLY" if access.read_only else "READ WRITE"
        conn: aiomysql.Connection | None = None
        for attempt in range(tries):
            try:
                conn = await asyncio.wait_for(pool.acquire(), access.timeout + CONNECT_TIMEOUT_S)
                async with conn.cursor() as cursor:
                    # The session's mode, so DDL (which commits implicitly) is refused too.
                    await cursor.execute(f"SET SESSION TRANSACTION {mode}")
                    await cursor.execute("START TRANSACTION")
                break
            except Exception as e:
                if conn is not None:
                    conn.close()
                    pool.release(conn)
                    conn = None
                if not _is_connection_error(e) or isinstance(e, TimeoutError) or attempt == tries - 1:
                    raise map_error(e, self.connection) from e
                await asyncio.sleep(BEGIN_RETRY_DELAY_S * (attempt + 1))
        assert conn is not None
        try:
            yield conn
        except BaseException as e:
            try:
                if not conn.closed:
                    await asyncio.shield(conn.rollback())
            except BaseException:
                conn.close()
            finally:
                await asyncio.shield(_reset_session(conn))
                pool.release(conn)
            if isinstance(e, StopReading):
                raise
            if isinstance(e, _Killed):
                raise backend_timeout(
                    f"MySQL did not answer within {access.timeout:g}s; the statement was stopped (KILL QUERY)"
                ) from e
            if isinstance(e, Exception):
                raise map_error(e, self.connection) from e
            raise
        try:
            await conn.commit()
        except Exception as e:
            conn.close()
            raise map_error(e, self.connection) from e
        finally:
            await asyncio.shield(_reset_session(conn))
            pool.release(conn)

    @staticmethod
    async def _keep_transaction(conn: aiomysql.Connection, access: SqlAccess) -> None:
        """DDL commits implicitly on MySQL (the README says so): the statements after it run in
        a new transaction. In a read-only call the session's mode is set again after every
        statement, so one that set it READ WRITE cannot open the way for the next."""
        async with conn.cursor() as cursor:
            if access.read_only:
                await cursor.execute("SET SESSION TRANSACTION READ ONLY")
            if not conn.server_status & IN_TRANSACTION:
                await cursor.execute("START TRANSACTION")

    async def query(self, statement: SqlStatement, access: SqlAccess) -> AsyncIterator[object]:
        sql, params = translate(statement.sql, "mysql", statement.params)
        started = time.perf_counter()
        async with self._transaction(access) as conn:
            cursor = await conn.cursor(aiomysql.SSCursor)
            try:
                await self._bounded(conn, cursor.execute(render(conn, sql, params)), access.timeout)
                columns = [d[0] for d in cursor.description] if cursor.description else []
                read = 0
                if not columns:
                    meta = self._meta(cursor, 0, started)
                    yield columns
                else:
                    yield columns
                    stopped = False
                    while True:
                        rows = await self._bounded(conn, cursor.fetchmany(PAGE_ROWS), access.timeout)
                        read += len(rows)
                        if rows and not stopped:
                            try:
                                yield [tuple(normalize(v) for v in row) for row in rows]
                            except StopReading:
                                if access.read_only:
                                    raise  # nothing to keep: stopped below like an abandoned read
                                # The statement must end for its writes to commit: the rest
                                # of its rows are read and dropped.
                                stopped = True
                        if len(rows) < PAGE_ROWS:
                            break
                    meta = self._meta(cursor, read, started)
            except (GeneratorExit, StopReading):
                # Abandoned mid-stream: the unbuffered result would have to be read to its end.
                await asyncio.shield(self._kill(conn.thread_id()))
                conn.close()
                raise
            finally:
                if not conn.closed:
                    with contextlib.suppress(Exception):
                        await cursor.close()
        yield meta

    @staticmethod
    def _meta(cursor: Any, read: int, started: float) -> SqlMeta:
        changes = max(cursor.rowcount, 0) if not cursor.description else 0
        return SqlMeta(
            duration=(time.perf_counter() - started) * 1000,
            changes=changes,
            last_row_id=cursor.lastrowid or 0,
            changed_db=changes > 0,
            rows_read=read,
            rows_written=changes,
        )

    async def batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        translated = []
        for index, statement in enumerate(statements):
            try:
                translated.append(translate(statement.sql, "mysql", statement.params))
            except BindingdError as e:
                raise batch_error(index, e) from e
        results: list[SqlResult] = []
        async with self._transaction(access) as conn:
            for index, (sql, params) in enumerate(translated):
                started = time.perf_counter()
                try:
                    async with conn.cursor() as cursor:
                        await self._bounded(conn, cursor.execute(render(conn, sql, params)), access.timeout)
                        columns = [d[0] for d in cursor.description] if cursor.description else []
                        rows = list(await cursor.fetchall()) if columns else []
                        meta = self._meta(cursor, len(rows), started)
                    await self._keep_transaction(conn, access)
                except _Killed:
                    raise
                except Exception as e:
                    raise batch_error(index, map_error(e, self.connection)) from e
                results.append(SqlResult(columns, [tuple(normalize(v) for v in r) for r in rows], meta))
        return results

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        async with self._transaction(access) as conn:
            for index, sql in enumerate(statements):
                try:
                    async with conn.cursor() as cursor:
                        await self._bounded(conn, cursor.execute(sql), access.timeout)
                    await self._keep_transaction(conn, access)
                except _Killed:
                    raise
                except Exception as e:
                    raise batch_error(index, map_error(e, self.connection)) from e
