"""SQL on SQLite: the `local` provider (`.bindingd/state/sql/<BINDING>.sqlite3`, created on
first start) and the `sqlite` connection kind (an existing file named by path, such as a copy of
production data). Both are the same class; only where the file comes from differs.

Each connection lives on its own thread (sqlite3 blocks), and every step of a statement runs
there as one job: a slow step is stopped with `sqlite3_interrupt`, which is how a timeout or a
cancelled call stops the query rather than abandoning it. Refused writes (read-only bindings,
protected envs) run on a second connection opened with `mode=ro`: SQLite itself refuses them.
Both connections carry a guard (`sql_guard.Guard`, SQLite's authorizer) that keeps a caller's
SQL inside the binding's own file and settings, and refuses every write on the read-only one
(`mode=ro` alone covers the main file only: an ATTACH opened read-write).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bindingd.config.model import Binding
from bindingd.domain.sql import (
    PAGE_ROWS,
    Page,
    SqlAccess,
    SqlCursor,
    SqlMeta,
    SqlResult,
    SqlStatement,
    batch_error,
    check_timeout,
    sql_error,
    translate,
)
from bindingd.errors import BindingdError, backend_timeout, backend_unavailable, permission_denied
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.sql_guard import Guard, reset_settings, settings_named
from bindingd.providers.local.sqlite import BUSY_MS, BUSY_TIMEOUT_S, private_file, private_folder
from bindingd.providers.sql_cursor import PageCursor

T = TypeVar("T")
# A caller's statement that may set the busy timeout itself (`PRAGMA busy_timeout`).
_SETS_BUSY = re.compile("busy_timeout", re.IGNORECASE).search
# A statement that finishes within this runs on the event loop instead of the thread.
INLINE_BUDGET_S = 0.002
# SQLite VM steps between two looks at the clock while a statement runs inline.
PROGRESS_STEPS = 1000


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


_FILE_FAILURES = ("unable to open", "disk I/O", "image is malformed", "malformed database", "not a database")


class GuardedConnection(sqlite3.Connection):
    """A sqlite3 connection that carries its guard, so that an error can say why it was refused."""

    guard: Guard | None = None


def map_error(e: sqlite3.Error, path: Path, conn: sqlite3.Connection | None = None) -> BindingdError:
    """A sqlite3 failure as the error table's reason, with SQLite's own message (or, for a
    statement the connection's guard refused, the guard's)."""
    message = str(e)
    guard = getattr(conn, "guard", None)
    # "not authorized" when a statement is compiled; "authorization denied" when it is refused
    # while it runs (VACUUM INTO attaches its target then).
    if guard is not None and ("not authorized" in message or "authorization denied" in message):
        denied = guard.take_denial()
        if denied is not None:
            return denied
    if "readonly database" in message or "attempt to write" in message:
        return permission_denied(f"SQLite refused the write: {message}")
    if "database is locked" in message or "database table is locked" in message:
        return backend_timeout(
            f"the SQLite file {path.name} stayed locked by another process for "
            f"{BUSY_TIMEOUT_S:.0f}s; close whatever holds it open"
        )
    # A damaged file raises DatabaseError itself ("database disk image is malformed", "file is
    # not a database"); "malformed JSON" from a caller's json() is the caller's SQL_ERROR.
    if any(text in message for text in _FILE_FAILURES):
        return backend_unavailable(f"cannot use the SQLite file {path}: {message}")
    return sql_error(message)


class SqliteConnection:
    """One sqlite3 connection and the single thread that drives it; jobs can be interrupted."""

    def __init__(self, path: Path, connect: Callable[[], sqlite3.Connection]) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sql-{path.stem}")
        self._connect = connect
        self.conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._running: object | None = None
        self._dropped: set[object] = set()
        # Jobs submitted to the thread and not finished: the loop may use the connection
        # itself only when there are none.
        self._queued = 0
        # The connection's busy timeout now: 0 while the loop runs statements inline (it never
        # sleeps on a lock), BUSY_TIMEOUT_S on the thread. Changed only when the other side
        # takes over, not twice per call.
        self._busy_ms = BUSY_MS

    async def open(self) -> None:
        self.conn = await asyncio.get_running_loop().run_in_executor(self._thread, self._connect)

    async def close(self) -> None:
        if self.conn is not None:
            # A statement still running (its call outlived the grace period) is stopped inside
            # SQLite first: the close below waits behind it, and so would the process's exit.
            with self._lock:
                if self._running is not None:
                    self.conn.interrupt()
            await asyncio.get_running_loop().run_in_executor(self._thread, self.conn.close)
        self._thread.shutdown(wait=True)

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the thread without waiting (cleanup after a call has gone)."""
        with self._lock:
            self._queued += 1

        def job() -> None:
            try:
                fn()
            finally:
                with self._lock:
                    self._queued -= 1

        self._thread.submit(job)

    def finish(self, fn: Callable[[], Any]) -> None:
        """Run `fn` (a cursor's close) right here when the thread is idle, else on the thread
        after its jobs: a hop per call would cost more than the close itself, and while it is
        queued the next small statement cannot run inline."""
        with self._lock:
            busy = self._queued > 0
        if busy:
            self.submit(fn)
            return
        with contextlib.suppress(sqlite3.Error):
            fn()

    def try_inline(
        self, fn: Callable[[sqlite3.Connection], T], *, sets_busy: bool = False
    ) -> tuple[bool, T | None]:
        """`(True, fn(conn))` run right here on the event loop, when the thread is idle and the
        statement finishes within INLINE_BUDGET_S; `(False, None)` when it must go to the thread.

        A hop to the thread costs more than a small query (`SELECT 1`, a lookup by key). A
        statement over budget is interrupted by the progress handler, which rolls it back
        whole, so running it again on the thread is safe; so is one that found the file locked
        (busy timeout 0 here: the loop never sleeps on a lock). `fn` calls `end_budget` once its
        statement is done, so that no later step (its meta) can be interrupted. `sets_busy`: the
        caller's SQL may set the busy timeout itself (see `run`).
        """
        assert self.conn is not None, "provider not started"
        with self._lock:
            if self._queued:
                return False, None
        conn = self.conn
        deadline = time.perf_counter() + INLINE_BUDGET_S
        over_budget = False

        def progress() -> int:
            nonlocal over_budget
            if time.perf_counter() > deadline:
                over_budget = True
                return 1
            return 0

        self._set_busy(conn, 0)
        conn.set_progress_handler(progress, PROGRESS_STEPS)
        try:
            return True, fn(conn)
        except sqlite3.OperationalError as e:
            if over_budget or "locked" in str(e) or "busy" in str(e):
                return False, None
            raise map_error(e, self.path, conn) from e
        except sqlite3.Error as e:
            raise map_error(e, self.path, conn) from e
        finally:
            conn.set_progress_handler(None, 0)
            if sets_busy:
                self._busy_ms = -1

    def _set_busy(self, conn: sqlite3.Connection, ms: int) -> None:
        """Set the busy timeout, if it is not that already (by whoever owns the connection now:
        the loop when nothing is queued, else the thread)."""
        if self._busy_ms != ms:
            conn.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_ms = ms

    def end_budget(self) -> None:
        assert self.conn is not None
        self.conn.set_progress_handler(None, 0)

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], timeout: float, *, sets_busy: bool = False
    ) -> T:
        """`fn(conn)` on the thread. Past `timeout`, or when the call is cancelled, the
        statement is interrupted inside SQLite (BACKEND_TIMEOUT / the cancellation).

        `sets_busy`: the caller's SQL may set the busy timeout itself (`PRAGMA busy_timeout`).
        Ours is then set again at the next job or inline statement, before either runs: a
        caller's 3000 must not make the loop sleep on a lock, nor a 0 make the thread give up.
        """
        assert self.conn is not None, "provider not started"
        conn = self.conn
        token = object()

        def job() -> T:
            with self._lock:
                if token in self._dropped:
                    self._dropped.discard(token)
                    self._queued -= 1
                    raise sqlite3.OperationalError("interrupted")
                self._running = token
            try:
                self._set_busy(conn, BUSY_MS)
                return fn(conn)
            finally:
                with self._lock:
                    if sets_busy:
                        self._busy_ms = -1
                    self._running = None
                    self._queued -= 1

        with self._lock:
            self._queued += 1
        future = asyncio.get_running_loop().run_in_executor(self._thread, job)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            await self._stop(token, future)
            raise backend_timeout(
                f"SQLite did not answer within {timeout:g}s; the statement was interrupted"
            ) from None
        except asyncio.CancelledError:
            await self._stop(token, future)
            raise
        except sqlite3.Error as e:
            raise map_error(e, self.path, conn) from e

    async def _stop(self, token: object, future: asyncio.Future[Any]) -> None:
        with self._lock:
            if self._running is token:
                assert self.conn is not None
                self.conn.interrupt()
            elif not future.done():
                self._dropped.add(token)
        # Wait for the job to leave the connection, so the next one starts clean.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(future)


class LocalSql:
    """A SQL database on one SQLite file (WAL, foreign keys on)."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self.create_file = create
        self.rw = SqliteConnection(path, self._open_rw)
        self.ro = SqliteConnection(path, self._open_ro)
        self._size = 0

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> LocalSql:
        if binding.connection is None:
            return cls(context.state_dir / "sql" / f"{binding.name}.sqlite3", create=True)
        path = Path(str(binding.connection.options["path"])).expanduser()
        if not path.is_absolute():
            # Relative to the project root: state_dir is <root>/.bindingd/state.
            path = context.state_dir.parent.parent / path
        return cls(path, create=False)

    def _open_rw(self) -> sqlite3.Connection:
        return self._open(read_only=False)

    def _open_ro(self) -> sqlite3.Connection:
        return self._open(read_only=True)

    def _open(self, *, read_only: bool) -> sqlite3.Connection:
        """The writer (WAL) or the reader (`mode=ro` and query_only, which SQLite enforces),
        both behind the guard."""
        conn = sqlite3.connect(
            f"{self.path.as_uri()}?mode=ro" if read_only else self.path,
            uri=read_only,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
            factory=GuardedConnection,
        )
        conn.text_factory = _text
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        if read_only:
            conn.execute("PRAGMA query_only=ON")
        return _guarded(conn, read_only=read_only)

    async def start(self) -> None:
        if not self.create_file and not self.path.is_file():
            raise backend_unavailable(
                f"the SQLite file {self.path} does not exist; fix the connection's path"
            )
        try:
            if self.create_file:
                private_folder(self.path.parent)
                private_file(self.path)
            await self.rw.open()
            await self.ro.open()
            self._size = await self.rw.run(_size_of, 10.0)
        except (OSError, sqlite3.Error) as e:
            raise backend_unavailable(f"cannot open the SQLite file {self.path}: {e}") from e

    async def close(self) -> None:
        await self.ro.close()
        await self.rw.close()

    async def check(self) -> str:
        await self.ro.run(lambda c: c.execute("SELECT 1").fetchall(), 5.0)
        return f"sqlite file {self.path.name}"

    def _connection(self, access: SqlAccess) -> SqliteConnection:
        return self.ro if access.read_only else self.rw

    async def query(self, statement: SqlStatement, access: SqlAccess) -> SqlCursor:
        return await PageCursor.open(lambda out: self._query(out, statement, access))

    async def _query(
        self, out: PageCursor, statement: SqlStatement, access: SqlAccess
    ) -> AsyncGenerator[Page, None]:
        translate(statement.sql, "sqlite", statement.params)  # same count check as every provider
        connection = self._connection(access)
        timeout = check_timeout(access.timeout)
        started = time.perf_counter()
        resets = settings_named(statement.sql)

        def first(
            conn: sqlite3.Connection,
        ) -> tuple[sqlite3.Cursor, int, list[str], list[tuple[Any, ...]], SqlMeta | None]:
            before = conn.total_changes
            cursor = conn.execute(statement.sql, statement.params)
            if resets:
                _put_back(conn, resets)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            if not columns:  # done already: its meta before another call's statement runs
                connection.end_budget()
                _refuse_open_transaction(conn)
                return cursor, before, columns, [], self._meta(conn, cursor, before, 0, started)
            rows = cursor.fetchmany(PAGE_ROWS)
            connection.end_budget()
            if len(rows) < PAGE_ROWS:  # the whole result: one trip to the thread
                return cursor, before, columns, rows, self._meta(conn, cursor, before, len(rows), started)
            return cursor, before, columns, rows, None

        sets_busy = _SETS_BUSY(statement.sql) is not None
        inline, answer = connection.try_inline(first, sets_busy=sets_busy)
        if not inline:
            answer = await connection.run(first, timeout, sets_busy=sets_busy)
        assert answer is not None
        cursor, before, columns, rows, meta = answer
        out.columns = columns
        try:
            read = 0
            while rows:
                read += len(rows)
                yield rows
                if out.stopping:
                    # The caller read enough: closing the statement keeps what it did (autocommit);
                    # its meta is left untold.
                    return
                if len(rows) < PAGE_ROWS:
                    break
                rows = await connection.run(lambda _: cursor.fetchmany(PAGE_ROWS), timeout)
            if meta is None:
                meta = await connection.run(
                    lambda conn: self._meta(conn, cursor, before, read, started), timeout
                )
            out.meta = meta
        finally:
            connection.finish(cursor.close)

    def _meta(
        self, conn: sqlite3.Connection, cursor: sqlite3.Cursor, before: int, read: int, started: float
    ) -> SqlMeta:
        written = conn.total_changes - before
        if written:
            self._size = _size_of(conn)
        return SqlMeta(
            duration=(time.perf_counter() - started) * 1000,
            changes=max(cursor.rowcount, 0) if written else 0,
            last_row_id=cursor.lastrowid or 0,
            changed_db=written > 0,
            rows_read=read,
            rows_written=written,
            size_after=self._size,
        )

    async def batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        for index, statement in enumerate(statements):
            try:
                translate(statement.sql, "sqlite", statement.params)
            except BindingdError as e:
                raise batch_error(index, e) from e

        def run(conn: sqlite3.Connection) -> list[SqlResult]:
            results: list[SqlResult] = []

            def one(i: int, statement: SqlStatement) -> None:
                started = time.perf_counter()
                before = conn.total_changes
                cursor = conn.execute(statement.sql, statement.params)
                columns = [d[0] for d in cursor.description] if cursor.description else []
                rows = cursor.fetchall() if columns else []
                meta = self._meta(conn, cursor, before, len(rows), started)
                cursor.close()
                results.append(SqlResult(columns, rows, meta))

            self._transaction(
                conn,
                [(i, lambda i=i, s=s: one(i, s)) for i, s in enumerate(statements)],
                frozenset().union(*(settings_named(s.sql) for s in statements)),
            )
            return results

        return await self._connection(access).run(
            run,
            check_timeout(access.timeout) * len(statements),
            sets_busy=any(_SETS_BUSY(s.sql) for s in statements),
        )

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        def run(conn: sqlite3.Connection) -> None:
            self._transaction(
                conn,
                [(i, lambda s=s: conn.execute(s).close()) for i, s in enumerate(statements)],
                frozenset().union(*(settings_named(s) for s in statements)),
            )
            self._size = _size_of(conn)

        await self._connection(access).run(
            run,
            check_timeout(access.timeout) * max(len(statements), 1),
            sets_busy=any(_SETS_BUSY(s) for s in statements),
        )

    def _transaction(
        self,
        conn: sqlite3.Connection,
        steps: list[tuple[int, Callable[[], object]]],
        resets: frozenset[str],
    ) -> None:
        """All steps or none; a failing step raises `batch_error` naming its index. `resets`:
        the statements name a setting a caller may change, put back once the transaction ends."""
        try:
            self._steps(conn, steps)
        finally:
            if resets:
                _put_back(conn, resets)

    def _steps(self, conn: sqlite3.Connection, steps: list[tuple[int, Callable[[], object]]]) -> None:
        conn.execute("BEGIN")
        for index, step in steps:
            try:
                step()
            except sqlite3.Error as e:
                _rollback(conn)
                if str(e) == "interrupted":
                    raise
                raise batch_error(index, map_error(e, self.path, conn)) from e
            except BaseException:
                _rollback(conn)
                raise
        if conn.in_transaction:  # a statement of the caller's own (COMMIT) may have ended it
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                # A failed COMMIT (a deferred constraint) leaves SQLite's transaction open: the
                # next call would run inside it and commit this one's statements.
                _rollback(conn)
                err = map_error(e, self.path, conn)
                raise BindingdError(
                    err.reason, f"the commit failed, nothing was applied: {err.message}"
                ) from e


def _guarded(conn: GuardedConnection, *, read_only: bool) -> GuardedConnection:
    """`conn` with its guard installed: every statement from here on is checked (the daemon's
    own set-up before this is not, and what it runs later is on the guard's lists)."""
    conn.guard = Guard(read_only)
    conn.guard.install(conn)
    # And no ATTACH at all, should the guard ever let one through (VACUUM INTO needs one too).
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return conn


def _put_back(conn: sqlite3.Connection, names: frozenset[str]) -> None:
    """Put back the settings a caller may change (foreign_keys, recursive_triggers, ...), so the
    next call starts from the binding's own. Outside a transaction only: inside one they are
    SQLite's to keep until it ends (and foreign_keys cannot change there at all)."""
    if not conn.in_transaction:
        reset_settings(conn, names)


def _refuse_open_transaction(conn: sqlite3.Connection) -> None:
    """A single statement (`BEGIN`, `SAVEPOINT`) must not leave the shared connection inside a
    transaction: every later call would run in it and nothing would commit. Each call is its own
    transaction, as on D1; several statements together are what `batch()` is for."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
        raise sql_error(
            "a statement may not leave a transaction open (each call is its own transaction);"
            " to run statements together use batch()"
        )


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _size_of(conn: sqlite3.Connection) -> int:
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(page_count) * int(page_size)
