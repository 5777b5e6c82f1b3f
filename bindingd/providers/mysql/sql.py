"""SQL on MySQL / MariaDB through a small pool of aiomysql connections, one pool per connection entry.

Each call is one transaction, and each round trip carries one statement: the connections are
opened without the driver's default CLIENT_MULTI_STATEMENTS, so `SELECT 1; COMMIT; INSERT ...`
is a syntax error on the server rather than three statements. Refused writes run with the
session's access mode set to READ ONLY, which the server enforces for DDL too. That is not
enough on MySQL: a procedure can COMMIT and go on writing, and `SELECT ... INTO OUTFILE` writes a
file inside a read-only transaction. So a call whose writes are refused sends only queries
(`read_only_refusal`), and checks after each statement that its read-only transaction is still
open.

A statement that outlives the binding's timeout, or whose call is cancelled, is stopped on the
server with `KILL QUERY` from a second connection, in the background and itself bounded; its own
connection is dropped, and if the server does not answer the kill within a grace period (a
frozen network) the call ends anyway. Every other wait on the network is bounded too. Rows
stream with an unbuffered cursor, page by page.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiomysql
import structlog

from bindingd.config.model import Binding
from bindingd.config.urls import connection_address
from bindingd.domain.sql import (
    PAGE_ROWS,
    Page,
    SqlAccess,
    SqlCursor,
    SqlMeta,
    SqlResult,
    SqlStatement,
    batch_error,
    normalize,
    tokens,
    translate,
)
from bindingd.errors import (
    BindingdError,
    backend_timeout,
    backend_unavailable,
    permission_denied,
)
from bindingd.providers.connections import OpenedCount, PoolFigures, ProviderContext
from bindingd.providers.mysql import driver
from bindingd.providers.mysql.client import CONNECT_TIMEOUT_S, connect_options, is_connection_error, map_error
from bindingd.providers.sql_cursor import PageCursor

log = structlog.get_logger("bindingd.mysql")
T = TypeVar("T")

BEGIN_TRIES = 4
BEGIN_RETRY_DELAY_S = 0.5
IN_TRANSACTION = 0x0001  # SERVER_STATUS_IN_TRANS
IN_READ_ONLY_TRANSACTION = 0x2000  # SERVER_STATUS_IN_TRANS_READONLY (MySQL 5.7+, MariaDB 10.x)
# How long past its timeout a statement may take to answer its KILL QUERY (and a rollback or a
# session reset may take) before its connection is dropped: a frozen network never answers.
GRACE_S = 1.0
# The KILL QUERY's own connection and statement; it runs in the background.
KILL_TIMEOUT_S = 5.0
# What a call whose writes are refused may send: queries. MySQL's read-only transaction does not
# hold against the rest (a procedure that commits, file writes, statements that commit implicitly).
READ_ONLY_STATEMENTS = ("SELECT", "WITH", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC", "EXPLAIN")
_FILE_WRITE = re.compile(r"OUTFILE|DUMPFILE", re.IGNORECASE)
_EXECUTABLE_COMMENT_EDGES = re.compile(r"/\*M?![0-9]*|\*/")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z_][A-Za-z0-9_$]*)\s*([^\s]?)")


def render(conn: aiomysql.Connection, sql: str, params: list[Any]) -> str:
    """The statement with its values escaped in, as the driver would do it (`sql` comes from
    `translate`, `%s` per value and `%%` for `%`). Blobs are written as hex literals: the driver's
    own bytes escaping does not work with current PyMySQL."""
    values = tuple(f"X'{v.hex()}'" if isinstance(v, bytes) else conn.escape(v) for v in params)
    return sql % values


def read_only_refusal(sql: str) -> str | None:
    """Why a call whose writes are refused does not send `sql` (None: it may).

    Only statements that start with a query keyword go; and none that names OUTFILE or DUMPFILE
    anywhere (also in a literal or comment: how the server reads quotes depends on its sql_mode,
    so the raw text is searched; a value bound as a parameter is not part of it). Executable
    comments (`/*! ... */`) are code to the server and are read as code here.
    """
    if _FILE_WRITE.search(sql):
        return "SELECT ... INTO OUTFILE/DUMPFILE writes a file on the server"
    code: list[str] = []
    for token in tokens(sql, "mysql"):
        if token.kind == "quoted" and token.text.startswith(("--", "#", "/*")):
            code.append(" ")
        elif token.kind == "quoted":
            code.append(" ' ")  # a literal or quoted identifier: no statement starts with one
        else:
            code.append(token.text)
    text = _EXECUTABLE_COMMENT_EDGES.sub(" ", "".join(code))
    if not text.strip():
        return None  # nothing to run: the server answers that the query was empty
    match = _FIRST_WORD.match(text)
    word = match.group(1).upper() if match else ""
    # A word followed by `:` is a label (`help: BEGIN NOT ATOMIC ... END`), not a query.
    if match and word in READ_ONLY_STATEMENTS and match.group(2) != ":":
        return None
    shown = word or text.strip()[:20]
    return (
        f"only queries ({', '.join(READ_ONLY_STATEMENTS)}) are sent when writes are refused, "
        f"and this statement starts with {shown!r} (MySQL's read-only transaction does not stop "
        "every write: a procedure may commit)"
    )


def _check_read_only(statements: list[str], access: SqlAccess, *, numbered: bool) -> None:
    if not access.read_only:
        return
    for index, sql in enumerate(statements):
        reason = read_only_refusal(sql)
        if reason is not None:
            err = permission_denied(f"MySQL statement refused: {reason}")
            raise batch_error(index, err) if numbered else err


def _check_still_read_only(conn: _Connection, access: SqlAccess, index: int | None) -> None:
    """A read-only call whose statement ended or changed its read-only transaction runs nothing
    more (it is rolled back): what came after would run outside it."""
    if access.read_only and conn.server_status & conn.read_only_status != conn.read_only_status:
        which = "the statement" if index is None else f"statement {index}"
        raise permission_denied(
            f"{which} left the read-only transaction; nothing after it was run and the call was rolled back"
        )


class _Connection(driver.SingleStatementConnection):
    """A connection that sends one statement per query (driver.SingleStatementConnection)."""

    # The status bits of the read-only transaction that must stay set while a call runs.
    read_only_status: int = IN_TRANSACTION


async def _open(options: dict[str, Any]) -> _Connection:
    conn = _Connection(**options)
    try:
        await driver.connect(conn)
    except BaseException:
        _drop(conn)
        raise
    return conn


def _drop(conn: aiomysql.Connection) -> None:
    """Close at once, without waiting to flush what is unsent (the network may be frozen)."""
    driver.abort(conn)


class _Pool:
    """At most `max_size` connections, opened on demand; a closed connection is not kept.
    (aiomysql's own pool builds its connections itself, with multi-statements on.)"""

    def __init__(self, options: dict[str, Any], max_size: int) -> None:
        self.options = options
        self._slots = asyncio.Semaphore(max_size)
        self._free: list[_Connection] = []
        self._used: set[_Connection] = set()
        self._closing = False
        self.opened = OpenedCount()

    async def acquire(self, slot_wait: float, connect_wait: float, name: str) -> _Connection:
        if self._closing:
            raise backend_unavailable(f'the MySQL pool of connection "{name}" is closing')
        try:
            async with asyncio.timeout(slot_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise backend_timeout(
                f'every pooled MySQL connection of "{name}" stayed busy for {slot_wait:g}s '
                "(raise max_size, or look for slow statements)"
            ) from None
        try:
            while self._free:
                conn = self._free.pop()
                if await driver.still_open(conn, connect_wait):
                    self._used.add(conn)
                    return conn
                _drop(conn)
            conn = await asyncio.wait_for(_open(self.options), connect_wait)
        except BaseException:
            self._slots.release()
            raise
        self._used.add(conn)
        self.opened.opened_one(len(self._used) + len(self._free))
        return conn

    def figures(self) -> PoolFigures:
        size = len(self._used) + len(self._free)
        return PoolFigures(size=size, in_use=len(self._used), reconnects=self.opened.reconnects(size))

    def release(self, conn: _Connection) -> None:
        if conn not in self._used:
            return
        self._used.discard(conn)
        if conn.closed or self._closing:
            _drop(conn)
        else:
            self._free.append(conn)
        self._slots.release()

    async def close(self, wait: float) -> None:
        self._closing = True
        for conn in self._free:
            conn.close()
        self._free.clear()
        deadline = time.monotonic() + wait
        while self._used and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._used):
            _drop(conn)


async def _reset_session(conn: aiomysql.Connection) -> None:
    """Clear what a call left on its session (user variables, SETs, temporary tables, locks)
    before the pool hands the connection to another call; the connection is dropped if the
    server does not answer in time."""
    if conn.closed:
        return
    try:
        await asyncio.wait_for(driver.reset_session(conn), GRACE_S)
    except Exception:
        _drop(conn)


class _Killed(Exception):
    """The statement outlived its timeout and was stopped with KILL QUERY."""


class _Stalled(Exception):
    """The statement outlived its timeout and the server did not answer even its KILL QUERY:
    the connection was dropped."""


class MySQLSql:
    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.connection = binding.connection
        # For messages: never the credentials the DSN holds.
        self.address = connection_address(self.connection)
        self.context = context
        self._pool: _Pool | None = None
        # KILL QUERYs under way: they outlive the call that started them (each is bounded).
        self._kills: set[asyncio.Task[None]] = set()

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> MySQLSql:
        return cls(binding, context)

    async def start(self) -> None:
        self._pool = await self.context.connections.acquire(self.connection, _Pool)

    async def close(self) -> None:
        if self._kills:
            await asyncio.wait(set(self._kills), timeout=KILL_TIMEOUT_S)
        if self._pool is not None:
            self._pool = None
            await self.context.connections.release(self.connection)

    async def check(self) -> str:
        # One try: a probe reports the backend as it is now.
        async with self._transaction(SqlAccess(read_only=True, timeout=5.0), tries=1) as conn:
            version = conn.get_server_info()
        return f"mysql {version} at {self.address}"

    async def _kill(self, thread_id: int) -> None:
        """KILL QUERY from a connection of its own (the pool may be exhausted), bounded: a
        frozen network must not keep it, or the call that started it, waiting."""
        killer: _Connection | None = None

        async def kill() -> None:
            nonlocal killer
            killer = await _open(connect_options(self.connection))
            async with killer.cursor() as cursor:
                await cursor.execute(f"KILL QUERY {int(thread_id)}")

        try:
            await asyncio.wait_for(kill(), KILL_TIMEOUT_S)
        except Exception as e:
            log.warning("KILL QUERY failed", error=str(e) or type(e).__name__, thread_id=thread_id)
        finally:
            if killer is not None:
                _drop(killer)

    def _kill_later(self, conn: aiomysql.Connection) -> None:
        """Stop `conn`'s statement on the server in the background, and drop `conn` now: its
        answer is no longer wanted, and a late KILL QUERY must not hit a later call on it."""
        task = asyncio.get_running_loop().create_task(self._kill(conn.thread_id()))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)
        _drop(conn)

    async def _bounded(self, conn: aiomysql.Connection, work: Awaitable[T], timeout: float) -> T:
        """Await `work` (a statement on `conn`). Past `timeout` the statement is stopped on the
        server and the connection dropped; the call ends once the server has answered, or after
        GRACE_S more if it does not (a frozen network)."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                # KILL QUERY before the connection is dropped: the server learns of a closed
                # connection only when it next writes to it.
                thread_id = conn.thread_id()
                kill = asyncio.get_running_loop().create_task(self._kill(thread_id))
                self._kills.add(kill)
                kill.add_done_callback(self._kills.discard)
                done, _ = await asyncio.wait({task}, timeout=GRACE_S)
                _drop(conn)
                if not done:
                    task.cancel()
                    raise _Stalled()
                if not task.cancelled():
                    task.exception()  # retrieved: the statement's own answer is not wanted
                raise _Killed()
        except asyncio.CancelledError:
            task.cancel()
            if not conn.closed:
                self._kill_later(conn)
            raise
        return task.result()

    @contextlib.asynccontextmanager
    async def _transaction(self, access: SqlAccess, tries: int = BEGIN_TRIES) -> AsyncIterator[_Connection]:
        assert self._pool is not None, "provider not started"
        pool = self._pool
        mode = "READ ONLY" if access.read_only else "READ WRITE"
        # Every wait on the network is bounded by the call's timeout (and a little): a server
        # that stops answering makes the call end as BackendTimeout, not hang.
        wait = access.timeout + GRACE_S
        conn: _Connection | None = None
        for attempt in range(tries):
            try:
                conn = await pool.acquire(access.timeout + CONNECT_TIMEOUT_S, wait, self.connection.name)
                await asyncio.wait_for(self._begin(conn, mode), wait)
                if access.read_only:
                    conn.read_only_status = conn.server_status & (IN_TRANSACTION | IN_READ_ONLY_TRANSACTION)
                break
            except BaseException as e:
                if conn is not None:
                    _drop(conn)
                    pool.release(conn)
                    conn = None
                if isinstance(e, TimeoutError):
                    raise backend_timeout(
                        f"MySQL at {self.address} did not answer within {wait:g}s "
                        f'(connection "{self.connection.name}"); the connection was dropped'
                    ) from e
                if not isinstance(e, Exception):
                    raise
                if not is_connection_error(e) or attempt == tries - 1:
                    raise map_error(e, self.connection) from e
                await asyncio.sleep(BEGIN_RETRY_DELAY_S * (attempt + 1))
        assert conn is not None
        try:
            yield conn
        except BaseException as e:
            try:
                if not conn.closed:
                    await asyncio.shield(asyncio.wait_for(conn.rollback(), GRACE_S))
            except BaseException:
                _drop(conn)
            finally:
                await asyncio.shield(_reset_session(conn))
                pool.release(conn)
            if isinstance(e, _Killed):
                raise backend_timeout(
                    f"MySQL did not answer within {access.timeout:g}s; the statement was stopped (KILL QUERY)"
                ) from e
            if isinstance(e, _Stalled):
                raise backend_timeout(
                    f"MySQL at {self.address} did not answer within {access.timeout:g}s, nor "
                    f"{GRACE_S:g}s after it was told to stop the statement (KILL QUERY); the connection "
                    f'(connection "{self.connection.name}") was dropped'
                ) from e
            if isinstance(e, Exception):
                raise map_error(e, self.connection) from e
            raise
        try:
            await asyncio.wait_for(conn.commit(), wait)
        except Exception as e:
            _drop(conn)
            raise map_error(e, self.connection) from e
        finally:
            await asyncio.shield(_reset_session(conn))
            pool.release(conn)

    @staticmethod
    async def _begin(conn: aiomysql.Connection, mode: str) -> None:
        async with conn.cursor() as cursor:
            # The session's mode, so DDL (which commits implicitly) is refused too.
            await cursor.execute(f"SET SESSION TRANSACTION {mode}")
            await cursor.execute("START TRANSACTION")

    async def _keep_transaction(self, conn: _Connection, access: SqlAccess, index: int) -> None:
        """DDL commits implicitly on MySQL (the README says so): in a read-write call the
        statements after it run in a new transaction. A read-only call sends no DDL
        (`read_only_refusal`), and one whose transaction ended anyway stops here."""
        _check_still_read_only(conn, access, index)
        if not conn.server_status & IN_TRANSACTION:
            async with conn.cursor() as cursor:
                await self._bounded(conn, cursor.execute("START TRANSACTION"), access.timeout)

    async def query(self, statement: SqlStatement, access: SqlAccess) -> SqlCursor:
        return await PageCursor.open(lambda out: self._query(out, statement, access))

    async def _query(
        self, out: PageCursor, statement: SqlStatement, access: SqlAccess
    ) -> AsyncGenerator[Page, None]:
        sql, params = translate(statement.sql, "mysql", statement.params)
        _check_read_only([statement.sql], access, numbered=False)
        # Stopped early, a read-only call has nothing to keep: it is stopped like an abandoned
        # read rather than read to its end.
        out.abandon_on_stop = access.read_only
        started = time.perf_counter()
        async with self._transaction(access) as conn:
            cursor = await conn.cursor(aiomysql.SSCursor)
            try:
                await self._bounded(conn, cursor.execute(render(conn, sql, params)), access.timeout)
                columns = [d[0] for d in cursor.description] if cursor.description else []
                out.columns = columns
                read = 0
                if not columns:
                    _check_still_read_only(conn, access, None)
                    meta = self._meta(cursor, 0, started)
                else:
                    stopped = False
                    while True:
                        rows = await self._bounded(conn, cursor.fetchmany(PAGE_ROWS), access.timeout)
                        read += len(rows)
                        if rows and not stopped:
                            yield [tuple(normalize(v) for v in row) for row in rows]
                            # Stopped: the statement must end for its writes to commit, so the
                            # rest of its rows are read and dropped.
                            stopped = out.stopping
                        if len(rows) < PAGE_ROWS:
                            break
                    _check_still_read_only(conn, access, None)
                    meta = self._meta(cursor, read, started)
            except GeneratorExit:
                # Abandoned mid-stream: the unbuffered result would have to be read to its end.
                if not conn.closed:
                    self._kill_later(conn)
                raise
            finally:
                if not conn.closed:
                    try:
                        # An unbuffered cursor reads what is left of its result when closed.
                        await asyncio.wait_for(cursor.close(), GRACE_S)
                    except Exception:
                        _drop(conn)
        out.meta = meta

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
        _check_read_only([s.sql for s in statements], access, numbered=True)
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
                    await self._keep_transaction(conn, access, index)
                except (_Killed, _Stalled):
                    raise
                except Exception as e:
                    raise batch_error(index, map_error(e, self.connection)) from e
                results.append(SqlResult(columns, [tuple(normalize(v) for v in r) for r in rows], meta))
        return results

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        # One statement per round trip (the connection refuses more): the script arrives split.
        _check_read_only(statements, access, numbered=True)
        async with self._transaction(access) as conn:
            for index, sql in enumerate(statements):
                try:
                    async with conn.cursor() as cursor:
                        await self._bounded(conn, cursor.execute(sql), access.timeout)
                    await self._keep_transaction(conn, access, index)
                except (_Killed, _Stalled):
                    raise
                except Exception as e:
                    raise batch_error(index, map_error(e, self.connection)) from e
