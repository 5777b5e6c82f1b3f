"""A long SQL call on a real daemon that gets SIGTERM: the daemon stops within its grace
period, the statement is stopped inside SQLite, and the caller gets an error, not a hang."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from bindingd_client import BindingError, connect
from support import DaemonProcess, write_project

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000)"
    " SELECT max(x) FROM c"
)


async def test_sigterm_ends_a_running_query_within_the_grace_period(tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_project(root, "version: 1\nbindings:\n  APP_DB: { type: sql, timeout: 120 }\n")
    daemon = DaemonProcess(root, "--grace", "2").start()
    env = await connect(endpoint=daemon.endpoint)
    try:
        call = asyncio.ensure_future(env.APP_DB.prepare(SLOW).all())
        await asyncio.sleep(1.0)
        assert not call.done()
        started = time.monotonic()
        daemon.signal(15)
        with pytest.raises(BindingError):
            await asyncio.wait_for(call, 30)
        # Wait for the exit the first SIGTERM started: stop() would send a second one, which can
        # land after the daemon's loop (and its handler) is gone and kill it with -15.
        assert daemon.proc is not None
        code = await asyncio.to_thread(daemon.proc.wait, 30)
        assert code == 0
        assert time.monotonic() - started < 15
    finally:
        with contextlib.suppress(Exception):
            await env.aclose()
        daemon.stop()
