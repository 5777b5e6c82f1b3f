"""The gateway's audit log: one JSON object per line for every decision, allowed or denied.

To a file opened append-only (0600 whatever the umask; each `write` is whole lines, so instances
and rotations that share the file never interleave half lines) or to stdout.

Only the fields of `FIELDS` are written, and only as scalars: a value, body, bound parameter or
token can never reach the log by being passed here by mistake. An unknown field is dropped and
its name (never its value) listed under `dropped`, so the mistake shows without leaking.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog

log = structlog.get_logger("bindingd.gateway.audit")

# What a line may hold. `subject` is a key, an object name or the sha256 of a SQL statement.
FIELDS = (
    "ts",
    "event",
    "decision",  # "allow" | "deny"
    "user",
    "jti",
    "device",  # the device key's thumbprint
    "peer",
    "env",
    "binding",
    "binding_type",
    "method",
    "action",
    "subject",
    "reason",
    "status",  # the gRPC status code name
    "request_id",
    "latency_ms",
    "bytes_in",
    "bytes_out",
)
_ALLOWED = frozenset(FIELDS)
# A key or object name can be long; the log does not need all of it.
MAX_TEXT = 1024


# One line per call is on every call's path: the encoder is made once, times are whole
# microseconds since the epoch (no datetime made per line), a second's prefix is formatted once
# per second, and the common field types are told by `type()`.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_PLAIN = frozenset({str, int, bool, type(None)})
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_second: tuple[int, str] = (-1, "")

# When a line is stamped: a datetime (any zone), or whole microseconds since the epoch (UTC).
Stamp = datetime.datetime | int


def _wall_clock() -> int:
    return time.time_ns() // 1000


def rfc3339(now: Stamp) -> str:
    """`2025-01-02T03:04:05.678Z`: UTC, milliseconds."""
    global _second
    if not isinstance(now, int) and now.tzinfo is None:
        now = now.astimezone(datetime.UTC)  # a naive datetime is local time, as datetime has it
    micros = now if isinstance(now, int) else (now - _EPOCH) // _MICROSECOND
    second, micro = divmod(micros, 1_000_000)
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    return f"{_second[1]}{micro // 1000:03d}Z"


def line(event: Mapping[str, Any], now: Stamp) -> str:
    """The JSON line for `event` (without its newline): allowed scalar fields only."""
    out: dict[str, Any] = {"ts": rfc3339(now)}
    dropped: list[str] = []
    for name, value in event.items():
        if name == "ts":
            continue  # the writer's clock, not the caller's
        if name not in _ALLOWED or not (type(value) in _PLAIN or _scalar(value)):
            dropped.append(str(name)[:64])
            continue
        out[name] = value[:MAX_TEXT] if isinstance(value, str) and len(value) > MAX_TEXT else value
    if dropped:
        out["dropped"] = sorted(dropped)
    # ensure_ascii: a name with a line separator in it stays on its line, whatever the reader.
    return _ENCODER.encode(out)


def sql_subject(sql: str) -> str:
    """A SQL statement's audit subject: its SHA-256, never its text (a literal in it may be a
    value). The same statement gives the same subject, so lines can be grouped by it."""
    return "sha256:" + hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest()


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, str | int | bool)


# Lines waiting for the loop are written together, in writes of at most this many bytes: the
# lines of the calls that ended within WRITE_EVERY_S of the first (or the first MAX_PENDING
# of them). A write per line cost about 10 us of CPU a call, measured with 64 calls in flight.
MAX_WRITE = 64 * 1024
WRITE_EVERY_S = 0.005
MAX_PENDING = 256

# An event, or what makes it once the loop is free (its fields read after the call's answer).
Event = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class AuditLog:
    """`AuditLog(path=...)` or `AuditLog(stream=sys.stdout)`; `write(event)` per decision.

    `clock` gives each line's time: a datetime, or whole microseconds since the epoch (the
    default, the wall clock)."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], Stamp] | None = None,
    ) -> None:
        if (path is None) == (stream is None):
            raise ValueError("an audit log goes to a path or a stream, exactly one")
        self.path = path
        self._stream = stream
        self._fd: int | None = None
        self._clock: Callable[[], Stamp] = clock or _wall_clock
        # Lines for the loop to write (write_soon), with their times, in the order they came.
        self._pending: list[tuple[Event, Stamp]] = []
        self._timer: asyncio.TimerHandle | None = None
        if path is not None:
            self._fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            os.fchmod(self._fd, 0o600)  # an existing file, or one made under a loose umask

    @classmethod
    def stdout(cls, clock: Callable[[], Stamp] | None = None) -> AuditLog:
        return cls(stream=sys.stdout, clock=clock)

    def write(self, event: Mapping[str, Any]) -> str:
        """Write one line for `event`; the line (without newline) is returned for tests and metrics."""
        text = line(event, self._clock())
        self._put(text + "\n")
        return text

    def write_soon(self, event: Event) -> None:
        """Write `event`'s line soon, with the time of now. A call's line is then written after
        its answer was handed to grpc rather than before, off the call's latency. `event` may
        be a function that makes it: its fields are then read at that time too.

        Lines keep their order, and those of the calls that end within WRITE_EVERY_S go out in
        one write; `close` writes what is still waiting. With no loop running, the line is
        written at once."""
        now = self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._put(line(event() if callable(event) else event, now) + "\n")
            return
        pending = self._pending
        pending.append((event, now))
        if len(pending) == 1:
            self._timer = loop.call_later(WRITE_EVERY_S, self._write_pending)
        elif len(pending) >= MAX_PENDING:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the lines waiting. Never raises: it runs from the loop, and from a call's end
        when MAX_PENDING are waiting. A line that cannot be made is logged and the others still
        go out; lines that cannot be written (a full disk, a closed log) are logged, counted."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        text: list[str] = []
        size = 0
        for event, now in pending:
            try:
                one = line(event() if callable(event) else event, now) + "\n"
            except Exception:  # a bug in what makes it
                log.exception("audit line not made")
                continue
            if size + len(one) > MAX_WRITE and text:
                self._put_lines(text)
                text, size = [], 0
            text.append(one)
            size += len(one)
        if text:
            self._put_lines(text)

    def _put_lines(self, lines: list[str]) -> None:
        """Write `lines` in one write; if it fails, say how many were lost."""
        try:
            self._put("".join(lines))
        except (OSError, ValueError) as e:  # a full disk, or a log closed at shutdown
            log.error("audit lines not written", error=str(e), lines=len(lines))

    def _put(self, text: str) -> None:
        """`text`: whole lines, each ending in a newline."""
        if self.path is not None:
            if self._fd is None:
                raise ValueError(f"the audit log {self.path} is closed")
            view = memoryview(text.encode("ascii"))
            while view:  # a regular file takes the lines in one write; the loop is for a full disk
                view = view[os.write(self._fd, view) :]
        else:
            assert self._stream is not None
            self._stream.write(text)
            self._stream.flush()

    def close(self) -> None:
        """Write the lines still waiting, then close the file."""
        self._write_pending()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
