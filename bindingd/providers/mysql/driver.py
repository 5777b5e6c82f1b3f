"""The aiomysql calls bindingd makes past its public API, one function per use, each with a fallback
on the public API.

Each private entry point is checked once for the shape called here: the methods at import, the
connection's streams on the first connection. One that moved (an aiomysql upgrade past the pin
in pyproject.toml) makes its function take the public way, with a warning naming the aiomysql
version the first time it does. The fallbacks answer the same, slower, except one: no public
call turns CLIENT_MULTI_STATEMENTS off, and one statement per query is what keeps a read-only
call read-only, so without the private hook the connection is checked on the server and, when
it would run several statements, refused (bindingd then serves no MySQL call rather than lose
the guarantee). tests/providers/test_mysql_driver.py fails when an entry point moves, and runs
the real server through the fallbacks.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aiomysql
import pymysql
import structlog
from pymysql.constants import CLIENT

from bindingd.errors import BindingdError, backend_unavailable
from bindingd.providers.private_api import Fallbacks, problems, signature_problem

log = structlog.get_logger("bindingd.mysql")

COM_RESET_CONNECTION = 0x1F  # MySQL 5.7.3+, MariaDB 10.2.4+; PyMySQL has no name for it
# The server's answer to two statements in one query when multi-statements are off.
PARSE_ERROR = 1064


def private_api_problems() -> dict[str, str]:
    """Each use below whose private method is not the shape called here, and why."""
    init = inspect.signature(aiomysql.Connection.__init__).parameters
    return problems(
        {
            "single_statements": [
                signature_problem(aiomysql.Connection, "_request_authentication", ()),
                None if "client_flag" in init else "aiomysql.Connection() takes no client_flag",
            ],
            "connect": [signature_problem(aiomysql.Connection, "_connect", ())],
            "reset_session": [
                signature_problem(aiomysql.Connection, "_execute_command", ("command", "sql")),
                signature_problem(aiomysql.Connection, "_read_ok_packet", ()),
            ],
        }
    )


def instance_problems(conn: aiomysql.Connection) -> dict[str, str]:
    """What only a connected connection shows: the stream reader and writer the uses below read."""
    reader = getattr(conn, "_reader", None)
    writer = getattr(conn, "_writer", None)
    found: dict[str, list[str | None]] = {
        "still_open": [
            None if callable(getattr(reader, "at_eof", None)) else "Connection._reader has no at_eof()"
        ],
        "abort": [
            None
            if callable(getattr(getattr(writer, "transport", None), "abort", None))
            else "Connection._writer has no transport.abort()"
        ],
    }
    return problems(found)


FALLBACKS = Fallbacks("aiomysql", aiomysql.__version__, log, private_api_problems())
_instance_checked = False


class SingleStatementConnection(aiomysql.Connection):  # type: ignore[misc]
    """A connection that sends one statement per query: aiomysql always adds
    CLIENT_MULTI_STATEMENTS to the flags it announces, so it is taken out here, just before the
    handshake answer is built. (CLIENT_MULTI_RESULTS stays: a CALL needs it to answer rows.)

    Private: `_request_authentication` is the one step between aiomysql forcing the flag on and
    sending it. Fallback: none on the public API; the override then does nothing and `connect()`
    refuses a connection the server shows runs several statements per query."""

    async def _request_authentication(self, *args: Any, **kwargs: Any) -> None:
        if "single_statements" not in FALLBACKS.problems:
            self.client_flag &= ~CLIENT.MULTI_STATEMENTS
        await super()._request_authentication(*args, **kwargs)


async def connect(conn: SingleStatementConnection) -> None:
    """Connect `conn` (made, not yet connected), one statement per query, or refuse to.

    Private: `_connect()` is what `aiomysql.connect()` runs on the Connection it makes itself; it
    is the way to connect one of ours. Fallback: the public `ping(reconnect=True)`, which connects
    a closed connection, then pings: one round trip more per new connection."""
    global _instance_checked
    if FALLBACKS.taken("connect", "one round trip more per new connection (COM_PING)"):
        await conn.ping(reconnect=True)
    else:
        await conn._connect()
    if not _instance_checked:
        _instance_checked = True
        for use, why in instance_problems(conn).items():
            FALLBACKS.problems.setdefault(use, why)
    if FALLBACKS.taken("single_statements", "a two-statement probe per new connection; refused when it runs"):
        if await multi_statements_on(conn):
            raise _refusal(FALLBACKS.problems["single_statements"])
    elif conn.client_flag & CLIENT.MULTI_STATEMENTS:
        raise _refusal("the override of Connection._request_authentication was not called")


def _refusal(why: str) -> BindingdError:
    return backend_unavailable(
        f"{FALLBACKS.driver} keeps CLIENT_MULTI_STATEMENTS on ({why}), so one query could carry "
        "several statements (a read-only call could COMMIT and write): bindingd refuses to serve "
        "MySQL rather than lose that guarantee; install the aiomysql version pyproject.toml pins"
    )


async def multi_statements_on(conn: aiomysql.Connection) -> bool:
    """Whether the server runs two statements sent in one query on `conn` (public API only)."""
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT 1; SELECT 2")
            while await cursor.nextset():
                pass
    except pymysql.err.ProgrammingError as e:
        if e.args and e.args[0] == PARSE_ERROR:
            return False
        raise
    return True


async def still_open(conn: aiomysql.Connection, wait: float) -> bool:
    """Whether a pooled connection may be handed out again: open, and not closed by the server.

    Private: the connection's stream reader has seen the server close it (EOF, after a restart or
    wait_timeout) without a round trip. Fallback: a public `ping()` per reuse (one round trip
    more per call): a connection the server closed fails it and is not reused; one that does not
    answer within `wait` (a frozen network) is dropped and the TimeoutError raised, as the
    call's first statement on it would have timed out."""
    if conn.closed:
        return False
    if FALLBACKS.taken("still_open", "one round trip more per call (COM_PING)"):
        try:
            await asyncio.wait_for(conn.ping(reconnect=False), wait)
        except TimeoutError:
            abort(conn)
            raise
        except Exception:
            return False
        return True
    reader = conn._reader
    return reader is not None and not reader.at_eof()


async def reset_session(conn: aiomysql.Connection) -> None:
    """Clear what a call left on its session (user variables, SETs, temporary tables, locks).

    Private: COM_RESET_CONNECTION, one round trip; aiomysql has no call that sends it. Fallback:
    the connection is closed instead (the pool drops it and opens a fresh session for the next
    call): a connection and login per call."""
    if FALLBACKS.taken("reset_session", "a new connection per call (the session is closed, not reset)"):
        abort(conn)
        return
    await conn._execute_command(COM_RESET_CONNECTION, b"")
    await conn._read_ok_packet()


def abort(conn: aiomysql.Connection) -> None:
    """Close at once, without waiting to flush what is unsent (the network may be frozen).

    Private: the transport of the connection's stream writer, whose abort() drops what is
    unsent; `close()` would wait to flush it. Fallback: `close()` alone: a connection to a frozen
    server lingers (in the background) until the kernel gives up on it."""
    if not FALLBACKS.taken("abort", "a dropped connection waits to flush before it closes"):
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            writer.transport.abort()
    conn.close()
