"""SQL bindings, mirroring the Workers ``D1Database`` in snake_case.

``db.prepare(sql).bind(*values)`` builds a statement; ``first(col=None)``, ``all()``, ``run()``
and ``raw(column_names=False)`` run it. Rows stream from the daemon in pages, so ``first()``
stops the query after the first page. ``batch([...])`` is one transaction; ``exec(script)``
runs a script. Values: None, bool (bound as 1/0 except on a PostgreSQL boolean), int (64-bit),
float, str, bytes; results come back as the same Python types (blobs as ``bytes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import SqlError
from .proto import database_pb2

if TYPE_CHECKING:
    from ._transport import AsyncTransport, SyncTransport

__all__ = [
    "D1Database",
    "D1DatabaseSync",
    "D1ExecResult",
    "D1PreparedStatement",
    "D1PreparedStatementSync",
    "D1Result",
]

_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True, slots=True)
class D1Result:
    """What ``all()``, ``run()`` and each ``batch()`` entry return: D1's ``{results, success, meta}``.
    ``meta`` has ``duration`` (ms), ``changes``, ``last_row_id``, ``changed_db``, ``rows_read``,
    ``rows_written`` and ``size_after`` (SQLite only, else None)."""

    results: list[dict[str, Any]]
    success: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class D1ExecResult:
    count: int
    duration: float


# --- pure encoding / decoding -------------------------------------------------------------------


def encode_value(value: Any) -> database_pb2.SqlValue:
    if value is None:
        return database_pb2.SqlValue(null=True)
    if isinstance(value, bool):
        return database_pb2.SqlValue(boolean=value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise TypeError(f"D1_TYPE_ERROR: {value} does not fit a 64-bit integer; bind it as str")
        return database_pb2.SqlValue(integer=value)
    if isinstance(value, float):
        return database_pb2.SqlValue(real=value)
    if isinstance(value, str):
        return database_pb2.SqlValue(text=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return database_pb2.SqlValue(blob=bytes(value))
    raise TypeError(
        f"D1_TYPE_ERROR: type {type(value).__name__!r} not supported for a bound value "
        "(use None, bool, int, float, str or bytes)"
    )


def decode_value(message: database_pb2.SqlValue) -> Any:
    kind = message.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    return getattr(message, kind)


def _meta(message: database_pb2.SqlMeta) -> dict[str, Any]:
    return {
        "duration": message.duration,
        "changes": message.changes,
        "last_row_id": message.last_row_id,
        "changed_db": message.changed_db,
        "rows_read": message.rows_read,
        "rows_written": message.rows_written,
        "size_after": message.size_after if message.HasField("size_after") else None,
    }


def _tuples(rows: Iterable[database_pb2.SqlRow]) -> Iterator[list[Any]]:
    for row in rows:
        yield [decode_value(v) for v in row.values]


def _objects(columns: Sequence[str], rows: Iterable[list[Any]]) -> list[dict[str, Any]]:
    # Like D1, a repeated column name keeps the last value.
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _column_value(columns: Sequence[str], row: list[Any] | None, column: str) -> Any:
    if column not in columns:
        raise SqlError(
            f'D1_COLUMN_NOTFOUND: column "{column}" is not in the result (columns: {", ".join(columns)})',
            reason="SQL_ERROR",
        )
    if row is None:
        return None
    return dict(zip(columns, row, strict=True))[column]


def statement_message(sql: str, params: Sequence[Any]) -> database_pb2.SqlStatement:
    if not isinstance(sql, str):
        raise TypeError(f"a SQL statement must be str, not {type(sql).__name__}")
    return database_pb2.SqlStatement(sql=sql, params=[encode_value(v) for v in params])


class _Collect:
    """Folds the parts of a streamed Query answer: header, pages, meta."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.rows: list[list[Any]] = []
        self.meta: dict[str, Any] = {}

    def add(self, part: database_pb2.SqlQueryResponse) -> None:
        if part.columns:
            self.columns = list(part.columns)
        self.rows.extend(_tuples(part.rows))
        if part.HasField("meta"):
            self.meta = _meta(part.meta)

    def result(self) -> D1Result:
        return D1Result(_objects(self.columns, self.rows), True, self.meta)

    def raw(self, column_names: bool) -> list[list[Any]]:
        return [list(self.columns), *self.rows] if column_names else self.rows


def _batch_results(response: database_pb2.SqlBatchResponse) -> list[D1Result]:
    return [
        D1Result(_objects(list(r.columns), _tuples(r.rows)), True, _meta(r.meta)) for r in response.results
    ]


# --- asyncio ------------------------------------------------------------------------------------


class D1PreparedStatement:
    """A statement with its bound values; ``bind`` returns a new statement, as in D1."""

    __slots__ = ("_db", "_params", "sql")

    def __init__(self, db: D1Database, sql: str, params: Sequence[Any] = ()) -> None:
        self._db = db
        self.sql = sql
        self._params = tuple(params)

    def bind(self, *values: Any) -> D1PreparedStatement:
        for value in values:
            encode_value(value)  # a bad type fails here, like D1's bind
        return D1PreparedStatement(self._db, self.sql, values)

    def _message(self) -> database_pb2.SqlStatement:
        return statement_message(self.sql, self._params)

    def _request(self) -> database_pb2.SqlQueryRequest:
        return database_pb2.SqlQueryRequest(binding=self._db._binding, statement=self._message())

    async def _stream(self) -> AsyncIterator[database_pb2.SqlQueryResponse]:
        """The answer's messages: the Query answer, then (for a large result) its Fetch stream.
        Stopping early releases the daemon's cursor."""
        transport = self._db._transport
        first = await transport.unary("Database.Query", self._request())
        cursor = database_pb2.SqlCursorRequest(binding=self._db._binding, cursor=first.cursor)
        fetching = False
        try:
            yield first
            if first.cursor:
                fetching = True
                async for part in transport.stream("Database.Fetch", cursor):
                    yield part
        finally:
            if first.cursor and not fetching:
                await transport.unary("Database.CloseCursor", cursor)

    async def _collect(self) -> _Collect:
        collected = _Collect()
        async for part in self._stream():
            collected.add(part)
        return collected

    async def all(self) -> D1Result:
        return (await self._collect()).result()

    async def run(self) -> D1Result:
        return (await self._collect()).result()

    async def raw(self, column_names: bool = False) -> list[list[Any]]:
        return (await self._collect()).raw(column_names)

    async def rows(self) -> AsyncIterator[dict[str, Any]]:
        """The rows as they arrive, without holding the whole result (a bindingd extension,
        for results too large for ``all()``)."""
        columns: list[str] = []
        async for part in self._stream():
            columns = list(part.columns) or columns
            for row in _tuples(part.rows):
                yield dict(zip(columns, row, strict=True))

    async def first(self, column: str | None = None) -> Any:
        """The first row as a dict (or one of its values), None when there is none; the rest of
        the result is never sent."""
        columns: list[str] = []
        row: list[Any] | None = None
        stream = self._stream()
        try:
            async for part in stream:
                columns = list(part.columns) or columns
                if part.rows:
                    row = next(_tuples(part.rows[:1]))
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if column is not None:
            return _column_value(columns, row, column)
        return None if row is None else dict(zip(columns, row, strict=True))

    def __repr__(self) -> str:
        return f"<D1PreparedStatement {self.sql!r} ({len(self._params)} values)>"


class D1Database:
    """An ``sql`` binding for asyncio code (``env.APP_DB``)."""

    __slots__ = ("_binding", "_transport")

    def __init__(self, transport: AsyncTransport, binding: str) -> None:
        self._transport = transport
        self._binding = binding

    def prepare(self, sql: str) -> D1PreparedStatement:
        return D1PreparedStatement(self, sql)

    async def batch(self, statements: Sequence[D1PreparedStatement]) -> list[D1Result]:
        """Every statement in one transaction: all or nothing."""
        request = database_pb2.SqlBatchRequest(
            binding=self._binding, statements=[s._message() for s in statements]
        )
        return _batch_results(await self._transport.unary("Database.Batch", request))

    async def exec(self, sql: str) -> D1ExecResult:
        """A script of statements separated by ``;`` (no bound values), in one transaction."""
        response = await self._transport.unary(
            "Database.Exec", database_pb2.SqlExecRequest(binding=self._binding, sql=sql)
        )
        return D1ExecResult(response.count, response.duration)

    def __repr__(self) -> str:
        return f"<D1Database {self._binding}>"


# --- blocking -----------------------------------------------------------------------------------


class D1PreparedStatementSync:
    __slots__ = ("_db", "_params", "sql")

    def __init__(self, db: D1DatabaseSync, sql: str, params: Sequence[Any] = ()) -> None:
        self._db = db
        self.sql = sql
        self._params = tuple(params)

    def bind(self, *values: Any) -> D1PreparedStatementSync:
        for value in values:
            encode_value(value)
        return D1PreparedStatementSync(self._db, self.sql, values)

    def _message(self) -> database_pb2.SqlStatement:
        return statement_message(self.sql, self._params)

    def _stream(self) -> Iterator[database_pb2.SqlQueryResponse]:
        transport = self._db._transport
        request = database_pb2.SqlQueryRequest(binding=self._db._binding, statement=self._message())
        first = transport.unary("Database.Query", request)
        cursor = database_pb2.SqlCursorRequest(binding=self._db._binding, cursor=first.cursor)
        fetching = False
        try:
            yield first
            if first.cursor:
                fetching = True
                yield from transport.stream("Database.Fetch", cursor)
        finally:
            if first.cursor and not fetching:
                transport.unary("Database.CloseCursor", cursor)

    def _collect(self) -> _Collect:
        collected = _Collect()
        for part in self._stream():
            collected.add(part)
        return collected

    def all(self) -> D1Result:
        return self._collect().result()

    def run(self) -> D1Result:
        return self._collect().result()

    def raw(self, column_names: bool = False) -> list[list[Any]]:
        return self._collect().raw(column_names)

    def rows(self) -> Iterator[dict[str, Any]]:
        columns: list[str] = []
        for part in self._stream():
            columns = list(part.columns) or columns
            for row in _tuples(part.rows):
                yield dict(zip(columns, row, strict=True))

    def first(self, column: str | None = None) -> Any:
        columns: list[str] = []
        row: list[Any] | None = None
        stream = self._stream()
        try:
            for part in stream:
                columns = list(part.columns) or columns
                if part.rows:
                    row = next(_tuples(part.rows[:1]))
                    break
        finally:
            stream.close()  # type: ignore[attr-defined]
        if column is not None:
            return _column_value(columns, row, column)
        return None if row is None else dict(zip(columns, row, strict=True))


class D1DatabaseSync:
    """An ``sql`` binding for blocking code (``connect_sync().APP_DB``)."""

    __slots__ = ("_binding", "_transport")

    def __init__(self, transport: SyncTransport, binding: str) -> None:
        self._transport = transport
        self._binding = binding

    def prepare(self, sql: str) -> D1PreparedStatementSync:
        return D1PreparedStatementSync(self, sql)

    def batch(self, statements: Sequence[D1PreparedStatementSync]) -> list[D1Result]:
        request = database_pb2.SqlBatchRequest(
            binding=self._binding, statements=[s._message() for s in statements]
        )
        return _batch_results(self._transport.unary("Database.Batch", request))

    def exec(self, sql: str) -> D1ExecResult:
        response = self._transport.unary(
            "Database.Exec", database_pb2.SqlExecRequest(binding=self._binding, sql=sql)
        )
        return D1ExecResult(response.count, response.duration)

    def __repr__(self) -> str:
        return f"<D1DatabaseSync {self._binding}>"
