"""Gateway sessions without gRPC: grant → enrol → challenge → open → verify, and every way it
must refuse (issue 14, "Tokens": reused code, expired code, a device key that is not the one
enrolled, a revoked user)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.errors import BindingdError, Reason
from bindingd.gateway import sessions as sessions_module
from bindingd.gateway.device import DeviceKey
from bindingd.gateway.sessions import Session, Sessions
from bindingd.gateway.state import SqliteState
from bindingd.gateway.tokens import SigningKey

GW = "team-gw"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def grants_for(user: str, groups: tuple[str, ...], env: str) -> Mapping[str, Iterable[str]]:
    if "developers" in groups and env == "staging":
        return {"CACHE": ["read", "write"], "APP_DB": ["read"]}
    return {}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteState]:
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.open()
    yield state
    await state.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gw(store: SqliteState, clock: Clock) -> Sessions:
    return Sessions(store, gateway_id=GW, signing_key=SigningKey(Ed25519PrivateKey.generate()), clock=clock)


def laptop() -> DeviceKey:
    return DeviceKey(Ed25519PrivateKey.generate(), "test")


async def enrolled(gw: Sessions, user: str = "alice", groups: tuple[str, ...] = ("developers",)) -> DeviceKey:
    key = laptop()
    code = await gw.grant(user, groups)
    await gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code))
    return key


async def login(gw: Sessions, key: DeviceKey, env: str = "staging", ttl_s: int = 900) -> Session:
    nonce = gw.challenge()
    return await gw.open(env, key.thumbprint, nonce, key.sign_challenge(GW, env, nonce), grants_for, ttl_s)


def rejected(gw: Sessions, token: str, reason: Reason) -> BindingdError:
    with pytest.raises(BindingdError) as info:
        gw.verify(token, "staging")
    assert info.value.reason == reason, info.value.message
    assert token not in info.value.message
    return info.value


async def refused(call, reason: Reason) -> BindingdError:
    with pytest.raises(BindingdError) as info:
        await call
    assert info.value.reason == reason, info.value.message
    return info.value


def test_codes_are_long_random_and_printable() -> None:
    codes = {sessions_module.new_code() for _ in range(50)}
    assert len(codes) == 50
    for code in codes:
        assert re.fullmatch(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}", code)  # 32 base32 chars: 160 bits


async def test_grant_enrol_open_verify(gw: Sessions, store: SqliteState, clock: Clock) -> None:
    key = await enrolled(gw)
    device = await store.device(key.thumbprint)
    assert device is not None and device.user == "alice" and device.groups == ("developers",)
    session = await login(gw, key, ttl_s=3600)
    claims = gw.verify(session.token, "staging")
    assert claims == session.claims
    assert claims.sub == "alice" and claims.jkt == key.thumbprint and claims.aud == GW
    assert claims.bindings == {"CACHE": ("read", "write"), "APP_DB": ("read",)}
    assert claims.exp == int(T0) + 3600
    clock.now += 3600
    rejected(gw, session.token, Reason.SESSION_EXPIRED)


async def test_the_code_is_stored_as_its_hash_only(gw: Sessions, store: SqliteState) -> None:
    code = await gw.grant("alice")
    raw = store.path.read_bytes() + store.path.with_name(store.path.name + "-wal").read_bytes()
    assert code.encode() not in raw and code.replace("-", "").encode() not in raw


async def test_a_code_typed_in_lower_case_without_dashes_works(gw: Sessions) -> None:
    key = laptop()
    code = (await gw.grant("alice")).replace("-", "").lower()
    device = await gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code))
    assert device.user == "alice"


async def test_a_reused_code(gw: Sessions, store: SqliteState) -> None:
    first, second = laptop(), laptop()
    code = await gw.grant("alice")
    await gw.enrol(code, first.public_raw, first.enrolment_proof(GW, code))
    err = await refused(
        gw.enrol(code, second.public_raw, second.enrolment_proof(GW, code)), Reason.NOT_LOGGED_IN
    )
    assert "already used" in err.message and "bindingd gateway grant" in err.message
    assert code not in err.message
    assert await store.device(second.thumbprint) is None


async def test_an_expired_code(gw: Sessions, store: SqliteState, clock: Clock) -> None:
    key = laptop()
    code = await gw.grant("alice")
    clock.now += 15 * 60
    err = await refused(gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code)), Reason.NOT_LOGGED_IN)
    assert "expired" in err.message and "15 minutes" in err.message
    assert await store.device(key.thumbprint) is None


async def test_an_unknown_code(gw: Sessions) -> None:
    key = laptop()
    code = sessions_module.new_code()
    err = await refused(gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code)), Reason.NOT_LOGGED_IN)
    assert "not known" in err.message


async def test_an_enrolment_proof_by_another_key_uses_nothing(gw: Sessions, store: SqliteState) -> None:
    key, other = laptop(), laptop()
    code = await gw.grant("alice")
    err = await refused(gw.enrol(code, key.public_raw, other.enrolment_proof(GW, code)), Reason.NOT_LOGGED_IN)
    assert "proof" in err.message
    # ...for another gateway, or another code:
    await refused(gw.enrol(code, key.public_raw, key.enrolment_proof("other-gw", code)), Reason.NOT_LOGGED_IN)
    assert await store.device(key.thumbprint) is None
    # The code was not used up: the right proof still enrols.
    assert (await gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code))).user == "alice"


async def test_a_device_key_that_is_not_the_one_enrolled(gw: Sessions) -> None:
    key = await enrolled(gw)
    impostor = laptop()
    nonce = gw.challenge()
    err = await refused(
        gw.open(
            "staging", key.thumbprint, nonce, impostor.sign_challenge(GW, "staging", nonce), grants_for, 900
        ),
        Reason.NOT_LOGGED_IN,
    )
    assert (
        "not signed by the device key enrolled" in err.message
        and "bindingd login --env staging" in err.message
    )


async def test_a_device_never_enrolled(gw: Sessions) -> None:
    stranger = laptop()
    err = await refused(login(gw, stranger), Reason.NOT_LOGGED_IN)
    assert "not enrolled" in err.message


async def test_a_signature_for_another_env_or_gateway(gw: Sessions) -> None:
    key = await enrolled(gw)
    nonce = gw.challenge()
    for signature in (
        key.sign_challenge(GW, "production", nonce),
        key.sign_challenge("other-gw", "staging", nonce),
    ):
        await refused(
            gw.open("staging", key.thumbprint, nonce, signature, grants_for, 900), Reason.NOT_LOGGED_IN
        )


async def test_challenges_expire_and_are_checked_by_any_instance(
    gw: Sessions, store: SqliteState, clock: Clock
) -> None:
    key = await enrolled(gw)
    # Another instance with the same signing key accepts this instance's challenge...
    twin = Sessions(store, gateway_id=GW, signing_key=gw.signing_key, clock=clock)
    nonce = gw.challenge()
    session = await twin.open(
        "staging", key.thumbprint, nonce, key.sign_challenge(GW, "staging", nonce), grants_for, 60
    )
    assert gw.verify(session.token, "staging").sub == "alice"
    # ...one with another key does not; nor a made-up nonce; nor an old one.
    stranger = Sessions(
        store, gateway_id=GW, signing_key=SigningKey(Ed25519PrivateKey.generate()), clock=clock
    )
    for other_gw, bad in ((stranger, gw.challenge()), (gw, "AAAA" * 14), (gw, "not base64!")):
        await refused(
            other_gw.open(
                "staging", key.thumbprint, bad, key.sign_challenge(GW, "staging", bad), grants_for, 60
            ),
            Reason.NOT_LOGGED_IN,
        )
    old = gw.challenge()
    clock.now += sessions_module.CHALLENGE_TTL_S + 1
    err = await refused(
        gw.open("staging", key.thumbprint, old, key.sign_challenge(GW, "staging", old), grants_for, 60),
        Reason.NOT_LOGGED_IN,
    )
    assert "challenge expired" in err.message


async def test_a_revoked_user(gw: Sessions, store: SqliteState, clock: Clock) -> None:
    key = await enrolled(gw)
    earlier = await login(gw, key)
    bob = await enrolled(gw, "bob")
    bobs = await login(gw, bob)
    clock.now += 10
    assert await gw.revoke_user("alice") == 1
    # Its earlier token fails, here and on another instance following the same store.
    rejected(gw, earlier.token, Reason.TOKEN_REVOKED)
    twin = Sessions(store, gateway_id=GW, signing_key=gw.signing_key, clock=clock)
    assert gw.verify(bobs.token, "staging").sub == "bob"
    await twin.revocations.refresh()
    rejected(twin, earlier.token, Reason.TOKEN_REVOKED)
    assert twin.verify(bobs.token, "staging").sub == "bob"
    # Its device cannot open a session any more.
    err = await refused(login(gw, key), Reason.TOKEN_REVOKED)
    assert "revoked" in err.message and "bindingd login --env staging" in err.message
    # A new grant lets the user back in, with new tokens that verify.
    clock.now += 10
    again = await enrolled(gw, "alice")
    assert gw.verify((await login(gw, again)).token, "staging").sub == "alice"


async def test_revoke_one_token(gw: Sessions, clock: Clock) -> None:
    key = await enrolled(gw)
    first, second = await login(gw, key), await login(gw, key)
    await gw.revoke_token(first.claims.jti)
    rejected(gw, first.token, Reason.TOKEN_REVOKED)
    assert gw.verify(second.token, "staging").jti == second.claims.jti
    clock.now += 1
    assert gw.verify((await login(gw, key)).token, "staging").sub == "alice"


async def test_logout(gw: Sessions, clock: Clock) -> None:
    key = await enrolled(gw)
    other = await enrolled(gw)  # the same user's second laptop
    session, others = await login(gw, key), await login(gw, other)
    clock.now += 1
    assert await gw.logout(key.thumbprint)
    rejected(gw, session.token, Reason.TOKEN_REVOKED)
    await refused(login(gw, key), Reason.TOKEN_REVOKED)
    assert gw.verify(others.token, "staging").sub == "alice"
    assert not await gw.logout("no-such-device")


async def test_rotated_signing_key(store: SqliteState, clock: Clock) -> None:
    old = Sessions(store, gateway_id=GW, signing_key=SigningKey(Ed25519PrivateKey.generate()), clock=clock)
    key = await enrolled(old)
    old_token = (await login(old, key, ttl_s=900)).token
    new = Sessions(
        store,
        gateway_id=GW,
        signing_key=SigningKey(Ed25519PrivateKey.generate()),
        old_keys=[old.signing_key.public()],
        clock=clock,
    )
    new_session = await login(new, key)
    assert new_session.claims.kid == new.signing_key.kid
    assert new.verify(old_token, "staging").kid == old.signing_key.kid
    clock.now += 900
    rejected(new, old_token, Reason.SESSION_EXPIRED)


async def test_a_following_instance_sees_a_revocation_within_seconds(
    gw: Sessions, store: SqliteState
) -> None:
    key = await enrolled(gw)
    session = await login(gw, key)
    twin = Sessions(store, gateway_id=GW, signing_key=gw.signing_key, clock=gw._clock)
    follower = asyncio.create_task(twin.revocations.follow(interval_s=0.05))
    try:
        # The revocation is written through another connection, as the admin command does.
        admin_store = SqliteState(store.path)
        await admin_store.open()
        await admin_store.revoke_token(session.claims.jti, T0)
        await admin_store.close()
        for _ in range(100):
            if twin.revocations.is_revoked(session.claims):
                break
            await asyncio.sleep(0.02)
        rejected(twin, session.token, Reason.TOKEN_REVOKED)
    finally:
        follower.cancel()
