"""The `SqlCursor` the SQL providers share, driven by a generator of each provider's own.

A provider writes its query as one async generator, so that its transaction, its cursor and its
connection are released by `async with` and `finally` on every path; this class gives it the
shape of the contract (`bindingd.domain.sql.SqlCursor`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from bindingd.domain.sql import Page, SqlMeta


class PageCursor:
    """A `SqlCursor` over a provider's generator of row pages.

    The generator runs the statement: it sets `columns` before its first page and `meta` once
    the statement has ended (committed). After each page it looks at `stopping`, set when the
    caller read enough (`finish(keep=True)` before the last page): it then skips the rest of the
    rows, keeps what the statement did and sets `meta` (or leaves it None when it has none to
    tell). Closing the generator (`finish(keep=False)`) abandons the statement: the provider
    cancels it on the server and rolls it back.
    """

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.meta: SqlMeta | None = None
        self.stopping = False
        # Set by a provider for which stopping early has nothing to keep and would cost the rest
        # of the result (a read-only MySQL call): finish(keep=True) then abandons the statement.
        self.abandon_on_stop = False
        self._rows: AsyncGenerator[Page, None] | None = None
        self._first: Page | None = None
        # The generator ran to its end (the statement has ended), or finish() was called.
        self._ended = False
        self._finished = False

    @classmethod
    async def open(cls, rows: Callable[[PageCursor], AsyncGenerator[Page, None]]) -> PageCursor:
        """The cursor of `rows(cursor)`, run up to its first page (or its end): its columns are
        known then, and a statement that fails raises here."""
        cursor = cls()
        cursor._rows = rows(cursor)
        cursor._first = await anext(cursor._rows, None)
        cursor._ended = cursor._first is None
        return cursor

    def pages(self) -> PageCursor:
        return self

    def __aiter__(self) -> PageCursor:
        return self

    async def __anext__(self) -> Page:
        assert self._rows is not None, "PageCursor.open() makes a cursor"
        first, self._first = self._first, None
        if first is not None:
            return first
        try:
            return await anext(self._rows)
        except StopAsyncIteration:
            self._ended = True
            raise

    async def finish(self, keep: bool) -> SqlMeta | None:
        assert self._rows is not None, "PageCursor.open() makes a cursor"
        if self._finished:
            return None
        self._finished = True
        self._first = None
        try:
            if not keep or (self.abandon_on_stop and not self._ended):
                return None
            self.stopping = True
            async for _ in self._rows:  # the provider skips the rest and commits
                pass
            return self.meta
        finally:
            await self._rows.aclose()
