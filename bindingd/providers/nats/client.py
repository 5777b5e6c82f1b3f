"""The client of a nats connection entry: one NATS connection, shared by its bindings.

Also what every provider on nats needs: the mapping of nats-py's errors to the error table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsConnection
from nats.js import JetStreamContext

from bindingd.config.model import Connection
from bindingd.config.urls import connection_address, safe_address
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable, describe
from bindingd.providers.connections import PoolFigures

log = structlog.get_logger("bindingd.queue.nats")

CONNECT_TIMEOUT_S = 2.0
FIRST_CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 5.0
# How long closing the connection may take at shutdown.
CLOSE_TIMEOUT_S = 5.0
# What nats-py raises for a failed call; `map_error` turns each into the error table's reason.
FAILURES = (
    nats.errors.Error,
    nats.js.errors.Error,
    asyncio.TimeoutError,
    OSError,
)


class NatsClient:
    """One NATS connection per connection entry, opened on first use (readiness never waits)."""

    def __init__(self, url: str) -> None:
        self.url = url
        # For messages: never the credentials the URL may hold.
        self.where = safe_address("nats", url)
        self.reconnects = 0
        self._nc: NatsConnection | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._closing = False

    async def nak_by_reply(self, reply: str) -> None:
        """Nak a message through the reply subject of an earlier delivery. JetStream takes a nak
        for any delivery of a message still pending; nats-py's Msg refuses a second nak on the
        same handle, hence the raw publish (see NatsQueue._nak_lost_redeliveries)."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.publish(reply, b"-NAK")

    async def jetstream(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and not self._nc.is_closed:
            return self._js  # the hot path: connected (or reconnecting by itself)
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                # Once connected the client reconnects forever; the first connect is bounded
                # here (nats-py would retry it forever too), so a call fails instead of hanging.
                nc = NatsConnection()
                # nats-py retries the first connect forever without saying why it fails: give it
                # one retry (it then raises NoServersError) and keep the last cause to name it.
                causes: list[Exception] = []

                async def keep_cause(e: Exception) -> None:
                    causes[:] = [e]  # the last only: this callback lives as long as the connection
                    await self._quiet(e)

                try:
                    await asyncio.wait_for(
                        nc.connect(
                            self.url,
                            connect_timeout=CONNECT_TIMEOUT_S,
                            allow_reconnect=True,
                            max_reconnect_attempts=1,
                            reconnect_time_wait=0.5,
                            error_cb=keep_cause,
                            disconnected_cb=self._disconnected,
                            reconnected_cb=self._reconnected,
                        ),
                        FIRST_CONNECT_TIMEOUT_S,
                    )
                except Exception as e:
                    with contextlib.suppress(Exception):
                        await nc.close()
                    if isinstance(e, nats.errors.AuthorizationError):
                        raise BindingdError(
                            Reason.AUTH_FAILED,
                            f"nats at {self.where} refused the credentials: {describe(e)}",
                        ) from None
                    if isinstance(e, nats.errors.NoServersError) and causes:
                        e = causes[-1]
                    if isinstance(e, asyncio.TimeoutError):
                        e = TimeoutError(f"no connection within {FIRST_CONNECT_TIMEOUT_S:.0f}s")
                    raise backend_unavailable(f"cannot reach nats at {self.where}: {_cause(e)}") from None
                # Connected: from now on the client reconnects forever by itself.
                nc.options["max_reconnect_attempts"] = -1
                self._nc = nc
            self._js = self._nc.jetstream(timeout=REQUEST_TIMEOUT_S)
            return self._js

    @property
    def connected(self) -> bool:
        """False while the client reconnects (nats-py then holds publishes and fetches until
        they time out), or before the first connect."""
        return self._nc is not None and self._nc.is_connected

    async def _quiet(self, e: Exception) -> None:
        log.debug("nats client error", error=describe(e), server=self.where)

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("nats disconnected; reconnecting", server=self.where)

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info("nats reconnected", server=self.where)

    async def close(self) -> None:
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            # Bounded: closing flushes, which waits on a server that may be gone (a stop of the
            # daemon must never hang on a backend).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), CLOSE_TIMEOUT_S)


async def open_client(connection: Connection) -> NatsClient:
    return NatsClient(connection.options["url"])


def pool_figures(client: NatsClient) -> PoolFigures:
    """One multiplexed connection, which every call uses: size and in use are both 1 while it
    is connected."""
    up = int(client.connected)
    return PoolFigures(size=up, in_use=up, reconnects=client.reconnects)


async def close_client(client: NatsClient) -> None:
    await client.close()


def map_error(e: BaseException, connection: Connection) -> BindingdError:
    """A NATS failure as the error table's reason; never the URL, which may hold credentials."""
    if isinstance(e, BindingdError):
        return e
    where = connection_address(connection)
    if isinstance(e, asyncio.TimeoutError | nats.errors.TimeoutError):
        return backend_timeout(f"nats at {where} did not answer in time: {describe(e)}")
    return backend_unavailable(f"nats at {where} failed: {describe(e)}")


def _cause(e: BaseException) -> str:
    """Why a connect failed, in a few words ("connection refused"), as the other providers say it
    (asyncio's OSError reads "[Errno 111] Connect call failed ('127.0.0.1', 4222)")."""
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno).lower()
    return describe(e)
