"""PageCursor on its own: how `finish(keep)` ends a provider's page generator on each path."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from bindingd.domain.sql import Page, SqlMeta
from bindingd.providers.sql_cursor import PageCursor

META = SqlMeta(changes=3, changed_db=True)


class Statement:
    """A provider's generator of `pages` pages, recording how it ended."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.ended = ""

    async def rows(self, out: PageCursor) -> AsyncGenerator[Page, None]:
        out.columns = ["n"]
        try:
            for n in range(self.pages):
                yield [(n,)]
                if out.stopping:
                    break
            out.meta = META
            self.ended = "committed"
        except GeneratorExit:
            self.ended = "rolled back"
            raise


async def test_read_to_the_end_gives_the_meta() -> None:
    statement = Statement(3)
    cursor = await PageCursor.open(statement.rows)
    assert cursor.columns == ["n"]
    assert [page async for page in cursor.pages()] == [[(0,)], [(1,)], [(2,)]]
    assert statement.ended == "committed"
    assert await cursor.finish(keep=True) == META
    assert await cursor.finish(keep=False) is None  # a second call does nothing


async def test_no_rows_ends_within_open() -> None:
    statement = Statement(0)
    cursor = await PageCursor.open(statement.rows)
    assert statement.ended == "committed"
    assert [page async for page in cursor.pages()] == []
    assert await cursor.finish(keep=True) == META


async def test_keep_before_the_end_skips_the_rest_and_commits() -> None:
    statement = Statement(5)
    cursor = await PageCursor.open(statement.rows)
    assert await anext(cursor.pages()) == [(0,)]
    assert await cursor.finish(keep=True) == META
    assert statement.ended == "committed"
    assert [page async for page in cursor.pages()] == []


async def test_abandon_before_the_end_rolls_back() -> None:
    statement = Statement(5)
    cursor = await PageCursor.open(statement.rows)
    assert await cursor.finish(keep=False) is None
    assert statement.ended == "rolled back"
    assert await cursor.finish(keep=True) is None


async def test_abandon_on_stop_makes_keep_an_abandon_before_the_end_only() -> None:
    statement = Statement(5)
    cursor = await PageCursor.open(statement.rows)
    cursor.abandon_on_stop = True
    assert await cursor.finish(keep=True) is None
    assert statement.ended == "rolled back"

    statement = Statement(1)
    cursor = await PageCursor.open(statement.rows)
    cursor.abandon_on_stop = True
    assert [page async for page in cursor.pages()] == [[(0,)]]
    assert await cursor.finish(keep=True) == META
