"""The client of a rabbitmq connection entry: one robust (self-reconnecting) AMQP connection,
shared by its bindings.

Also what every provider on rabbitmq needs: the mapping of aio-pika's errors to the error table.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import AbstractRobustConnection

from bindingd.config.model import Connection
from bindingd.config.urls import connection_address, safe_address
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable, describe
from bindingd.providers.connections import PoolFigures

CONNECT_TIMEOUT_S = 3.0
# How long closing the connection may take at shutdown.
CLOSE_TIMEOUT_S = 5.0
OPERATION_TIMEOUT_S = 10.0
# What aio-pika raises for a failed call; `map_error` turns each into the error table's reason.
FAILURES = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
    RuntimeError,
)


class RabbitClient:
    """One robust (self-reconnecting) AMQP connection per connection entry, opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        # For messages: never the credentials the URL may hold.
        self.where = safe_address("rabbitmq", url)
        self._connection: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.reconnects = 0

    async def connection(self) -> AbstractRobustConnection:
        async with self._lock:
            if self._closed:
                raise backend_unavailable(f"the connection to rabbitmq at {self.where} is closed")
            if self._connection is None or self._connection.is_closed:
                try:
                    self._connection = await _connect_robust(self.url)
                    self._connection.reconnect_callbacks.add(self._reconnected)
                except aio_pika.exceptions.ProbableAuthenticationError as e:
                    raise BindingdError(
                        Reason.AUTH_FAILED,
                        f"rabbitmq at {self.where} refused the credentials: {describe(e)}",
                    ) from None
                except Exception as e:
                    raise backend_unavailable(
                        f"cannot reach rabbitmq at {self.where}: {describe(e)}"
                    ) from None
            return self._connection

    def _reconnected(self, *_: object) -> None:
        self.reconnects += 1

    def figures(self) -> PoolFigures:
        """One robust connection, which every call uses."""
        up = int(self._connection is not None and not self._connection.is_closed)
        return PoolFigures(size=up, in_use=up, reconnects=self.reconnects)

    async def close(self) -> None:
        self._closed = True
        # After a connect under way (a health check's), which ends within CONNECT_TIMEOUT_S:
        # else the connection it makes would be left open, with nobody to close it.
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await _close(connection)


async def _connect_robust(url: str) -> AbstractRobustConnection:
    """aio_pika.connect_robust, except that a connect that fails or is cancelled closes the
    connection it made. Unclosed, that connection's reconnect task lives on and shrugs off a
    cancel ("Connection attempt cancelled. Reconnecting"), so the event loop never finishes
    closing: a daemon stopped during a health check's first connect hung its test for 300 s."""
    made: list[AbstractRobustConnection] = []

    def make(*args: Any, **kwargs: Any) -> AbstractRobustConnection:
        made.append(aio_pika.RobustConnection(*args, **kwargs))
        return made[-1]

    try:
        return await aio_pika.connect_robust(
            url, timeout=CONNECT_TIMEOUT_S, reconnect_interval=0.5, connection_class=make
        )
    except BaseException:
        for connection in made:
            await _close(connection)
        raise


async def _close(connection: AbstractRobustConnection) -> None:
    # Bounded: a stop of the daemon must never hang on a backend that went away.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)


async def open_client(connection: Connection) -> RabbitClient:
    return RabbitClient(connection.options["url"])


def pool_figures(client: RabbitClient) -> PoolFigures:
    return client.figures()


async def close_client(client: RabbitClient) -> None:
    await client.close()


def map_error(e: BaseException, connection: Connection) -> BindingdError:
    """An AMQP failure as the error table's reason; never the URL, which may hold credentials."""
    if isinstance(e, BindingdError):
        return e
    where = connection_address(connection)
    if isinstance(e, asyncio.TimeoutError):
        return backend_timeout(f"rabbitmq at {where} did not answer within {OPERATION_TIMEOUT_S:.0f}s")
    return backend_unavailable(f"rabbitmq at {where} failed: {describe(e)}")
