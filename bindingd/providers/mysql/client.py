"""The client of a mysql connection entry: a small pool of PyMySQL connections, shared by its
bindings, and what every provider on mysql needs: the DSN read as connect options, and the
mapping of the server's and the driver's errors to the error table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql

from bindingd.config.model import Connection
from bindingd.config.urls import connection_address
from bindingd.domain.sql import sql_error
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable, permission_denied
from bindingd.providers.connections import PoolFigures

if TYPE_CHECKING:
    from bindingd.providers.mysql.sql import _Pool

CONNECT_TIMEOUT_S = 10.0
AUTH_CODES = frozenset({1044, 1045, 1698, 1251})
UNAVAILABLE_CODES = frozenset({1040, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055})
TIMEOUT_CODES = frozenset({1205, 1317, 1969, 3024})
READ_ONLY_CODES = frozenset({1792, 1290})


def connect_options(connection: Connection) -> dict[str, Any]:
    """aiomysql.connect keywords from a `mysql://user:password@host:port/db?opt=v` DSN."""
    parts = urlsplit(str(connection.options["dsn"]))
    options: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "db": unquote(parts.path.lstrip("/")) or None,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    for key, value in parse_qsl(parts.query):
        if key in ("charset", "unix_socket"):
            options[key] = value
    return options


def map_error(e: BaseException, connection: Connection) -> BindingdError:
    """A PyMySQL failure as the error table's reason; never the DSN, which may hold a password."""
    if isinstance(e, BindingdError):
        return e
    name, where = connection.name, connection_address(connection)
    code = e.args[0] if isinstance(e, pymysql.err.MySQLError) and e.args else None
    message = e.args[1] if isinstance(e, pymysql.err.MySQLError) and len(e.args) > 1 else str(e)
    if code in AUTH_CODES:
        return BindingdError(Reason.AUTH_FAILED, f'authentication failed for connection "{name}": {message}')
    if code in READ_ONLY_CODES:
        return permission_denied(f"MySQL refused the write: {message}")
    if code in TIMEOUT_CODES:
        return backend_timeout(f"MySQL stopped the statement: {message}")
    if isinstance(e, TimeoutError):
        return backend_timeout(f'MySQL at {where} did not answer in time (connection "{name}")')
    if code in UNAVAILABLE_CODES or isinstance(e, OSError | pymysql.err.InterfaceError):
        return backend_unavailable(
            f'cannot reach MySQL at {where} (connection "{name}"): {message or type(e).__name__}'
        )
    if isinstance(e, pymysql.err.MySQLError):
        return sql_error(f"({code}) {message}" if code else message)
    return backend_unavailable(f'MySQL failed (connection "{name}"): {type(e).__name__}: {e}')


def is_connection_error(e: BaseException) -> bool:
    if isinstance(e, OSError | pymysql.err.InterfaceError):
        return True
    return isinstance(e, pymysql.err.MySQLError) and bool(e.args) and e.args[0] in UNAVAILABLE_CODES


async def open_client(connection: Connection) -> _Pool:
    """The entry's pool. Connections open on demand: creating the pool connects to nothing."""
    # The pool lives beside the driver calls it makes (sql.py), which import this module.
    from bindingd.providers.mysql.sql import _Pool

    return _Pool(connect_options(connection), max(int(connection.options.get("max_size") or 10), 1))


def pool_figures(pool: _Pool) -> PoolFigures:
    return pool.figures()


async def close_client(pool: _Pool) -> None:
    await pool.close(10)
