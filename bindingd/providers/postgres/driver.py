"""The asyncpg calls bindingd makes past its public API, one function per use, each with a fallback
on the public API.

Each private entry point is checked once, at import, for the shape called here (present, a
coroutine, the parameters passed). One that moved (an asyncpg upgrade past the pin in
pyproject.toml) makes its function take the public way, with a warning naming the asyncpg
version the first time it does: the answers stay the same, slower. tests/providers/
test_postgres_driver.py fails when an entry point moves, and runs the real server through the
fallbacks.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from asyncpg.prepared_stmt import PreparedStatement
from asyncpg.protocol import Protocol

from bindingd.providers.private_api import Fallbacks, attribute_problem, problems, signature_problem

log = structlog.get_logger("bindingd.postgres")

# asyncpg's protocol methods, as called below (the arguments after the statement).
_BIND_EXECUTE = ("state", "args", "portal_name", "limit", "return_extra", "timeout")
_EXECUTE = ("state", "portal_name", "limit", "return_extra", "timeout")


def private_api_problems() -> dict[str, str]:
    """Each use below whose private entry point is not the shape called here, and why."""
    return problems(
        {
            "prepare": [
                signature_problem(asyncpg.Connection, "_prepare", ("query",), ("timeout", "use_cache"))
            ],
            "bind_execute": [
                attribute_problem(asyncpg.Connection, "_protocol"),
                attribute_problem(PreparedStatement, "_state"),
                signature_problem(Protocol, "bind_execute", _BIND_EXECUTE),
            ],
            "run_dropping_rows": [
                attribute_problem(asyncpg.Connection, "_protocol"),
                signature_problem(asyncpg.Connection, "_get_statement", ("query", "timeout"), ("use_cache",)),
                signature_problem(Protocol, "bind_execute", _BIND_EXECUTE),
                signature_problem(Protocol, "execute", _EXECUTE),
            ],
        }
    )


FALLBACKS = Fallbacks("asyncpg", asyncpg.__version__, log, private_api_problems())


async def prepare(conn: asyncpg.Connection, sql: str, wait: float) -> PreparedStatement:
    """`sql` prepared on `conn`, from the connection's statement cache (a stale one fails when
    bound: the caller drops the caches and runs the call again).

    Private: `Connection._prepare(use_cache=True)` is the public `prepare()` through asyncpg's own
    statement cache (the one `fetch()` uses): a statement is parsed once per connection rather
    than once per call, and the caller still gets the PreparedStatement whose parameter types
    drive the coercion of the values. Fallback: the public `prepare()`, uncached: one Parse and
    Describe round trip more per statement and call."""
    if FALLBACKS.taken("prepare", "one round trip more per statement (no statement cache)"):
        return await conn.prepare(sql, timeout=wait)
    return await conn._prepare(sql, timeout=wait, use_cache=True)


async def bind_execute(
    conn: asyncpg.Connection, prepared: PreparedStatement, args: list[Any], limit: int, wait: float
) -> tuple[list[asyncpg.Record], Any, bool]:
    """Bind `prepared` to `args` and run it for at most `limit` rows on the unnamed portal, in one
    round trip: the rows, the command tag and whether the statement completed. Not completed
    means not answered here: the caller runs the statement its general way (the rows are
    dropped; a read-only session's statement wrote nothing).

    Private: the protocol's bind + execute with a row limit, which no public call has: `fetch()`
    reads every row (a large result would be held whole), and a public cursor needs a
    transaction block, which a read on a binding that may write skips to save its BEGIN.
    Fallback: nothing is run and nothing is answered, so every read goes the caller's general
    way (a transaction and a cursor): two round trips more per read, the same answer."""
    if FALLBACKS.taken("bind_execute", "every read takes the general way (BEGIN, cursor, COMMIT)"):
        return [], "", False
    return await conn._protocol.bind_execute(prepared._state, args, "", limit, True, wait)


async def run_dropping_rows(conn: asyncpg.Connection, sql: str, page: int, wait: float) -> None:
    """Run one statement of a script in the extended protocol, which carries one command at most
    (the server refuses "multiple commands in a prepared statement"), its rows read `page` at a
    time and dropped.

    Private: an unnamed statement, kept out of the statement cache (a script's DDL runs once),
    bound and run on the unnamed portal through the protocol: one round trip to parse, one per
    page. Fallback: the public `prepare()` (a named statement, closed once collected) and its
    rows through a cursor, a page per round trip, inside the transaction (outside one, which only
    a read-write script that ended its own transaction reaches, `fetch()` holds them whole)."""
    if FALLBACKS.taken(
        "run_dropping_rows", "a named statement per script statement; rows held whole outside a transaction"
    ):
        statement = await conn.prepare(sql, timeout=wait)
        if statement.get_attributes() and conn.is_in_transaction():
            async for _ in statement.cursor(prefetch=page, timeout=wait):
                pass
        else:
            await statement.fetch(timeout=wait)
        return
    protocol = conn._protocol
    state = await conn._get_statement(sql, wait, use_cache=False)
    _, _, done = await protocol.bind_execute(state, [], "", page, True, wait)
    while not done:
        _, _, done = await protocol.execute(state, "", page, True, wait)
