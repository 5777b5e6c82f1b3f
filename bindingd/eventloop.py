"""The event loop `bindingd serve` and `bindingd gateway serve` run on.

uvloop where it is installed (a dependency on Linux and macOS): every call through the daemon
and the gateway is a handful of event-loop callbacks (grpc.aio's poller hands each completion to
the loop), and uvloop runs them at about half the cost of the standard loop. Through a gateway,
where each call crosses two such processes, that was 40-45 us of CPU per call of about 600
(measured with 64 calls in flight, `make bench`). `BINDINGD_EVENT_LOOP=asyncio` selects the
standard loop, to rule uvloop out when something misbehaves.

The one-shot commands (check, migrate, ...) keep `asyncio.run`: they make a few calls and exit.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOP_ENV = "BINDINGD_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class LoopChoiceError(ValueError):
    pass


def loop_factory() -> LoopFactory | None:
    """uvloop's loop, unless BINDINGD_EVENT_LOOP says asyncio or uvloop is not installed
    (None: asyncio's own). Asked before anything is opened: a choice it does not know is refused."""
    given = os.environ.get(LOOP_ENV, "")
    choice = given.strip().lower() or "uvloop"
    if choice not in CHOICES:
        raise LoopChoiceError(f"{LOOP_ENV}={given!r} is not one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # an install without it (Windows, or a trimmed environment)
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """What the running loop is, for the serving log line."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """`asyncio.run(main)` on the loop `factory` makes (None: asyncio's own)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
