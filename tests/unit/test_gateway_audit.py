"""The gateway's audit lines: one JSON object a line, allowed fields only, append-only 0600."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import stat
from pathlib import Path

import pytest

from bindingd.gateway import audit
from bindingd.gateway.audit import AuditLog

NOW = datetime.datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=datetime.UTC)

EVENT = {
    "event": "call",
    "decision": "deny",
    "user": "bob",
    "jti": "j-1",
    "env": "production",
    "binding": "APP_DB",
    "binding_type": "sql",
    "method": "/bindingd.v1.Database/Query",
    "action": "write",
    "subject": "sha256:ab12",
    "reason": 'user "bob" is denied write',
    "status": "PERMISSION_DENIED",
    "request_id": "r-1",
    "latency_ms": 1.5,
    "bytes_in": 10,
    "bytes_out": 0,
}


def test_a_line_is_one_json_object_with_the_time_in_rfc3339_utc_ms() -> None:
    text = audit.line(EVENT, NOW)
    assert "\n" not in text
    parsed = json.loads(text)
    assert parsed == {"ts": "2025-03-04T05:06:07.891Z", **EVENT}
    later = datetime.datetime(
        2025, 3, 4, 7, 6, 7, 5000, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert json.loads(audit.line({}, later)) == {"ts": "2025-03-04T05:06:07.005Z"}


def test_unknown_fields_and_non_scalars_are_dropped_by_name_never_by_value() -> None:
    text = audit.line(
        {
            **EVENT,
            "token": "v4.public.SECRET",
            "value": "hunter2",
            "params": ["SECRET-PARAM"],
            "subject": {"body": "SECRET-BODY"},  # an allowed name with a value that is no scalar
            "ts": "1999-01-01",  # the writer's clock decides
        },
        NOW,
    )
    parsed = json.loads(text)
    assert parsed["dropped"] == ["params", "subject", "token", "value"]
    assert "SECRET" not in text and "hunter2" not in text
    assert parsed["ts"] == "2025-03-04T05:06:07.891Z"
    assert set(parsed) - {"dropped"} <= set(audit.FIELDS)


def test_a_name_with_a_line_break_stays_on_one_line_and_long_text_is_cut() -> None:
    text = audit.line({"subject": "a\nb\u2028c", "binding": "K" * 5000}, NOW)
    assert text.isascii() and "\n" not in text and "\u2028" not in text
    parsed = json.loads(text)
    assert parsed["subject"] == "a\nb\u2028c"
    assert parsed["binding"] == "K" * audit.MAX_TEXT


def test_the_file_is_appended_to_and_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier":true}\n')
    path.chmod(0o644)
    old = os.umask(0)
    try:
        with AuditLog(path=path, clock=lambda: NOW) as log:
            log.write({"event": "call", "decision": "allow", "user": "alice"})
            log.write({"event": "call", "decision": "deny", "user": "bob", "token": "x"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier":true}'
    assert [json.loads(line)["user"] for line in lines[1:]] == ["alice", "bob"]
    assert json.loads(lines[2])["dropped"] == ["token"]

    fresh = tmp_path / "new.jsonl"
    old = os.umask(0)
    try:
        AuditLog(path=fresh).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "audit.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        AuditLog(path=tmp_path / "audit.jsonl")


def test_stdout_gets_the_same_lines() -> None:
    stream = io.StringIO()
    written = AuditLog(stream=stream, clock=lambda: NOW).write(EVENT)
    assert stream.getvalue() == written + "\n"
    assert json.loads(written)["decision"] == "deny"
    with pytest.raises(ValueError, match="exactly one"):
        AuditLog()


def test_the_timestamp_is_right_across_seconds_and_zones() -> None:
    """rfc3339 formats a second's prefix once and reuses it: each time must still be its own."""
    times = [NOW + datetime.timedelta(milliseconds=ms) for ms in (0, 108, 109, 1109, 61_000, -5)]
    times.append(NOW.astimezone(datetime.timezone(datetime.timedelta(hours=-7))))  # same instant
    got = [audit.rfc3339(t) for t in times]
    assert got == [
        "2025-03-04T05:06:07.891Z",
        "2025-03-04T05:06:07.999Z",
        "2025-03-04T05:06:08.000Z",
        "2025-03-04T05:06:09.000Z",
        "2025-03-04T05:07:08.891Z",
        "2025-03-04T05:06:07.886Z",
        "2025-03-04T05:06:07.891Z",
    ]


async def test_a_line_written_soon_keeps_its_time_and_its_order(tmp_path: Path) -> None:
    """A call's line is written after its answer (write_soon): with the time of the call's end,
    in the order the calls ended, the lines of WRITE_EVERY_S in one write."""
    clock = iter([NOW, NOW + datetime.timedelta(seconds=2), NOW + datetime.timedelta(seconds=3)])
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path, clock=lambda: next(clock))
    log.write_soon({**EVENT, "request_id": "first"})
    log.write_soon(lambda: {**EVENT, "request_id": "second"})  # made when written
    await asyncio.sleep(0)
    assert path.read_text() == ""  # not yet: they wait for the others of WRITE_EVERY_S
    await asyncio.sleep(audit.WRITE_EVERY_S * 2)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["request_id"], line["ts"]) for line in lines] == [
        ("first", "2025-03-04T05:06:07.891Z"),
        ("second", "2025-03-04T05:06:09.891Z"),
    ]
    log.close()


async def test_close_writes_the_lines_still_waiting_and_a_closed_log_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path, clock=lambda: NOW)
    for n in range(3):
        log.write_soon({**EVENT, "request_id": f"r-{n}"})
    log.close()  # the gateway's shutdown: nothing that was answered goes unaudited
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ["r-0", "r-1", "r-2"]
    log.write_soon({**EVENT, "request_id": "late"})
    await asyncio.sleep(audit.WRITE_EVERY_S * 2)  # logged as not written, never raised into the loop
    assert '"request_id":"late"' not in path.read_text()


async def test_many_lines_at_once_go_out_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path, clock=lambda: NOW)
    for n in range(audit.MAX_PENDING):
        log.write_soon({**EVENT, "request_id": f"r-{n}", "subject": "k" * 900})
    # Written at once (in writes of at most MAX_WRITE bytes), without waiting for the timer.
    lines = path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r-{n}" for n in range(audit.MAX_PENDING)]
    log.close()


def test_without_a_loop_a_line_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path=path, clock=lambda: NOW) as log:
        log.write_soon(EVENT)
        assert json.loads(path.read_text())["request_id"] == "r-1"


async def test_a_line_that_cannot_be_made_loses_no_other(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path, clock=lambda: NOW)

    def broken() -> dict[str, object]:
        raise RuntimeError("a bug in what makes the line")

    log.write_soon({**EVENT, "request_id": "before"})
    log.write_soon(broken)
    log.write_soon({**EVENT, "request_id": "after"})
    log.close()  # never raises
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ["before", "after"]


def test_a_naive_datetime_is_local_time() -> None:
    naive = NOW.astimezone().replace(tzinfo=None)  # the same instant, as a naive local time
    assert audit.rfc3339(naive) == audit.rfc3339(NOW) == "2025-03-04T05:06:07.891Z"
