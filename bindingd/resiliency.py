"""A connection's resiliency policy applied to its providers' calls (the policy itself, and its
defaults, are in bindingd.domain.resiliency).

The runtime wraps each provider of a binding with a connection in a `Guarded` proxy. The proxy
knows which provider methods reach the backend, their operation class (read, write, consume)
and whether they are idempotent; other attributes pass through. Each such call is bounded by
the class's timeout, retried with backoff when it is idempotent and the backend was unavailable
(a refused or reset connection), and counted by the connection's circuit breaker (unavailable
or timed out), shared by every binding of that connection. An open breaker answers at once
with BackendUnavailable naming the connection and when it will be tried again; once that time
has come, one call goes through as a probe (half-open) and its outcome closes the breaker or
opens it again.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bindingd.config.model import Connection
from bindingd.domain.resiliency import CONSUME, READ, WRITE, Resiliency
from bindingd.errors import BindingdError, Reason

log = structlog.get_logger("bindingd.resiliency")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Failures that say the backend, not the call, is the problem: retried, and counted by the breaker.
BACKEND_REASONS = frozenset({Reason.BACKEND_UNAVAILABLE, Reason.BACKEND_TIMEOUT})
# A SQL statement has its own timeout (cancelled on the server, then BACKEND_TIMEOUT); the
# policy's bound leaves it this much longer to say so first.
SQL_MARGIN_S = 2.0


def _sql_read_only(args: tuple[Any, ...]) -> bool:
    access = args[1] if len(args) > 1 else None
    return bool(getattr(access, "read_only", False))


# (binding type, method) → (operation class, idempotent: a bool, or decided by the arguments).
# Methods that stream a caller's body to the backend (object put, upload_part) are not listed:
# their duration is the caller's, and their body cannot be sent twice.
OPS: dict[tuple[str, str], tuple[str, bool | Callable[[tuple[Any, ...]], bool]]] = {
    ("kv", "get"): (READ, True),
    ("kv", "get_many"): (READ, True),
    ("kv", "list"): (READ, True),
    ("kv", "put"): (WRITE, False),
    ("kv", "delete"): (WRITE, False),
    ("objects", "head"): (READ, True),
    ("objects", "get"): (READ, True),
    ("objects", "list"): (READ, True),
    ("objects", "delete"): (WRITE, False),
    ("objects", "create_multipart_upload"): (WRITE, False),
    ("objects", "complete_multipart_upload"): (WRITE, False),
    ("objects", "abort_multipart_upload"): (WRITE, False),
    ("sql", "query"): (READ, _sql_read_only),
    ("sql", "batch"): (READ, _sql_read_only),
    ("sql", "exec"): (WRITE, False),
    ("queue", "send"): (WRITE, False),
    ("queue", "settle"): (WRITE, False),
    ("queue", "receive"): (CONSUME, True),
}


class CircuitBreaker:
    """One connection's breaker, with what its metrics show."""

    def __init__(self, connection: Connection, clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.policy: Resiliency = connection.resiliency
        self.clock = clock
        self.state = CLOSED
        self.failures = 0  # in a row
        self.open_until = 0.0
        self.last_failure = ""
        self.probing = False
        # Counters for bindingd_backend_* metrics.
        self.retries = 0
        self.timeouts = 0
        self.opened = 0
        self.errors: dict[str, int] = {}  # backend failures by reason (each attempt)

    def admit(self) -> bool:
        """Raise BackendUnavailable while open; True when this call is the half-open probe."""
        if self.state == CLOSED:
            return False
        now = self.clock()
        if self.state == OPEN and now >= self.open_until:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        raise self._open_error(max(0.0, self.open_until - now))

    def succeeded(self, probe: bool) -> None:
        if probe:
            self.probing = False
        if self.state != CLOSED:
            log.info("circuit closed", connection=self.connection.name)
        self.state, self.failures = CLOSED, 0

    def failed(self, probe: bool, err: BindingdError) -> None:
        if probe:
            self.probing = False
        self.failures += 1
        self.errors[err.reason.value] = self.errors.get(err.reason.value, 0) + 1
        self.last_failure = err.message
        breaker = self.policy.breaker
        if breaker is None:
            return
        tripped = self.state == CLOSED and self.failures >= breaker.consecutive_failures
        if self.state == HALF_OPEN or tripped:
            self.state = OPEN
            self.open_until = self.clock() + breaker.open_s
            self.opened += 1
            log.warning(
                "circuit open",
                connection=self.connection.name,
                failures=self.failures,
                open_s=breaker.open_s,
                last=self.last_failure,
            )

    def abandoned(self, probe: bool) -> None:
        """The probe ended without telling (cancelled): the next call probes instead."""
        if probe:
            self.probing = False

    def _open_error(self, remaining: float) -> BindingdError:
        c = self.connection
        return BindingdError(
            Reason.BACKEND_UNAVAILABLE,
            f'connection "{c.name}" ({c.kind}) is failing, so calls to it fail at once for now '
            f"(circuit breaker open after {self.failures} failures in a row; last: {self.last_failure}); "
            f"bindingd tries it again in {remaining:.1f}s (resiliency.circuit_breaker in the config)",
        )


class _Watch:
    __slots__ = ("cancelling", "deadline", "fired", "settled", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.fired = False
        self.settled = False

    def expired(self) -> bool:
        """Whether the CancelledError being handled is this deadline's (as asyncio.timeout
        tells its own from a cancellation of the task)."""
        return self.settle() and self.task.cancelling() <= self.cancelling

    def settle(self) -> bool:
        """Take back this deadline's cancellation, once, however the call ended (a provider
        may have turned it into an error of its own); True when it fired."""
        if self.fired and not self.settled:
            self.settled = True
            self.task.uncancel()
        return self.fired


class _Deadlines:
    """The deadlines of the calls in flight on one loop, checked by one timer every TICK_S: a
    timer per call (asyncio.timeout) costs ~7 µs, this ~1 µs, for deadlines TICK_S coarser."""

    TICK_S = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watches: set[_Watch] = set()
        self.ticking = False

    def watch(self, task: asyncio.Task[Any], timeout: float) -> _Watch:
        watch = _Watch(task, self.loop.time() + timeout)
        self.watches.add(watch)
        if not self.ticking:
            self.ticking = True
            self.loop.call_later(self.TICK_S, self._tick)
        return watch

    def _tick(self) -> None:
        now = self.loop.time()
        for watch in list(self.watches):
            if watch.task.done():
                self.watches.discard(watch)
            elif not watch.fired and now >= watch.deadline:
                watch.fired = True
                watch.task.cancel()
        if self.watches:
            self.loop.call_later(self.TICK_S, self._tick)
        else:
            self.ticking = False


class _AllDeadlines:
    """One `_Deadlines` per event loop (tests run loops one after another)."""

    def __init__(self) -> None:
        self.by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
            weakref.WeakKeyDictionary()
        )

    def watch(self, timeout: float) -> _Watch:
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        deadlines = self.by_loop.get(loop)
        if deadlines is None:
            deadlines = self.by_loop[loop] = _Deadlines(loop)
        return deadlines.watch(task, timeout)

    def done(self, watch: _Watch) -> None:
        deadlines = self.by_loop.get(watch.task.get_loop())
        if deadlines is not None:
            deadlines.watches.discard(watch)


DEADLINES = _AllDeadlines()


def timed_out(connection: Connection, op_class: str, seconds: float) -> BindingdError:
    return BindingdError(
        Reason.BACKEND_TIMEOUT,
        f'connection "{connection.name}" ({connection.kind}) did not answer within {seconds:g}s '
        f"(resiliency.timeout.{op_class} in the config)",
    )


class Guarded:
    """A provider whose backend calls follow its connection's policy; everything else of the
    provider passes through."""

    def __init__(self, provider: Any, binding_type: str, breaker: CircuitBreaker) -> None:
        self._provider = provider
        self._type = binding_type
        self._breaker = breaker

    @property
    def unguarded(self) -> Any:
        return self._provider

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._provider, name)
        op = OPS.get((self._type, name))
        if op is None:
            return attr
        op_class, idempotent = op

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            retry = idempotent(args) if callable(idempotent) else idempotent
            return await self._call(attr, op_class, retry, args, kwargs)

        # Kept on the instance: the next call finds it without coming here.
        setattr(self, name, guarded)
        return guarded

    def _timeout(self, op_class: str, args: tuple[Any, ...]) -> float | None:
        timeout = self._breaker.policy.timeout(op_class)
        if timeout is None:
            return None
        if op_class == CONSUME:  # receive(max_messages, visibility_s, wait_s): the wait is asked for
            wait = args[2] if len(args) > 2 else 0.0
            return timeout + float(wait)
        if self._type == "sql" and len(args) > 1:
            statement_timeout = getattr(args[1], "timeout", 0.0) or 0.0
            return max(timeout, float(statement_timeout) + SQL_MARGIN_S)
        return timeout

    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        op_class: str,
        idempotent: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        breaker = self._breaker
        policy = breaker.policy
        timeout = self._timeout(op_class, args)
        attempt = 0
        while True:
            probe = breaker.admit()
            watch = None if timeout is None else DEADLINES.watch(timeout)
            try:
                result = await method(*args, **kwargs)
            except asyncio.CancelledError:
                if watch is None or not watch.expired():
                    breaker.abandoned(probe)
                    raise
                breaker.timeouts += 1
                err = timed_out(breaker.connection, op_class, timeout or 0.0)
            except BindingdError as e:
                if e.reason not in BACKEND_REASONS:
                    breaker.succeeded(probe)  # the backend answered; the call was refused
                    raise
                err = e
            except BaseException:
                breaker.abandoned(probe)
                raise
            else:
                breaker.succeeded(probe)
                return result
            finally:
                if watch is not None:
                    watch.settle()
                    DEADLINES.done(watch)
            breaker.failed(probe, err)
            # Only a refused or reset connection is tried again: a call that timed out would
            # make its caller wait that long again (the breaker stops a backend that keeps
            # timing out).
            retryable = idempotent and err.reason == Reason.BACKEND_UNAVAILABLE
            if not retryable or policy.retry is None or attempt >= policy.retry.max_retries:
                raise err
            await asyncio.sleep(policy.retry.backoff(attempt))
            attempt += 1
            breaker.retries += 1


class Breakers:
    """The breakers of the runtime's connections, one per connection name."""

    def __init__(self) -> None:
        self.by_name: dict[str, CircuitBreaker] = {}

    def of(self, connection: Connection) -> CircuitBreaker:
        breaker = self.by_name.get(connection.name)
        if breaker is None:
            breaker = self.by_name[connection.name] = CircuitBreaker(connection)
        elif breaker.connection != connection:
            # A reload: the bindings it keeps and those it rebuilds share the one breaker, with
            # the entry's new policy.
            breaker.connection, breaker.policy = connection, connection.resiliency
        return breaker

    def guard(self, provider: Any, binding_type: str, connection: Connection | None) -> Any:
        if connection is None:
            return provider
        return Guarded(provider, binding_type, self.of(connection))
