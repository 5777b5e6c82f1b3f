"""CloudflareSql: a D1 database of the account, through the proxy Worker's binding of the same name
(or `remote_binding:`). The dialect is SQLite's.

Read-only is refused, not served: D1 has no read-only transaction and its binding cannot tell
a statement's effect before running it, so neither the daemon nor the Worker can keep a
caller's SQL from writing. A read-only call (a binding with `access: read-only`, or any call in
a protected env) fails closed with PERMISSION_DENIED naming the binding, rather than risk a write.

A statement's time limit ends the call (BACKEND_TIMEOUT), but D1 cannot stop a statement it runs:
it finishes on D1 (and a write it made is kept).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator
from typing import Any

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
    normalize,
    translate,
)
from bindingd.errors import BindingdError, Reason, backend_timeout, permission_denied
from bindingd.providers.cloudflare.kv import CloudflareBase
from bindingd.providers.connections import ProviderContext
from bindingd.providers.sql_cursor import PageCursor

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _json_int(text: str) -> int | float:
    """A JSON integer from the Worker. D1 hands numbers over as JavaScript doubles, and JSON
    writes a double of integral value without an exponent: -2**63 arrives as
    -9223372036854776000, which is past int64. Such a number is the double it was (as D1
    answers it in a Worker), not an integer SQLite could hold, nor text."""
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else float(value)


def _param(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$blob": base64.urlsafe_b64encode(bytes(value)).decode()}
    return value


def _cell(value: object) -> object:
    if isinstance(value, dict) and isinstance(value.get("$blob"), str):
        return base64.b64decode(value["$blob"])
    return normalize(value)


def _meta(m: dict[str, Any] | None) -> SqlMeta:
    m = m or {}
    return SqlMeta(
        duration=float(m.get("duration") or 0.0),
        changes=int(m.get("changes") or 0),
        last_row_id=int(m.get("last_row_id") or 0),
        changed_db=bool(m.get("changed_db")),
        rows_read=int(m.get("rows_read") or 0),
        rows_written=int(m.get("rows_written") or 0),
        size_after=m.get("size_after"),
    )


def _result(r: dict[str, Any]) -> SqlResult:
    columns = list(r.get("columns") or [])
    rows = [tuple(_cell(v) for v in row) for row in r.get("rows") or []]
    return SqlResult(columns, rows, _meta(r.get("meta")))


class CloudflareSql(CloudflareBase):
    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        super().__init__(binding, context)
        self.name = binding.name

    async def check(self) -> str:
        await self._call("query", {"sql": "SELECT 1", "params": []}, 30.0)
        return f"proxy Worker {self.client.url}, D1 binding {self.remote}"

    def _refuse_read_only(self, access: SqlAccess) -> None:
        if access.read_only:
            raise permission_denied(
                f'sql binding "{self.name}" is read-only here (access: read-only, or a protected '
                "env), and a Cloudflare D1 database cannot enforce read-only: D1 has no read-only "
                "transaction, so bindingd refuses every call rather than risk a write. Drop "
                "`access: read-only` (and use a non-protected env) to use this binding, or read "
                "a copy of the data through a `sqlite` connection"
            )

    async def _call(self, op: str, args: dict[str, Any], timeout: float) -> Any:
        try:
            _, data, _ = await asyncio.wait_for(self.client.call(self.remote, op, args), timeout)
        except TimeoutError:
            raise backend_timeout(
                f'sql binding "{self.name}": the statement did not finish within {timeout:g}s '
                "(D1 cannot stop a statement: it may still finish there)"
            ) from None
        return json.loads(data, parse_int=_json_int)

    @staticmethod
    def _statement(s: SqlStatement) -> dict[str, Any]:
        sql, params = translate(s.sql, "sqlite", list(s.params))  # type: ignore[arg-type]
        return {"sql": sql, "params": [_param(p) for p in params]}

    async def query(self, statement: SqlStatement, access: SqlAccess) -> SqlCursor:
        self._refuse_read_only(access)
        r = _result(await self._call("rows", self._statement(statement), access.timeout))

        async def rows(cursor: PageCursor) -> AsyncGenerator[Page, None]:
            cursor.columns = r.columns
            for i in range(0, len(r.rows), PAGE_ROWS):
                if cursor.stopping:
                    break
                yield r.rows[i : i + PAGE_ROWS]
            cursor.meta = r.meta

        return await PageCursor.open(rows)

    async def _batch(self, statements: list[dict[str, Any]], access: SqlAccess) -> list[SqlResult]:
        self._refuse_read_only(access)
        try:
            r = await self._call("rowsBatch", {"statements": statements}, access.timeout)
        except BindingdError as e:
            # The Worker names the failing statement: "<index>\x1f<D1's message>".
            index, sep, message = e.message.partition("\x1f")
            if e.reason == Reason.SQL_ERROR and sep and index.isdigit():
                raise batch_error(int(index), BindingdError(e.reason, message, backend=e.backend)) from None
            raise
        return [_result(x) for x in r["results"]]

    async def batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        self._refuse_read_only(access)
        translated = []
        for i, s in enumerate(statements):
            try:
                translated.append(self._statement(s))
            except BindingdError as e:
                raise batch_error(i, e) from None
        return await self._batch(translated, access)

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        await self._batch([{"sql": s, "params": []} for s in statements], access)
