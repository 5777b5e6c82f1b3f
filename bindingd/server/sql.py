"""SqlService: the proto `Database` service, gRPC ↔ the SQL rules and the provider of the named binding.

Writes are not guessed from the SQL: a call on a binding whose writes are refused (access:
read-only, or a protected env) runs in a read-only transaction, the backend refuses any write,
and the caller gets PERMISSION_DENIED with the reason the daemon refuses writes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from bindingd_client.proto import database_pb2, database_pb2_grpc

from bindingd.config.model import Binding
from bindingd.domain import sql
from bindingd.domain.sql import SqlAccess, SqlCursor, SqlMeta, SqlProvider, SqlResult, SqlStatement
from bindingd.errors import BindingdError, Reason, invalid_argument
from bindingd.runtime import Runtime
from bindingd.server.audit import audit_write
from bindingd.server.calls import rpc, rpc_stream

# How long the rest of a large result waits for its Fetch.
CURSOR_TTL_S = 30.0


def set_value(message: database_pb2.SqlValue, value: object) -> None:
    """`value` into `message` in place: building a value and copying it in costs twice that."""
    if value is None:
        message.null = True
    elif isinstance(value, bool):
        message.boolean = value
    elif isinstance(value, int):
        message.integer = value
    elif isinstance(value, float):
        message.real = value
    elif isinstance(value, str):
        message.text = value
    elif isinstance(value, bytes):
        message.blob = value
    else:
        set_value(message, sql.normalize(value))


def decode_value(message: database_pb2.SqlValue) -> object:
    kind = message.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    return getattr(message, kind)


def _add_row(rows: Any, values: tuple[object, ...]) -> None:
    """A row appended to a repeated SqlRow field, built in place."""
    fields = rows.add().values
    for value in values:
        set_value(fields.add(), value)


def _row_bytes(values: tuple[object, ...]) -> int:
    return sum(len(v) if isinstance(v, str | bytes) else 9 for v in values) + 4


def _set_meta(message: database_pb2.SqlMeta, meta: SqlMeta) -> None:
    """`meta` into a response's meta field, which is then present even if every value is 0:
    its presence is what says the answer is complete."""
    message.SetInParent()
    message.duration = meta.duration
    message.changes = meta.changes
    message.last_row_id = meta.last_row_id
    message.changed_db = meta.changed_db
    message.rows_read = meta.rows_read
    message.rows_written = meta.rows_written
    if meta.size_after is not None:
        message.size_after = meta.size_after


def _result(result: SqlResult) -> database_pb2.SqlResult:
    message = database_pb2.SqlResult(columns=result.columns)
    for values in result.rows:
        _add_row(message.rows, values)
    _set_meta(message.meta, result.meta)
    return message


def _statement(message: database_pb2.SqlStatement) -> SqlStatement:
    sql.check_statement(message.sql)
    return SqlStatement(message.sql, [decode_value(v) for v in message.params])


class _Peer:
    """What audit_write reads of a call's context, kept after the call itself has ended."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def _refused(err: BindingdError, refusal: BindingdError | None) -> BindingdError:
    """A backend's refusal of a write, explained by why the daemon made the call read-only."""
    if err.reason is Reason.PERMISSION_DENIED and refusal is not None:
        return BindingdError(Reason.PERMISSION_DENIED, f"{refusal.message} ({err.message})")
    return err


class _Answer:
    """One Query's answer: the provider's cursor read as messages, the rest of a large result
    by later Fetch calls (or ended by CloseCursor)."""

    def __init__(
        self,
        provider: SqlProvider,
        statement: SqlStatement,
        access: SqlAccess,
        binding: Binding,
        refusal: BindingdError | None,
        context: grpc.aio.ServicerContext,
    ) -> None:
        self.provider = provider
        self.statement = statement
        self.access = access
        self.binding = binding
        self.refusal = refusal
        # The rest of a large result is sent by a later Fetch call: audit with this call's peer.
        self.peer = _Peer(context.peer())
        self.cursor: SqlCursor | None = None

    async def messages(self) -> AsyncGenerator[database_pb2.SqlQueryResponse, None]:
        """The statement's pages as messages: the columns ride with the first page, the meta
        with the last, so a small result is one message; a full page goes out at once. Closing
        this early abandons the statement (see `SqlCursor.finish`)."""
        try:
            self.cursor = cursor = await self.provider.query(self.statement, self.access)
            pending = database_pb2.SqlQueryResponse(columns=cursor.columns)
            rows = pending.rows
            size = 0
            async for page in cursor.pages():
                for values in page:
                    _add_row(rows, values)
                    size += _row_bytes(values)
                    if size >= sql.PAGE_BYTES:
                        yield pending
                        pending = database_pb2.SqlQueryResponse()
                        rows, size = pending.rows, 0
                if len(page) >= sql.PAGE_ROWS:
                    yield pending
                    pending = database_pb2.SqlQueryResponse()
                    rows, size = pending.rows, 0
            meta = await cursor.finish(keep=True)
            if meta is not None:
                self._audit(meta)
                _set_meta(pending.meta, meta)
            yield pending
        except BindingdError as e:
            raise _refused(e, self.refusal) from e
        finally:
            if self.cursor is not None:
                await self.cursor.finish(keep=False)  # nothing left to do once finished above

    async def keep(self) -> None:
        """CloseCursor: the caller read enough. The statement's writes are kept (an expired or
        cancelled cursor is rolled back instead) and the rest of its rows skipped."""
        if self.cursor is None:
            return
        try:
            meta = await self.cursor.finish(keep=True)
        except BindingdError as e:
            raise _refused(e, self.refusal) from e
        if meta is not None:
            self._audit(meta)

    def _audit(self, meta: SqlMeta) -> None:
        if meta.changed_db:
            audit_write(self.binding, "query", self.statement.sql[:200], self.peer)


@dataclass
class _Parked:
    """The rest of a Query answer, waiting for its Fetch."""

    binding: str
    answer: _Answer
    messages: AsyncGenerator[database_pb2.SqlQueryResponse, None]
    expiry: asyncio.TimerHandle | None = None


class SqlService(database_pb2_grpc.DatabaseServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._parked: dict[str, _Parked] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _access(self, binding: Binding) -> tuple[SqlAccess, BindingdError | None]:
        """The access of a call, and the reason writes are refused (None when they are not)."""
        try:
            self.runtime.check_writable(binding)
            refusal = None
        except BindingdError as e:
            refusal = e
        timeout = binding.options.get("timeout", sql.DEFAULT_TIMEOUT_S)
        if timeout <= 0:
            raise invalid_argument(f"the sql binding's timeout is {timeout}; give a number of seconds > 0")
        return SqlAccess(read_only=refusal is not None, timeout=float(timeout)), refusal

    @rpc
    async def Query(
        self, request: database_pb2.SqlQueryRequest, context: grpc.aio.ServicerContext
    ) -> database_pb2.SqlQueryResponse:
        statement = _statement(request.statement)
        with self.runtime.use(request.binding, "sql") as served:
            access, refusal = self._access(served.binding)
            answer = _Answer(served.provider, statement, access, served.binding, refusal, context)
            messages = answer.messages()
            parked = False
            try:
                first = await anext(messages)
                if not first.HasField("meta"):
                    first.cursor = self._park(served.binding.name, answer, messages)
                    parked = True
                return first
            finally:
                if not parked:
                    await messages.aclose()

    def _park(
        self, binding: str, answer: _Answer, messages: AsyncGenerator[database_pb2.SqlQueryResponse, None]
    ) -> str:
        cursor = secrets.token_urlsafe(18)
        parked = _Parked(binding, answer, messages)
        parked.expiry = asyncio.get_running_loop().call_later(CURSOR_TTL_S, self._expire, cursor)
        self._parked[cursor] = parked
        return cursor

    def _take(self, request: database_pb2.SqlCursorRequest) -> _Parked:
        parked = self._parked.get(request.cursor)
        if parked is None or parked.binding != request.binding:
            raise invalid_argument(
                f"cursor {request.cursor[:8]}… is unknown, used or expired (a cursor lives"
                f" {CURSOR_TTL_S:.0f} s and is read once); run the query again"
            )
        del self._parked[request.cursor]
        if parked.expiry is not None:
            parked.expiry.cancel()
        return parked

    def _expire(self, cursor: str) -> None:
        parked = self._parked.pop(cursor, None)
        if parked is not None:
            task = asyncio.get_running_loop().create_task(parked.messages.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @rpc_stream
    async def Fetch(
        self, request: database_pb2.SqlCursorRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[database_pb2.SqlQueryResponse]:
        parked = self._take(request)
        try:
            with self.runtime.use(request.binding, "sql"):
                async for message in parked.messages:
                    yield message
        finally:
            await parked.messages.aclose()

    @rpc
    async def CloseCursor(
        self, request: database_pb2.SqlCursorRequest, context: grpc.aio.ServicerContext
    ) -> database_pb2.SqlCloseCursorResponse:
        parked = self._take(request)
        try:
            with self.runtime.use(request.binding, "sql"):
                await parked.answer.keep()
        finally:
            await parked.messages.aclose()
        return database_pb2.SqlCloseCursorResponse()

    @rpc
    async def Batch(
        self, request: database_pb2.SqlBatchRequest, context: grpc.aio.ServicerContext
    ) -> database_pb2.SqlBatchResponse:
        statements = [_statement(s) for s in request.statements]
        with self.runtime.use(request.binding, "sql") as served:
            provider = served.provider
            access, refusal = self._access(served.binding)
            if not statements:
                return database_pb2.SqlBatchResponse()
            sql.refuse_transaction_control(
                [s.sql for s in statements], sql.dialect_of(served.binding.backend_kind)
            )
            try:
                results = await provider.batch(statements, access)
            except BindingdError as e:
                raise _refused(e, refusal) from e
            if any(r.meta.changed_db for r in results):
                audit_write(served.binding, "batch", f"{len(statements)} statements", context)
        return database_pb2.SqlBatchResponse(results=[_result(r) for r in results])

    @rpc
    async def Exec(
        self, request: database_pb2.SqlExecRequest, context: grpc.aio.ServicerContext
    ) -> database_pb2.SqlExecResponse:
        with self.runtime.use(request.binding, "sql") as served:
            provider = served.provider
            access, refusal = self._access(served.binding)
            dialect = sql.dialect_of(served.binding.backend_kind)
            script = sql.split_exec(request.sql, dialect)
            statements = script.statements
            if not statements:
                raise invalid_argument("the script holds no SQL statement")
            sql.refuse_transaction_control(statements, dialect)
            started = time.perf_counter()
            try:
                await provider.exec(statements, access)
            except BindingdError as e:
                raise _refused(e, refusal) from e
            audit_write(served.binding, "exec", f"{len(statements)} statements", context)
        return database_pb2.SqlExecResponse(
            count=script.count, duration=(time.perf_counter() - started) * 1000
        )
