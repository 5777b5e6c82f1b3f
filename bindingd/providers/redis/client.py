"""The client of a redis connection entry: one pooled redis-py client, shared by its bindings.

Also what every provider on redis needs: the mapping of redis-py's errors to the error table.
"""

from __future__ import annotations

import os
import re

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bindingd.config.model import Connection
from bindingd.config.urls import connection_address
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable, permission_denied
from bindingd.providers.connections import PoolFigures

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 50
# What redis-py raises for a failed call; `map_error` turns each into the error table's reason.
FAILURES = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ResponseError)


def timeout_of(connection: Connection) -> float:
    return float(connection.options.get("timeout", DEFAULT_TIMEOUT_S))


async def open_client(connection: Connection) -> aioredis.Redis:
    """One pooled client per connection entry. It connects on first use, not here.

    The pool is bounded (`max_connections`, default 50) and a call waits up to `timeout` for a
    free connection, so a burst of calls queues instead of failing.
    """
    timeout = timeout_of(connection)
    pool = aioredis.BlockingConnectionPool.from_url(
        connection.options["url"],
        max_connections=max(1, int(connection.options.get("max_connections", DEFAULT_MAX_CONNECTIONS))),
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One immediate retry on a fresh connection: after a Redis restart the pooled sockets
        # are dead, and the first call on each must not fail because of it.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


def pool_figures(client: aioredis.Redis) -> PoolFigures:
    """redis-py keeps its pool's sockets in two collections (free and in use); it reconnects a
    dropped socket in place, which it does not count, so no reconnects figure."""
    pool = client.connection_pool
    free = sum(1 for c in getattr(pool, "_available_connections", ()) if c is not None)
    in_use = len(getattr(pool, "_in_use_connections", ()))
    return PoolFigures(size=free + in_use, in_use=in_use)


async def close_client(client: aioredis.Redis) -> None:
    await client.aclose()


def map_error(e: BaseException, connection: Connection) -> BindingdError:
    """A redis failure as the error table's reason; never the URL, which may hold a password."""
    if isinstance(e, BindingdError):
        return e
    name, where = connection.name, connection_address(connection)
    if isinstance(e, redis_errors.AuthenticationError):
        return BindingdError(
            Reason.AUTH_FAILED,
            f'authentication failed for connection "{name}" (redis at {where}): '
            f"{e}; check the user and password in its url",
        )
    if isinstance(e, redis_errors.NoPermissionError):
        return permission_denied(f'redis at {where} refused the command for connection "{name}": {e}')
    if isinstance(e, redis_errors.TimeoutError):
        return backend_timeout(
            f'redis at {where} did not answer within {timeout_of(connection):g}s (connection "{name}")'
        )
    if isinstance(e, redis_errors.ConnectionError):
        if str(e).startswith("No connection available"):
            return backend_timeout(
                f"every pooled connection to redis at {where} stayed busy for "
                f'{timeout_of(connection):g}s (connection "{name}"); raise its max_connections'
            )
        return backend_unavailable(f"cannot reach redis at {where}: {_reason(e)}")
    text = str(e)
    if text.startswith("NOAUTH"):
        return BindingdError(
            Reason.AUTH_FAILED,
            f'redis at {where} needs a password: put it in the url of connection "{name}"',
        )
    if text.startswith("READONLY"):
        return permission_denied(f"redis at {where} is a read-only replica: {text}")
    return backend_unavailable(f"redis at {where} refused the command: {text}")


def _reason(e: Exception) -> str:
    """Why a connection failed, in a few words ("connection refused"), from redis-py's text."""
    text = str(e).strip().rstrip(".")
    match = re.match(r"Error (-?\d+) connecting to \S+?\. (.*)", text)
    if match:
        number = int(match.group(1))
        return os.strerror(number).lower() if number > 0 else match.group(2).lower()
    return text or type(e).__name__
