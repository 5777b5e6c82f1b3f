"""The local objects provider when the disk refuses a write: a clear error, nothing stored,
no temp file left, and the daemon goes on serving."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from bindingd_client import BackendUnavailable, connect
from support import DaemonProcess, write_project

MIB = 1024 * 1024
LIMIT = 8 * MIB  # no file of the daemon's may grow past this: SQLite and the log stay far below


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_project(tmp_path, "version: 1\nbindings:\n  ASSETS: { type: objects }\n")
    proc = DaemonProcess(tmp_path, file_size_limit=LIMIT).start()
    yield proc
    proc.stop()


def _temp_files(root: Path) -> list[Path]:
    return list((root / ".bindingd" / "state" / "objects" / "ASSETS" / "tmp").iterdir())


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT + 12345])
def test_a_put_the_disk_refuses_stores_nothing(daemon: DaemonProcess, size: int) -> None:
    async def run() -> None:
        env = await connect(endpoint=daemon.endpoint)
        try:
            bucket = env.ASSETS
            await bucket.put("big", b"old")
            with pytest.raises(BackendUnavailable) as failed:
                await bucket.put("big", os.urandom(size))
            message = str(failed.value)
            assert "ASSETS" in message and "cannot write to the local object store" in message
            assert "File too large" in message
            got = await bucket.get("big")  # the old object is untouched
            assert got is not None and await got.bytes() == b"old"
            assert _temp_files(daemon.root) == []

            upload = await bucket.create_multipart_upload("parts")
            with pytest.raises(BackendUnavailable):
                await upload.upload_part(1, os.urandom(size))
            assert _temp_files(daemon.root) == []

            await bucket.put("small", b"fine")  # the daemon goes on serving
            small = await bucket.get("small")
            assert small is not None and await small.text() == "fine"
        finally:
            await env.aclose()

    asyncio.run(run())
    assert daemon.proc is not None and daemon.proc.poll() is None
