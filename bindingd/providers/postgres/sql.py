"""SQL on PostgreSQL through asyncpg pools, shared per connection entry.

The limits of a call live in the session: each pool is for one access mode and statement
timeout, its connections opened with `statement_timeout` and `default_transaction_read_only`
as startup settings (bindings of one connection entry that differ in either get pools of their
own, so nothing leaks between them; the pool's `RESET ALL` on release goes back to exactly those
values). So a slow statement is cancelled by the server itself (BACKEND_TIMEOUT), a refused
write is refused by the server (a read-only transaction: PERMISSION_DENIED), and a call the
client abandons is cancelled on the server by asyncpg's cancel request.

A query that reads (a read-only binding, or a statement that starts with SELECT, WITH, VALUES,
TABLE or SHOW) runs first as a single statement on a read-only session: on a binding that may
write its implicit transaction is read-only, and bind, execute and commit are one round trip
(the statement from the connection's prepared-statement cache; the session reset after it runs
once the answer is on its way). A read-only call runs it inside `BEGIN READ ONLY` (one round
trip more): in the implicit transaction a DO block or procedure could COMMIT, lift the
session's read-only default and write in the next transaction; in a transaction block it
cannot. Its COMMIT, behind a guard that rolls back a read-only transaction that wrote anyway
(large objects), goes with the session reset. When that attempt cannot answer — more than a
page of rows, or a write the read-only transaction refused on a binding that may write —
nothing was written, and the call runs again the general way; its SQL is remembered to go
that way at once next time.

Scripts (exec) are split by PostgreSQL's own parser (bindingd.domain.sql) and sent statement by
statement in the extended protocol, which carries one command at most.

The general way (writes, large results, batches, scripts) is one transaction: `BEGIN READ
ONLY|READ WRITE` (one round trip), bind + first page, the rest streamed through a portal page
by page, and `COMMIT` sent together with the session reset (advisory locks, cursors, LISTENs,
SETs) that the pool would otherwise send as a round trip of its own. A cached statement made
stale by a schema change fails before it runs anything: the call runs once more with the cache
dropped.

After a server restart the pool's connections are dead; a failure to even begin (nothing ran
yet, or only a read) is retried on a fresh connection, so the first calls after a restart
succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import decimal
import functools
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from pglast import parser as pg_parser

from bindingd.config.model import Binding
from bindingd.config.urls import connection_address
from bindingd.domain.sql import (
    DEFAULT_TIMEOUT_S,
    INT64_MAX,
    INT64_MIN,
    PAGE_ROWS,
    Page,
    SqlAccess,
    SqlCursor,
    SqlMeta,
    SqlResult,
    SqlStatement,
    batch_error,
    normalize,
    sql_error,
    translate,
)
from bindingd.errors import BindingdError, permission_denied
from bindingd.providers.connections import ProviderContext
from bindingd.providers.postgres import driver

# Under their former names: the call paths that use them are left as they are.
from bindingd.providers.postgres.client import (
    CLIENT_GRACE_S,
    CONNECTION_ERRORS,
    Pool,
    Pools,
    map_error,
    reset_query,
)
from bindingd.providers.sql_cursor import PageCursor

# How long a health check waits for the server.
CHECK_S = 5.0
# Tries to begin a transaction while the server restarts or drops pooled connections.
BEGIN_TRIES = 4
BEGIN_RETRY_DELAY_S = 0.5
# Command tags that say the statement left the database as it was.
READ_TAGS = frozenset({"SELECT", "SHOW", "FETCH", "EXPLAIN", "VALUES", "TABLE", "SET", "RESET"})
ROW_TAGS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY"})
# A cached prepared statement the schema (or a DEALLOCATE) has made unusable: nothing ran.
_STALE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidCachedStatementError,
    asyncpg.exceptions.OutdatedSchemaCacheError,
    asyncpg.exceptions.InvalidSQLStatementNameError,
)


def _coerce(kind: str, value: Any, index: int) -> Any:
    """A D1 value as the parameter type PostgreSQL inferred (asyncpg's codecs are strict)."""
    if value is None:
        return None
    try:
        if kind in ("int2", "int4", "int8", "oid"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not an integer")
            return int(value)
        if kind in ("float4", "float8"):
            return float(value)
        if kind == "numeric":
            return decimal.Decimal(str(value))
        if kind == "bool":
            return value if isinstance(value, bool) else bool(int(value))
        if kind == "bytea":
            return value if isinstance(value, bytes) else str(value).encode()
        if kind in ("timestamp", "timestamptz"):
            if isinstance(value, str):
                parsed = datetime.datetime.fromisoformat(value)
                if kind == "timestamptz" and parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=datetime.UTC)
                return parsed
            if isinstance(value, int | float) and not isinstance(value, bool):
                return datetime.datetime.fromtimestamp(value, datetime.UTC)
        if kind == "date" and isinstance(value, str):
            return datetime.date.fromisoformat(value)
        if kind in ("time", "timetz") and isinstance(value, str):
            return datetime.time.fromisoformat(value)
        if isinstance(value, bool):
            return str(int(value))
        if isinstance(value, bytes):
            return value
        return str(value) if not isinstance(value, str) else value
    except (ValueError, TypeError) as e:
        raise sql_error(f"parameter {index}: cannot bind {value!r} as {kind}: {e}") from None


def _number_casts(sql: str, kinds: list[str], params: list[Any]) -> dict[int, str]:
    """The parameters of a translated statement that PostgreSQL typed as text only because
    nothing around them says a type (`SELECT $1 AS v`: an unknown-typed parameter becomes text)
    but that are bound to a number, each with the type to give it. Only where every use of the
    parameter is a whole output column of a plain SELECT or VALUES, so that the cast changes
    nothing but the type of that column (`WHERE name = $1` stays text)."""
    numbers = {
        i + 1: ("int8" if INT64_MIN <= v <= INT64_MAX else "numeric") if isinstance(v, int) else "float8"
        for i, (kind, v) in enumerate(zip(kinds, params, strict=True))
        if kind == "text" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not numbers:
        return {}
    untyped = _output_only_params(sql)
    return {n: cast for n, cast in numbers.items() if n in untyped}


@functools.lru_cache(maxsize=1024)
def _output_only_params(sql: str) -> frozenset[int]:
    """Parameter numbers whose every use is a whole output column of a plain top-level SELECT or
    VALUES, read from PostgreSQL's own parse tree (pglast)."""
    try:
        tree = json.loads(pg_parser.parse_sql_json(sql))
    except pg_parser.ParseError:
        return frozenset()
    stmts = tree.get("stmts", [])
    select = stmts[0].get("stmt", {}).get("SelectStmt") if len(stmts) == 1 else None
    if not select or select.get("op") != "SETOP_NONE":
        return frozenset()
    whole: list[int] = []
    for target in select.get("targetList", []):
        value = target.get("ResTarget", {}).get("val", {})
        if "ParamRef" in value:
            whole.append(value["ParamRef"].get("number", 0))
    for row in select.get("valuesLists", []):
        for item in row.get("List", {}).get("items", []):
            if "ParamRef" in item:
                whole.append(item["ParamRef"].get("number", 0))
    uses: list[int] = []
    _param_uses(tree, uses)
    return frozenset(n for n in whole if uses.count(n) == whole.count(n))


def _param_uses(node: object, into: list[int]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ParamRef" and isinstance(value, dict):
                into.append(value.get("number", 0))
            else:
                _param_uses(value, into)
    elif isinstance(node, list):
        for item in node:
            _param_uses(item, into)


def _with_casts(sql: str, casts: dict[int, str]) -> str:
    """`sql` with `::type` after each `$N` of `casts`, found by PostgreSQL's lexer."""
    out: list[str] = []
    at = 0
    for token in pg_parser.scan(sql):
        if token.name == "PARAM":
            number = int(sql[token.start + 1 : token.end + 1])
            if number in casts:
                out.append(f"{sql[at : token.end + 1]}::{casts[number]}")
                at = token.end + 1
    out.append(sql[at:])
    return "".join(out)


def _meta(tag: str, rows: int, started: float) -> SqlMeta:
    words = tag.split()
    command = words[0] if words else ""
    count = int(words[-1]) if words and words[-1].isdigit() else 0
    changes = count if command in ROW_TAGS else 0
    changed = changes > 0 if command in ROW_TAGS else bool(command) and command not in READ_TAGS
    return SqlMeta(
        duration=(time.perf_counter() - started) * 1000,
        changes=changes,
        last_row_id=0,
        changed_db=changed,
        rows_read=rows if command in READ_TAGS or not command else count,
        rows_written=changes,
    )


async def _pages_of(
    out: PageCursor, columns: list[str], rows: list[Any], tag: str, started: float
) -> AsyncGenerator[Page, None]:
    """The pages of a statement answered at once (it ran whole and committed)."""
    out.columns = columns
    for at in range(0, len(rows), PAGE_ROWS):
        yield [tuple(normalize(v) for v in row) for row in rows[at : at + PAGE_ROWS]]
        if out.stopping:
            break  # only its meta is left
    out.meta = _meta(tag, len(rows), started)


def _check_still_in_transaction(conn: asyncpg.Connection, access: SqlAccess, index: int) -> None:
    """A read-only call whose statement ended the transaction (COMMIT) runs nothing more: the
    statements after it would run outside the read-only transaction."""
    if access.read_only and not conn.is_in_transaction():
        raise permission_denied(
            f"statement {index} ended the read-only transaction; the statements after it were not run"
        )


class _StaleStatement(Exception):
    """A cached statement failed before running anything; the call is run again."""


T = TypeVar("T")


async def _unless_stale_twice(run: Callable[[], Awaitable[T]], whose: str) -> T:
    """`run()`, once more if a schema change made a cached statement stale (nothing ran then)."""
    for attempt in range(2):
        try:
            return await run()
        except _StaleStatement as e:
            if attempt:
                raise sql_error(f"{whose} plan went stale twice in a row: {e}") from e
    raise AssertionError("unreachable")


def _timeout_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# The first word of a statement, past blanks, comments and opening parentheses.
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)
_READ_WORDS = frozenset({"select", "with", "values", "table", "show"})
# How many statements a binding remembers as not answerable in one read-only round trip.
SLOW_PATH_MEMORY = 1000


def _looks_like_a_read(sql: str) -> bool:
    """Whether a statement is worth trying on a read-only session first. Only a guess that
    picks the fast way: the read-only transaction still refuses any write."""
    match = _FIRST_WORD.match(sql)
    return match is not None and match.group(1).lower() in _READ_WORDS


# Opens a read-only call. The SELECT fixes the mode (`SET TRANSACTION READ WRITE` is refused
# from the first query on), and inside a transaction block PostgreSQL refuses a COMMIT or
# ROLLBACK from a DO block or procedure ("invalid transaction termination"): a call cannot end
# its read-only transaction and go on writing in a new one. (In the implicit transaction of a
# lone statement it can, which is why a read-only call never runs without this.)
BEGIN_READ_ONLY = "BEGIN READ ONLY; SELECT 1"
# Ends a read-only call. PostgreSQL lets a few writes through a read-only transaction (large
# objects: lo_from_bytea(), lo_put() on PostgreSQL 15), and any write gives the transaction an
# id: then the guard fails, the COMMIT after it in the same query is never run, and the call
# rolls back (its error is a read-only refusal, PERMISSION_DENIED). Any failure of the guard
# itself also leaves the COMMIT unrun.
READ_ONLY_COMMIT = (
    "DO $bindingd$ BEGIN IF pg_catalog.txid_current_if_assigned() IS NOT NULL THEN"
    " RAISE EXCEPTION USING ERRCODE = '25006', MESSAGE = 'the read-only call wrote to the database"
    " (a large object?); it was rolled back'; END IF; END $bindingd$;\nCOMMIT"
)


@dataclasses.dataclass
class _AfterCommit:
    """What a call wants from its session once its transaction committed."""

    last_row_id_wanted: bool = False
    last_row_id: int = 0


def _inserted(tag: str) -> bool:
    """Whether a command tag says an INSERT (or a MERGE) added rows."""
    words = tag.split()
    return bool(words) and words[0] in ("INSERT", "MERGE") and words[-1].isdigit() and int(words[-1]) > 0


async def _last_row_id_in_block(conn: asyncpg.Connection, wait: float, defined: list[bool]) -> int:
    """`lastval()` inside a batch's transaction, where its error (no sequence drawn from yet)
    would abort the batch: under a savepoint until it has answered once in the batch (from then
    on it cannot fail, unless DDL drops the sequence: the caller forgets `defined` then)."""
    if defined[0]:
        return int(await conn.fetchval("SELECT pg_catalog.lastval()", timeout=wait) or 0)
    await conn.execute("SAVEPOINT bindingd_last_row_id", timeout=wait)
    try:
        value = await conn.fetchval("SELECT pg_catalog.lastval()", timeout=wait)
    except asyncpg.exceptions.ObjectNotInPrerequisiteStateError:
        await conn.execute(
            "ROLLBACK TO SAVEPOINT bindingd_last_row_id; RELEASE SAVEPOINT bindingd_last_row_id",
            timeout=wait,
        )
        return 0
    await conn.execute("RELEASE SAVEPOINT bindingd_last_row_id", timeout=wait)
    defined[0] = True
    return int(value or 0)


async def _last_row_id(conn: asyncpg.Connection, wait: float) -> int:
    """`lastval()`: the value the session last drew from any sequence (the new row's serial or
    identity id; a trigger's nextval() counts too), or 0 when the session drew none since its
    reset. Outside a transaction block, where its error aborts nothing."""
    try:
        value = await conn.fetchval("SELECT pg_catalog.lastval()", timeout=wait)
    except asyncpg.exceptions.ObjectNotInPrerequisiteStateError:
        return 0
    return int(value or 0)


class PostgresSql:
    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.connection = binding.connection
        self.context = context
        self.timeout = float(binding.options.get("timeout", DEFAULT_TIMEOUT_S))
        self._pools: Pools | None = None
        # Statements the one-round-trip read could not answer (a large result, a refused write),
        # oldest first: they go the general way at once.
        self._slow_path: dict[str, None] = {}

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> PostgresSql:
        return cls(binding, context)

    async def start(self) -> None:
        self._pools = await self.context.connections.acquire(self.connection, Pools)
        if self.timeout > 0:  # the pool most calls use, warmed up now if min_size says so
            await self._pool(SqlAccess(read_only=True, timeout=self.timeout))

    async def close(self) -> None:
        if self._pools is not None:
            self._pools = None
            await self.context.connections.release(self.connection)

    async def _pool(self, access: SqlAccess) -> Pool:
        assert self._pools is not None, "provider not started"
        return await self._pools.get(access.read_only, _timeout_ms(access.timeout))

    async def check(self) -> str:
        # One try on the pool reads use: a probe reports the backend as it is now.
        pool = await self._pool(SqlAccess(read_only=True, timeout=max(self.timeout, 0.001)))
        conn = await self._acquire(pool, CHECK_S, 0, 1)
        try:
            version = await conn.fetchval("SHOW server_version", timeout=CHECK_S)
        except Exception as e:
            raise map_error(e, self.connection) from e
        finally:
            await asyncio.shield(pool.pool.release(conn, timeout=CLIENT_GRACE_S))
        return f"postgres {version} at {connection_address(self.connection)}"

    async def _acquire(self, pool: Pool, wait: float, attempt: int, tries: int) -> asyncpg.Connection:
        """A pooled connection; a pool that cannot open one within `wait` is BACKEND_TIMEOUT."""
        try:
            # asyncio.timeout rather than acquire(timeout=): no task per call.
            async with asyncio.timeout(wait):
                return await pool.pool.acquire()
        except CONNECTION_ERRORS as e:
            if attempt == tries - 1 or isinstance(e, TimeoutError):
                raise map_error(e, self.connection) from e
            raise
        except Exception as e:
            raise map_error(e, self.connection) from e

    @contextlib.asynccontextmanager
    async def _transaction(
        self, access: SqlAccess, tries: int = BEGIN_TRIES, after: _AfterCommit | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside `BEGIN` (the session carries the call's timeout); COMMIT
        when the block ends cleanly, ROLLBACK otherwise (the connection is dropped if even that
        fails). An `after` the block asked for a last row id reads `lastval()` once committed."""
        pool = await self._pool(access)
        reset_done = pool.reset_done
        begin = BEGIN_READ_ONLY if access.read_only else "BEGIN READ WRITE"
        wait = access.timeout + CLIENT_GRACE_S
        conn: asyncpg.Connection | None = None
        for attempt in range(tries):
            try:
                conn = await self._acquire(pool, wait, attempt, tries)
                await conn.execute(begin, timeout=wait)
                break
            except CONNECTION_ERRORS as e:
                if conn is not None:
                    await _drop(pool, conn)
                    conn = None
                if attempt == tries - 1 or isinstance(e, TimeoutError):
                    raise map_error(e, self.connection) from e
                await asyncio.sleep(BEGIN_RETRY_DELAY_S * (attempt + 1))
            except BaseException as e:
                if conn is not None:
                    await pool.pool.release(conn, timeout=CLIENT_GRACE_S)
                if isinstance(e, Exception):
                    raise map_error(e, self.connection) from e
                raise
        assert conn is not None
        try:
            yield conn
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                # The caller gave up (its time limit): the call ends now, not when a server
                # that may not be answering lets the connection go (see _after_cancel).
                pool.in_background(_after_cancel(pool, conn))
                raise
            await _roll_back_and_release(pool, conn)
            if isinstance(e, Exception) and not isinstance(e, _StaleStatement):
                raise map_error(e, self.connection) from e
            raise
        released = False
        try:
            if after is not None and after.last_row_id_wanted:
                await conn.execute("COMMIT", timeout=wait)
                after.last_row_id = await _last_row_id(conn, wait)
                pool.release_later(conn)  # the session reset once the answer is on its way
                released = True
            else:
                # The pool's reset in the same round trip; skipped if the COMMIT fails.
                commit = READ_ONLY_COMMIT if access.read_only else "COMMIT"
                await conn.execute(f"{commit};\n{reset_query(conn)}", timeout=wait)
                reset_done.add(conn.get_server_pid())
        except Exception as e:
            # A failed COMMIT (or its read-only guard) leaves the transaction open: end it.
            with contextlib.suppress(Exception):
                if not conn.is_closed() and conn.is_in_transaction():
                    await conn.execute("ROLLBACK", timeout=CLIENT_GRACE_S)
            raise map_error(e, self.connection) from e
        finally:
            if not released:
                await pool.pool.release(conn, timeout=CLIENT_GRACE_S)

    async def _read_at_once(
        self, statement: SqlStatement, access: SqlAccess
    ) -> tuple[list[str], list[Any], str] | None:
        """Columns, rows and command tag of a statement run alone on a read-only session. For a
        binding that may write: one round trip for bind, execute and commit (its implicit
        transaction is read-only; a DO block that ends it could write, but so may the binding).
        For a read-only call: inside `BEGIN READ ONLY` first (one round trip more), which no
        statement can end and go on writing; its COMMIT goes with the session reset once the
        answer is on its way. None when it cannot answer that way (more than a page of rows, or
        a binding that may write and a write the session refused): nothing was written, and the
        statement is remembered to go the general way."""
        pool = await self._pool(SqlAccess(read_only=True, timeout=access.timeout))
        wait = access.timeout + CLIENT_GRACE_S
        in_block = access.read_only
        for attempt in range(BEGIN_TRIES):
            try:
                conn = await self._acquire(pool, wait, attempt, BEGIN_TRIES)
            except CONNECTION_ERRORS:  # the server is not there yet: try again
                await asyncio.sleep(BEGIN_RETRY_DELAY_S * (attempt + 1))
                continue
            try:
                if in_block:
                    await conn.execute(BEGIN_READ_ONLY, timeout=wait)
                prepared, args = await self._fresh(conn, self._prepare(conn, statement, wait))
                # One row past a page says whether there is more than a page.
                rows, status, complete = await self._fresh(
                    conn, driver.bind_execute(conn, prepared, args, PAGE_ROWS + 1, wait)
                )
            except CONNECTION_ERRORS as e:
                # Read-only: running it again is safe, on a fresh connection.
                await _drop(pool, conn)
                if attempt == BEGIN_TRIES - 1 or isinstance(e, TimeoutError):
                    raise map_error(e, self.connection) from e
                await asyncio.sleep(BEGIN_RETRY_DELAY_S * (attempt + 1))
                continue
            except asyncpg.exceptions.ReadOnlySQLTransactionError as e:
                await asyncio.shield(self._give_back(pool, conn, in_block))
                if access.read_only:
                    raise map_error(e, self.connection) from e
                self._remember_slow(statement.sql)
                return None
            except BaseException as e:
                if isinstance(e, asyncio.CancelledError):  # as in _transaction
                    pool.in_background(_after_cancel(pool, conn))
                    raise
                await asyncio.shield(self._give_back(pool, conn, in_block))
                if isinstance(e, Exception) and not isinstance(e, _StaleStatement):
                    raise map_error(e, self.connection) from e
                raise
            # The answer does not wait for the COMMIT: a write the guard finds is rolled back
            # (the connection dropped) after the rows went out.
            pool.release_later(conn, READ_ONLY_COMMIT if in_block else None)
            if not complete:
                self._remember_slow(statement.sql)
                return None
            columns = [a.name for a in prepared.get_attributes()]
            tag = status.decode() if isinstance(status, bytes) else str(status or "")
            return columns, rows, tag
        raise AssertionError("unreachable")

    @staticmethod
    async def _give_back(pool: Pool, conn: asyncpg.Connection, in_block: bool) -> None:
        """Release a connection after a failed call, its transaction block rolled back first (the
        connection is dropped if even that fails)."""
        try:
            if in_block and not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("ROLLBACK", timeout=CLIENT_GRACE_S)
            await pool.pool.release(conn, timeout=CLIENT_GRACE_S)
        except BaseException:
            await _drop(pool, conn)

    def _remember_slow(self, sql: str) -> None:
        self._slow_path[sql] = None
        if len(self._slow_path) > SLOW_PATH_MEMORY:
            del self._slow_path[next(iter(self._slow_path))]

    async def _prepare(
        self, conn: asyncpg.Connection, statement: SqlStatement, wait: float
    ) -> tuple[Any, list[Any]]:
        """The prepared statement and its values coerced to the parameter types the server
        inferred (asyncpg's codecs are strict). From the connection's statement cache: a stale
        one fails when bound, and `_fresh` turns that into a rerun of the call."""
        sql, params = translate(statement.sql, "postgres", statement.params)
        prepared = await driver.prepare(conn, sql, wait)
        kinds = [t.name for t in prepared.get_parameters()]
        casts = _number_casts(sql, kinds, params)
        if casts:  # `SELECT ? AS v` bound to 5 answers 5, not '5': the number's type is given
            prepared = await driver.prepare(conn, _with_casts(sql, casts), wait)
            kinds = [t.name for t in prepared.get_parameters()]
        return prepared, [
            _coerce(kind, v, i + 1) for i, (kind, v) in enumerate(zip(kinds, params, strict=True))
        ]

    @staticmethod
    async def _fresh(conn: asyncpg.Connection, work: Any) -> Any:
        """Await `work`, the first use of a cached statement; a stale one drops the caches and
        raises _StaleStatement (nothing ran: the call rolls back and runs again)."""
        try:
            return await work
        except _STALE_ERRORS as e:
            await conn.reload_schema_state()
            raise _StaleStatement(str(e)) from e

    async def query(self, statement: SqlStatement, access: SqlAccess) -> SqlCursor:
        translate(statement.sql, "postgres", statement.params)  # a wrong count fails before BEGIN
        started = time.perf_counter()
        if statement.sql not in self._slow_path and (access.read_only or _looks_like_a_read(statement.sql)):
            answer = await _unless_stale_twice(
                lambda: self._read_at_once(statement, access), "the statement's"
            )
            if answer is not None:
                columns, rows, tag = answer
                return await PageCursor.open(lambda out: _pages_of(out, columns, rows, tag, started))
        for attempt in range(2):
            try:
                # A stale statement fails before its first page, so within open().
                return await PageCursor.open(lambda out: self._query(out, statement, access))
            except _StaleStatement as e:
                if attempt:
                    raise sql_error(f"the statement's plan went stale twice in a row: {e}") from e
        raise AssertionError("unreachable")

    async def _query(
        self, out: PageCursor, statement: SqlStatement, access: SqlAccess
    ) -> AsyncGenerator[Page, None]:
        wait = access.timeout + CLIENT_GRACE_S
        started = time.perf_counter()
        after = _AfterCommit()
        async with self._transaction(access, after=after) as conn:
            prepared, args = await self._fresh(conn, self._prepare(conn, statement, wait))
            columns = [a.name for a in prepared.get_attributes()]
            out.columns = columns
            if not columns:
                await self._fresh(conn, prepared.fetch(*args, timeout=wait))
                tag = prepared.get_statusmsg() or ""
                meta = _meta(tag, 0, started)
                # D1 code reads meta.last_row_id after an INSERT: read once committed.
                after.last_row_id_wanted = not access.read_only and _inserted(tag)
            else:
                # Bind and the first page in one round trip (where a stale statement fails,
                # before anything is yielded), then a page per round trip.
                records = prepared.cursor(*args, prefetch=PAGE_ROWS, timeout=wait).__aiter__()
                first = await self._fresh(conn, anext(records, None))
                read = 0
                page: Page = []
                if first is not None:
                    page.append(tuple(normalize(v) for v in first))
                stopped = False
                async for record in records:
                    page.append(tuple(normalize(v) for v in record))
                    if len(page) == PAGE_ROWS:
                        read += len(page)
                        yield page
                        page = []
                        if out.stopping:
                            stopped = True
                            break
                if page:
                    read += len(page)
                    yield page
                    stopped = out.stopping
                # Stopped: the rest of the rows are not wanted; the COMMIT below closes the
                # portal and keeps what the statement did (an INSERT ... RETURNING ran whole).
                tag = "" if stopped else prepared.get_statusmsg() or ""
                meta = _meta(
                    tag if tag.split()[:1] not in (["FETCH"], []) else f"SELECT {read}", read, started
                )
                after.last_row_id_wanted = not access.read_only and _inserted(tag)
        if after.last_row_id:
            meta = dataclasses.replace(meta, last_row_id=after.last_row_id)
        out.meta = meta

    async def batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        for index, statement in enumerate(statements):
            try:
                translate(statement.sql, "postgres", statement.params)
            except BindingdError as e:
                raise batch_error(index, e) from e
        return await _unless_stale_twice(lambda: self._batch(statements, access), "a statement's")

    async def _batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        wait = access.timeout + CLIENT_GRACE_S
        results: list[SqlResult] = []
        lastval_defined = [False]
        async with self._transaction(access) as conn:
            for index, statement in enumerate(statements):
                started = time.perf_counter()
                try:
                    prepared, args = await self._fresh(conn, self._prepare(conn, statement, wait))
                    rows = await self._fresh(conn, prepared.fetch(*args, timeout=wait))
                    tag = prepared.get_statusmsg() or ""
                    meta = _meta(tag, len(rows), started)
                    if not access.read_only and _inserted(tag) and conn.is_in_transaction():
                        last = await _last_row_id_in_block(conn, wait, lastval_defined)
                        meta = dataclasses.replace(meta, last_row_id=last)
                    elif tag.split()[:1] not in (["UPDATE"], ["DELETE"], ["SELECT"], ["INSERT"]):
                        # DDL may drop the sequence lastval() would name: ask carefully again.
                        lastval_defined[0] = False
                except _StaleStatement:
                    raise
                except Exception as e:
                    raise batch_error(index, map_error(e, self.connection)) from e
                columns = [a.name for a in prepared.get_attributes()]
                results.append(SqlResult(columns, [tuple(normalize(v) for v in row) for row in rows], meta))
                _check_still_in_transaction(conn, access, index)
        return results

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        """Each statement of the script on its own, in the extended protocol: the server parses
        one command per statement and refuses more ("cannot insert multiple commands into a
        prepared statement"), so a script split wrongly fails instead of running statements
        nobody checked (the simple protocol would run them all, a COMMIT among them ending the
        read-only transaction). Rows a statement returns are read a page at a time and dropped."""
        wait = access.timeout + CLIENT_GRACE_S
        async with self._transaction(access) as conn:
            for index, sql in enumerate(statements):
                try:
                    await driver.run_dropping_rows(conn, sql, PAGE_ROWS, wait)
                except Exception as e:
                    raise batch_error(index, map_error(e, self.connection)) from e
                _check_still_in_transaction(conn, access, index)


async def _roll_back_and_release(pool: Pool, conn: asyncpg.Connection) -> None:
    """End a failed call's transaction and give the connection back (dropped if that fails)."""
    try:
        if not conn.is_closed():
            await asyncio.shield(conn.execute("ROLLBACK", timeout=CLIENT_GRACE_S))
        await asyncio.shield(pool.pool.release(conn, timeout=CLIENT_GRACE_S))
    except BaseException:
        await _drop(pool, conn)


async def _after_cancel(pool: Pool, conn: asyncpg.Connection) -> None:
    """A call cancelled mid-statement: asyncpg has sent the server a cancel request, and the
    connection's next command waits for it, so a bounded reset lets the statement stop on the
    server (under a black hole the request never completes). The connection is then dropped,
    its session's state unknown: given back, it would keep the pool a connection larger."""
    with contextlib.suppress(Exception):
        await conn.reset(timeout=CLIENT_GRACE_S)
    await _drop(pool, conn)


# Every release is bounded (timeout=CLIENT_GRACE_S): after a statement timed out, asyncpg's
# release first waits for its cancel request, which under a black hole (the server's address
# answering nothing) never completes: without a bound, a call hung there for good.


async def _drop(pool: Pool, conn: asyncpg.Connection) -> None:
    """Close a connection that failed mid-call and give it back (the pool opens another). One
    lost on its own has already gone back: asyncpg detaches it from the pool when it closes, and
    then terminating or releasing it again raises InterfaceError, which is not the call's error."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()
    with contextlib.suppress(asyncpg.InterfaceError):
        await asyncio.shield(pool.pool.release(conn, timeout=CLIENT_GRACE_S))
