"""The gateway's SQLite state store: private files, single-use codes under concurrency, devices,
the revocation log other instances (processes) follow."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bindingd.gateway.state import Device, EnrolResult, RevocationKind, SqliteState

T0 = 1_800_000_000.0


def device(thumbprint: str = "thumb-1") -> Device:
    return Device(thumbprint=thumbprint, user="", groups=(), public_key=bytes(range(32)), created_at=0.0)


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[SqliteState]:
    store = SqliteState(tmp_path / "gw" / "state" / "state.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)  # the worst umask: the store must not rely on it
    try:
        store = SqliteState(tmp_path / "gw" / "state.sqlite3")
        await store.open()
        await store.add_code("h", "alice", (), T0, T0 + 900)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((tmp_path / "gw").stat().st_mode) == 0o700
        for name in ("state.sqlite3", "state.sqlite3-wal"):
            assert stat.S_IMODE((tmp_path / "gw" / name).stat().st_mode) == 0o600, name
    finally:
        await store.close()


async def test_a_code_enrols_one_device_once(state: SqliteState) -> None:
    await state.add_code("h1", "alice", ("developers", "ops"), T0, T0 + 900)
    result, recorded = await state.enrol("h1", device(), T0 + 10)
    assert result == EnrolResult.OK
    assert recorded is not None and (recorded.user, recorded.groups) == ("alice", ("developers", "ops"))
    assert await state.device("thumb-1") == recorded
    assert await state.enrol("h1", device("thumb-2"), T0 + 20) == (EnrolResult.USED, None)
    assert await state.device("thumb-2") is None


async def test_an_expired_or_unknown_code_records_nothing(state: SqliteState) -> None:
    await state.add_code("h1", "alice", (), T0, T0 + 900)
    assert await state.enrol("h1", device(), T0 + 900) == (EnrolResult.EXPIRED, None)
    assert await state.enrol("nope", device(), T0) == (EnrolResult.UNKNOWN, None)
    assert await state.device("thumb-1") is None


async def test_a_code_is_single_use_across_connections(tmp_path: Path) -> None:
    """Several stores on one file (as several processes would be): one enrolment wins."""
    path = tmp_path / "state.sqlite3"
    stores = [SqliteState(path) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        await stores[0].add_code("h1", "alice", (), T0, T0 + 900)
        results = await asyncio.gather(
            *(store.enrol("h1", device(f"thumb-{i}"), T0 + 1) for i, store in enumerate(stores))
        )
        assert sorted(r for r, _ in results) == sorted([EnrolResult.OK] + [EnrolResult.USED] * 3)
        enrolled = [await stores[0].device(f"thumb-{i}") for i in range(4)]
        assert sum(d is not None for d in enrolled) == 1
    finally:
        for store in stores:
            await store.close()


async def test_revoking_a_user_revokes_their_devices_and_logs_it(state: SqliteState) -> None:
    await state.add_code("a1", "alice", (), T0, T0 + 900)
    await state.add_code("a2", "alice", (), T0, T0 + 900)
    await state.add_code("b1", "bob", (), T0, T0 + 900)
    await state.enrol("a1", device("alice-laptop"), T0)
    await state.enrol("a2", device("alice-ci"), T0)
    await state.enrol("b1", device("bob-laptop"), T0)
    assert await state.revoke_user("alice", T0 + 5) == 2
    assert (await state.device("alice-laptop")).revoked_at == T0 + 5
    assert (await state.device("alice-ci")).revoked_at == T0 + 5
    assert (await state.device("bob-laptop")).revoked_at is None
    [entry] = await state.revocations_since(0)
    assert (entry.kind, entry.subject, entry.at) == (RevocationKind.USER, "alice", T0 + 5)


async def test_the_revocation_log_is_followed_by_id(state: SqliteState) -> None:
    await state.add_code("a1", "alice", (), T0, T0 + 900)
    await state.enrol("a1", device("alice-laptop"), T0)
    await state.revoke_token("jti-1", T0 + 1)
    assert await state.revoke_device("alice-laptop", T0 + 2)
    assert not await state.revoke_device("unknown", T0 + 2)
    log = await state.revocations_since(0)
    assert [(r.kind, r.subject) for r in log] == [
        (RevocationKind.JTI, "jti-1"),
        (RevocationKind.DEVICE, "alice-laptop"),
    ]
    assert await state.revocations_since(log[-1].id) == []
    assert await state.revocations_since(log[0].id) == log[1:]


async def test_reenrolling_a_revoked_key_with_a_new_code(state: SqliteState) -> None:
    await state.add_code("a1", "alice", (), T0, T0 + 900)
    await state.enrol("a1", device(), T0)
    await state.revoke_user("alice", T0 + 1)
    await state.add_code("a2", "alice", ("ops",), T0 + 2, T0 + 900)
    result, recorded = await state.enrol("a2", device(), T0 + 3)
    assert result == EnrolResult.OK
    assert await state.device("thumb-1") == recorded and recorded.revoked_at is None
    assert recorded.groups == ("ops",)


async def test_prune_forgets_old_codes_and_revocations_not_ids(state: SqliteState) -> None:
    await state.add_code("old", "alice", (), T0, T0 + 900)
    await state.add_code("new", "alice", (), T0 + 5000, T0 + 5900)
    await state.revoke_token("jti-old", T0)
    await state.revoke_token("jti-new", T0 + 5000)
    await state.prune(T0 + 4000)
    assert await state.enrol("old", device(), T0 + 5000) == (EnrolResult.UNKNOWN, None)
    [kept] = await state.revocations_since(0)
    assert kept.subject == "jti-new"
    await state.revoke_token("jti-later", T0 + 6000)
    # Ids are never reused after a prune: a follower's cursor stays valid.
    assert [r.subject for r in await state.revocations_since(kept.id)] == ["jti-later"]


async def test_another_process_sees_a_revocation(state: SqliteState) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from bindingd.gateway.state import SqliteState\n"
        "async def main():\n"
        "    s = SqliteState(Path(sys.argv[1]))\n"
        "    await s.open()\n"
        "    await s.revoke_user('alice', 1.0)\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(state.path)], check=True, timeout=60)
    [entry] = await state.revocations_since(0)
    assert (entry.kind, entry.subject) == (RevocationKind.USER, "alice")
