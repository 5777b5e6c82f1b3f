"""The gateway's PostgreSQL state store, and several instances sharing it (issue 14, "Several
instances", "Faults: the state store down").

Against the machine's real PostgreSQL, each test on a throwaway database; the gateways are real
`Gateway`s over TLS served by the test's event loop (as in the conformance suites), the
developer's daemon a real daemon in this process, its bindings discovered from the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import BackendUnavailable, TokenRevoked, connect
from conformance.gateway_backend import developer_config, serving_gateway
from faults.proxy import FaultProxy
from support import POSTGRES, bindingd_cli, daemon_in_process, write_project

from bindingd.errors import BindingdError, Reason
from bindingd.gateway.pgstate import PostgresState
from bindingd.gateway.sessions import code_hash, grant
from bindingd.gateway.state import Device, EnrolResult, RevocationKind

INNER = """
    version: 1
    bindings:
      CACHE: { type: kv }
"""


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with POSTGRES.database() as name:
        yield POSTGRES.dsn(name)


def device(n: int) -> Device:
    return Device(f"thumb-{n}", "", (), bytes([n]) * 32, 0.0)


async def test_a_code_is_used_once_when_instances_race_for_it(dsn: str) -> None:
    stores = [PostgresState(dsn) for _ in range(2)]
    for store in stores:
        await store.open()  # both create the schema: the second finds it there
    try:
        now = time.time()
        for round_ in range(10):
            code = await grant(stores[0], f"user{round_}", ["devs"], now)
            results = await asyncio.gather(
                *(store.enrol(code_hash(code), device(i), now + 1) for i, store in enumerate(stores))
            )
            assert sorted(r for r, _ in results) == sorted([EnrolResult.OK, EnrolResult.USED])
            ok = next(d for r, d in results if r == EnrolResult.OK)
            assert ok is not None and ok.user == f"user{round_}" and ok.groups == ("devs",)
        assert (await stores[1].enrol(code_hash("NOT-A-CODE"), device(9), now))[0] == EnrolResult.UNKNOWN
        late = await grant(stores[0], "late", [], now)
        assert (await stores[1].enrol(code_hash(late), device(8), now + 16 * 60))[0] == EnrolResult.EXPIRED
    finally:
        for store in stores:
            await store.close()


async def test_revocations_reach_every_instance_in_order(dsn: str) -> None:
    a, b = PostgresState(dsn), PostgresState(dsn)
    await a.open()
    await b.open()
    try:
        await asyncio.gather(*(s.revoke_token(f"jti-{i}", 1.0) for i, s in enumerate([a, b] * 10)))
        seen = await b.revocations_since(0)
        assert [r.id for r in seen] == sorted(r.id for r in seen)
        assert {r.subject for r in seen} == {f"jti-{i}" for i in range(20)}
        assert all(r.kind == RevocationKind.JTI for r in seen)
        assert await a.revocations_since(seen[-1].id) == []
        assert await a.revoke_device("nobody", 2.0) is False
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_store_is_backend_unavailable_without_its_password() -> None:
    store = PostgresState("postgresql://gw:pw-N0T-SHOWN@127.0.0.1:1/gw")
    with pytest.raises(BindingdError) as info:
        await store.open()
    assert info.value.reason == Reason.BACKEND_UNAVAILABLE
    assert "state store" in info.value.message and "pw-N0T-SHOWN" not in info.value.message


async def test_two_instances_share_revocations_and_fail_closed_while_the_store_is_cut(
    dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A revocation made through one instance cuts the other's calls within 5 s; an instance cut
    off from the store keeps serving for a while (what it knows of revocations stays in force),
    then refuses calls (it could be missing a revocation) and serves again once the store is back."""
    proxy = await FaultProxy(5432).start()
    proxied = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    root = tmp_path / "team"
    inner = write_project(root, INNER)
    async with (
        serving_gateway(root, inner, request, state={"kind": "postgres", "dsn": proxied}, name="a.yaml") as a,
        serving_gateway(root, inner, request, state={"kind": "postgres", "dsn": dsn}, name="b.yaml") as b,
    ):
        a.sessions.revocations.stale_after_s = 3.0
        laptop = developer_config(tmp_path / "laptop", a, request)
        async with daemon_in_process(laptop) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await env.CACHE.put("k", "v")
                # The store cut off from instance A: calls go on at first...
                proxy.cut()
                assert await env.CACHE.get("k") == "v"
                # ...then are refused, naming the state store.
                started = time.monotonic()
                while True:
                    try:
                        await env.CACHE.get("k")
                    except BackendUnavailable as e:
                        assert "state store" in str(e)
                        break
                    assert time.monotonic() - started < 15, "calls never refused while the store was cut"
                    await asyncio.sleep(0.2)
                proxy.restore()
                started = time.monotonic()
                while True:
                    try:
                        assert await env.CACHE.get("k") == "v"
                        break
                    except BackendUnavailable:
                        assert time.monotonic() - started < 15, "calls did not come back with the store"
                        await asyncio.sleep(0.2)
                # A revocation recorded through instance B reaches A within 5 s.
                await b.sessions.revoke_user("tester")
                started = time.monotonic()
                with pytest.raises(TokenRevoked):
                    while time.monotonic() - started < 5.0:
                        await env.CACHE.get("k")
                        await asyncio.sleep(0.1)
            finally:
                await env.aclose()


def test_admin_commands_with_the_store_down_say_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        'version: 1\ngateway:\n  id: x\n  listen: "127.0.0.1:1"\n  tls: { cert: a.pem, key: a.key }\n'
        "  signing_key: s.key\n"
        '  state: { kind: postgres, dsn: "postgresql://gw:pw-N0T-SHOWN@127.0.0.1:1/gw" }\n'
        "envs:\n  staging: {}\n"
    )
    for command in (["grant", "--user", "alice"], ["revoke", "--user", "alice"]):
        done = bindingd_cli("gateway", *command, "--config", "gateway.yaml", cwd=tmp_path)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "state store" in lines[0], done.stderr
        assert "pw-N0T-SHOWN" not in done.stdout + done.stderr and "Traceback" not in done.stderr


async def test_a_revocation_cuts_an_open_download(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A download that outlives its token's revocation is cut with TOKEN_REVOKED before its
    next message, not served to the end."""
    root = tmp_path / "team"
    inner = write_project(root, "version: 1\nbindings:\n  ASSETS: { type: objects }\n")
    async with serving_gateway(root, inner, request) as gateway:
        laptop = developer_config(tmp_path / "laptop", gateway, request)
        async with daemon_in_process(laptop) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                chunk = bytes(range(256)) * 4096  # 1 MiB

                async def body() -> AsyncIterator[bytes]:
                    for _ in range(64):
                        yield chunk

                await env.ASSETS.put("big.bin", body())
                got = await env.ASSETS.get("big.bin")
                assert got is not None
                read = 0
                with pytest.raises(TokenRevoked):
                    async for part in got.body:
                        read += len(part)
                        if read == len(part):  # after the first chunk: revoke, then read slowly
                            await gateway.sessions.revoke_user("tester")
                        await asyncio.sleep(0.01)
                assert read < 64 * len(chunk)
            finally:
                await env.aclose()
