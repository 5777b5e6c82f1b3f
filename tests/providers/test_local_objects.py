"""What the local objects provider does beyond the objects conformance suite: a daemon killed
between moving a blob in and recording it (or between recording a replacement or a delete and
removing the old file) leaves a blob nothing names; the next start removes it, and only it."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from bindingd_client import connect
from support import daemon_in_process, write_project

MIB = 1024 * 1024


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A project with one local objects binding, ASSETS."""
    return write_project(
        tmp_path / "project",
        """
        version: 1
        bindings:
          ASSETS: { type: objects }
        """,
    )


async def test_a_start_removes_the_blobs_nothing_names_and_keeps_the_rest(config: Path) -> None:
    blobs = config.parent / ".bindingd" / "state" / "objects" / "ASSETS" / "blobs"
    body = os.urandom(3 * MIB)
    async with daemon_in_process(config) as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            await env.ASSETS.put("kept", body)
            await env.ASSETS.put("small", "x")
            upload = await env.ASSETS.create_multipart_upload("later")
            part = await upload.upload_part(1, os.urandom(5 * MIB))
        finally:
            await env.aclose()
    named = sorted(p.name for p in blobs.iterdir())
    assert len(named) == 3  # two objects and one part
    # What a killed daemon leaves: a blob moved in but never recorded, an old body replaced.
    (blobs / ("0" * 32)).write_bytes(b"moved in, never recorded")
    shutil.copy(blobs / named[0], blobs / ("f" * 32))
    (blobs / "a-folder").mkdir()  # not a blob: left alone

    async with daemon_in_process(config) as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            assert sorted(p.name for p in blobs.iterdir()) == sorted([*named, "a-folder"])
            got = await env.ASSETS.get("kept")
            assert got is not None and await got.bytes() == body
            small = await env.ASSETS.get("small")
            assert small is not None and await small.text() == "x"
            upload = env.ASSETS.resume_multipart_upload("later", upload.upload_id)
            done = await upload.complete([part])
            assert done.size == 5 * MIB
        finally:
            await env.aclose()


async def test_a_start_while_another_process_writes_skips_the_sweep_and_serves(config: Path) -> None:
    store = config.parent / ".bindingd" / "state" / "objects" / "ASSETS"
    async with daemon_in_process(config) as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            await env.ASSETS.put("kept", "body")
        finally:
            await env.aclose()
    orphan = store / "blobs" / ("0" * 32)
    orphan.write_bytes(b"moved in, never recorded")
    other = sqlite3.connect(store / "objects.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another daemon in the middle of a write
    try:
        async with daemon_in_process(config) as daemon:
            # Serving: a start that insisted on the lock would have failed the binding.
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                got = await env.ASSETS.get("kept")
                assert got is not None and await got.text() == "body"
            finally:
                await env.aclose()
        assert orphan.exists()  # not checked this time
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with daemon_in_process(config):
        assert not orphan.exists()  # the next start did it
