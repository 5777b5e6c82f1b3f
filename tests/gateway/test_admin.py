"""`bindingd gateway grant` / `revoke` behind the CLI: the code is the last line, it enrols a
device through the same store, and a revocation reaches a running gateway's sessions."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.errors import BindingdError, Reason
from bindingd.gateway import admin
from bindingd.gateway.device import DeviceKey
from bindingd.gateway.pgstate import PostgresState
from bindingd.gateway.sessions import Sessions
from bindingd.gateway.state import SqliteState, open_state
from bindingd.gateway.tokens import SigningKey

GW = "team-gw"


def everything(user: str, groups: tuple[str, ...], env: str) -> dict[str, list[str]]:
    return {"CACHE": ["read"]}


def grant(path: Path, user: str = "alice", groups: tuple[str, ...] = ("developers",)) -> tuple[str, str]:
    out = io.StringIO()
    code = admin.grant(open_state("sqlite", path=path), user, groups, out=out)
    return code, out.getvalue()


def test_grant_prints_the_code_last(tmp_path: Path) -> None:
    code, printed = grant(tmp_path / "gw" / "state.sqlite3")
    lines = printed.splitlines()
    assert lines[-1] == code
    assert "alice" in lines[0] and "developers" in lines[0] and "valid until" in lines[0]
    assert code not in "\n".join(lines[:-1])


async def test_a_granted_code_enrols_and_revoke_reaches_the_gateway(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    # The admin commands run their own event loop, as the CLI does: on a thread here.
    code, _ = await asyncio.to_thread(grant, path)
    store = SqliteState(path)
    await store.open()
    try:
        gw = Sessions(store, gateway_id=GW, signing_key=SigningKey(Ed25519PrivateKey.generate()))
        key = DeviceKey(Ed25519PrivateKey.generate(), "test")
        device = await gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code))
        assert (device.user, device.groups) == ("alice", ("developers",))
        nonce = gw.challenge()
        sig = key.sign_challenge(GW, "staging", nonce)
        first = await gw.open("staging", key.thumbprint, nonce, sig, everything, 60)
        second = await gw.open("staging", key.thumbprint, nonce, sig, everything, 60)

        out = io.StringIO()
        await asyncio.to_thread(
            admin.revoke, open_state("sqlite", path=path), token=first.claims.jti, out=out
        )
        assert out.getvalue().strip() == f"revoked token {first.claims.jti}"
        await gw.revocations.refresh()
        with pytest.raises(BindingdError) as info:
            gw.verify(first.token, "staging")
        assert info.value.reason == Reason.TOKEN_REVOKED
        assert gw.verify(second.token, "staging").sub == "alice"

        out = io.StringIO()
        await asyncio.to_thread(
            admin.revoke, open_state("sqlite", path=path), user="alice", out=out, now=time.time() + 1
        )
        assert "revoked user alice" in out.getvalue() and "1 device" in out.getvalue()
        await gw.revocations.refresh()
        with pytest.raises(BindingdError) as info:
            gw.verify(second.token, "staging")
        assert info.value.reason == Reason.TOKEN_REVOKED
    finally:
        await store.close()


def test_revoke_takes_a_user_or_a_token(tmp_path: Path) -> None:
    store = open_state("sqlite", path=tmp_path / "state.sqlite3")
    for kwargs in ({}, {"user": "alice", "token": "j"}, {"user": ""}, {"token": ""}):
        with pytest.raises(BindingdError) as info:
            admin.revoke(store, out=io.StringIO(), **kwargs)
        assert info.value.reason == Reason.INVALID_ARGUMENT


def test_grant_needs_a_user(tmp_path: Path) -> None:
    with pytest.raises(BindingdError, match="user name"):
        grant(tmp_path / "state.sqlite3", user="")


def test_open_state_kinds(tmp_path: Path) -> None:
    assert isinstance(open_state("sqlite", path=tmp_path / "s.sqlite3"), SqliteState)
    assert isinstance(open_state("postgres", dsn="postgresql://x"), PostgresState)
    with pytest.raises(ValueError, match="needs a dsn"):
        open_state("postgres")
    with pytest.raises(ValueError, match='unknown state store kind "oracle"'):
        open_state("oracle")
    with pytest.raises(ValueError, match="needs a path"):
        open_state("sqlite")
