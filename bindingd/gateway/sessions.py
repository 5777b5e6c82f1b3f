"""Sessions at the gateway, without gRPC: grant a code, enrol a device, open a session (a
token), log out, revoke. Everything shared lives in the StateStore; the challenge is
stateless (MAC'd with a key derived from the signing key every instance has), so any instance
can check an answer to another instance's challenge.

The flow: an admin `grant`s a one-time code to a user; the laptop `enrol`s its device key with
it (proving it holds the key); from then on the daemon asks for a `challenge`, signs it with
the device key and `open`s a session for an env, receiving a token scoped to what the policy
grants that user in that env. Revocations (user, device, token) go to the store's log; every
instance follows the log (`RevocationCache.refresh`, every second or so) and checks each
token against it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bindingd.errors import BindingdError, Reason, invalid_argument
from bindingd.gateway import tokens
from bindingd.gateway.device import enrol_message, normalise_code, open_message, verify_signature
from bindingd.gateway.state import Device, EnrolResult, Revocation, RevocationKind, StateStore
from bindingd.gateway.tokens import Claims, SigningKey, VerifyingKey

log = structlog.get_logger("bindingd.gateway")

CODE_TTL_S = 15 * 60  # pinned: an enrolment code is valid 15 minutes
CODE_BYTES = 20  # 160 bits: 32 base32 characters
# How often an instance reads new revocations: well within the 5 s.
REFRESH_S = 1.0
# How long calls go on while the revocation log cannot be read (the state store down or cut
# off from this instance): past it, calls are refused (fail closed). With a read every
# REFRESH_S, a revocation recorded through another instance is in force here within 5 s either
# way, as promised: seen, or every call refused.
STALE_S = 4.0
CHALLENGE_TTL_S = 60
# Another instance's clock may run a little ahead of this one's.
CHALLENGE_SKEW_S = 5

WHY_NOT_ENROLLED = {
    EnrolResult.UNKNOWN: "this enrolment code is not known here (mistyped, or for another gateway)",
    EnrolResult.USED: "this enrolment code was already used (a code enrols one device, once)",
    EnrolResult.EXPIRED: f"this enrolment code expired (codes are valid {CODE_TTL_S // 60} minutes)",
}

# grants_for(user, groups, env) -> {binding: actions}: the policy's answer (policy.py's
# Policy.granted, bound to the env's bindings by the caller).
GrantsFor = Callable[[str, tuple[str, ...], str], Mapping[str, Iterable[str]]]


def new_code() -> str:
    """A one-time enrolment code: 160 random bits in base32, in groups of 4 (easy to read out)."""
    text = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode("ascii", "replace")).hexdigest()


async def grant(store: StateStore, user: str, groups: Iterable[str], now: float) -> str:
    """Record and return a one-time code that enrols one device for `user` (in `groups`)
    within 15 minutes of `now`. The store keeps only its hash."""
    if not user:
        raise invalid_argument("a grant needs a user name")
    code = new_code()
    await store.add_code(code_hash(code), user, tuple(groups), now, now + CODE_TTL_S)
    return code


def challenge_key(signing_key: SigningKey) -> bytes:
    """The MAC key for challenges: derived from the signing key all instances share, so no
    other secret needs distributing; a derived key reveals nothing about the signing key."""
    raw = tokens.raw_private(signing_key.private)
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"bindingd gateway challenge v1").derive(raw)


@dataclass(frozen=True)
class Session:
    token: str
    claims: Claims


class RevocationCache:
    """The revocation log in memory, so checking a token costs no query: `refresh` reads what
    was added since the last refresh (the gateway calls it every second or so: revocation
    takes effect on every instance within the issue's 5 s)."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._last_id = 0
        # When the log was last read in full: a cache that cannot be refreshed for STALE_S may
        # be missing a revocation another instance recorded (this one cut off from the store,
        # the others not), so calls are refused until it can be read again.
        self.refreshed_at = clock()
        self.stale_after_s = STALE_S
        # Set while refreshes fail (the store down or unreachable), cleared by one that works:
        # only a failing store makes the cache stale, not a slow event loop or a cache nobody
        # refreshes (`follow` not running).
        self.failing = False
        self._users: dict[str, float] = {}
        self._devices: dict[str, float] = {}
        self._jtis: set[str] = set()

    async def follow(self, interval_s: float = REFRESH_S) -> None:
        """Refresh every `interval_s` until cancelled (the gateway runs it as a task). While the
        store is down, what was seen stays in force and each interval tries again; no new
        revocation can be recorded meanwhile either."""
        while True:
            try:
                await self.refresh()
            except BindingdError as e:
                if not self.failing:
                    log.warning(
                        "revocations_refresh_failed", error=e.message, refused_after_s=self.stale_after_s
                    )
                self.failing = True
            await asyncio.sleep(interval_s)

    async def refresh(self) -> None:
        for entry in await self._store.revocations_since(self._last_id):
            self.add(entry)
            self._last_id = max(self._last_id, entry.id)
        if self.failing:
            log.info("revocations_refreshed_again")
        self.failing = False
        self.refreshed_at = self._clock()

    def stale(self) -> bool:
        return self.failing and self._clock() - self.refreshed_at > self.stale_after_s

    def add(self, entry: Revocation) -> None:
        if entry.kind == RevocationKind.JTI:
            self._jtis.add(entry.subject)
        else:
            seen = self._users if entry.kind == RevocationKind.USER else self._devices
            seen[entry.subject] = max(seen.get(entry.subject, 0.0), entry.at)

    def is_revoked(self, claims: Claims) -> bool:
        # `iat` is whole seconds: a token minted in the second of a revocation counts as before
        # it (revoking one too many beats missing one).
        if claims.jti in self._jtis:
            return True
        user_at = self._users.get(claims.sub)
        if user_at is not None and claims.iat <= user_at:
            return True
        device_at = self._devices.get(claims.jkt)
        return device_at is not None and claims.iat <= device_at


class Sessions:
    def __init__(
        self,
        store: StateStore,
        *,
        gateway_id: str,
        signing_key: SigningKey,
        old_keys: Iterable[VerifyingKey] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self.signing_key = signing_key
        # The current key and the rotated ones whose tokens have not all expired yet.
        self.public_keys = tokens.keyring([signing_key, *old_keys])
        self.verified = tokens.VerifiedTokens()
        self.revocations = RevocationCache(store)
        self._clock = clock
        self._challenge_key = challenge_key(signing_key)

    # -- enrolment ---------------------------------------------------------------------------

    async def grant(self, user: str, groups: Iterable[str] = ()) -> str:
        return await grant(self.store, user, groups, self._clock())

    async def enrol(self, code: str, device_public_key: bytes, proof: bytes) -> Device:
        """Record the device key for the code's user. The proof (the key's signature over the
        code and this gateway's id) is checked first: a bad one records nothing, uses nothing."""
        if len(device_public_key) != 32:
            raise invalid_argument("a device public key is 32 bytes (raw Ed25519)")
        normal = normalise_code(code)
        if not verify_signature(device_public_key, proof, enrol_message(self.gateway_id, normal)):
            raise self._enrol_failed("the enrolment proof was not signed by the device key it came with")
        thumb = tokens.thumbprint(Ed25519PublicKey.from_public_bytes(device_public_key))
        candidate = Device(thumb, "", (), device_public_key, 0.0)
        result, device = await self.store.enrol(code_hash(normal), candidate, self._clock())
        if result == EnrolResult.OK and device is not None:
            return device
        raise self._enrol_failed(WHY_NOT_ENROLLED[result])

    def _enrol_failed(self, why: str) -> BindingdError:
        # Never the code itself: it may still be valid, and messages end up in logs.
        return BindingdError(
            Reason.NOT_LOGGED_IN,
            f'cannot enrol at gateway "{self.gateway_id}": {why}; ask an admin for a new code '
            "(`bindingd gateway grant --user NAME`) and log in again with it",
        )

    # -- sessions ----------------------------------------------------------------------------

    def challenge(self) -> str:
        """A nonce any instance can check: issue time, 16 random bytes, their MAC."""
        body = int(self._clock()).to_bytes(8, "big") + secrets.token_bytes(16)
        mac = hmac.new(self._challenge_key, body, hashlib.sha256).digest()
        return tokens.b64url(body + mac)

    def _check_challenge(self, nonce: str) -> bool:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, UnicodeError):
            return False
        if len(raw) != 8 + 16 + 32:
            return False
        body, mac = raw[:24], raw[24:]
        if not hmac.compare_digest(mac, hmac.new(self._challenge_key, body, hashlib.sha256).digest()):
            return False
        issued = int.from_bytes(body[:8], "big")
        now = self._clock()
        return issued - CHALLENGE_SKEW_S <= now <= issued + CHALLENGE_TTL_S

    async def open(
        self, env: str, thumbprint: str, nonce: str, signature: bytes, grants_for: GrantsFor, ttl_s: int
    ) -> Session:
        """A token for the enrolled, unrevoked device `thumbprint` that signed `nonce` for `env`,
        granting what `grants_for(user, groups, env)` says, valid `ttl_s` seconds (the env's)."""
        if not self._check_challenge(nonce):
            raise tokens.not_logged_in(
                self.gateway_id, env, "the login challenge expired or was not issued by this gateway"
            )
        device = await self.store.device(thumbprint)
        if device is None:
            raise tokens.not_logged_in(self.gateway_id, env, "this device is not enrolled at the gateway")
        if device.revoked_at is not None:
            raise BindingdError(
                Reason.TOKEN_REVOKED,
                f'access to env "{env}" through gateway "{self.gateway_id}" was revoked for this device; '
                f"ask an admin for a new enrolment code (`bindingd gateway grant`) and run "
                f"`bindingd login --env {env}`",
                env=env,
            )
        if not verify_signature(device.public_key, signature, open_message(self.gateway_id, env, nonce)):
            raise tokens.not_logged_in(
                self.gateway_id, env, "the challenge was not signed by the device key enrolled for it"
            )
        token, claims = tokens.mint(
            self.signing_key,
            sub=device.user,
            audience=self.gateway_id,
            env=env,
            bindings=grants_for(device.user, device.groups, env),
            jkt=device.thumbprint,
            now=self._clock(),
            ttl_s=ttl_s,
        )
        return Session(token, claims)

    def check_open(self, claims: Claims) -> None:
        """Before each message of a long stream: the token not revoked since the call began,
        and the revocation log current (see STALE_S)."""
        self._check_current(claims.env)
        if self.revocations.is_revoked(claims):
            raise BindingdError(
                Reason.TOKEN_REVOKED,
                f'access to env "{claims.env}" through gateway "{self.gateway_id}" was revoked while '
                "this stream was open; ask an admin for a new enrolment code (`bindingd gateway "
                f"grant`) and run `bindingd login --env {claims.env}`",
                env=claims.env,
            )

    def verify(self, token: str, env: str) -> Claims:
        """A call's token checked: signature, audience, env, time, the revocations seen so far."""
        self._check_current(env)
        return tokens.verify(
            token,
            audience=self.gateway_id,
            env=env,
            now=self._clock(),
            public_keys=self.public_keys,
            is_revoked=self.revocations.is_revoked,
            verified=self.verified,
        )

    def _check_current(self, env: str) -> None:
        if self.revocations.stale():
            raise BindingdError(
                Reason.BACKEND_UNAVAILABLE,
                f'gateway "{self.gateway_id}" has not been able to read its state store for over '
                f"{self.revocations.stale_after_s:g} s, so it cannot tell whether a token was "
                "revoked: calls are refused until the store is back (ask the gateway's admin)",
                env=env,
            )

    # -- ending access -----------------------------------------------------------------------

    async def logout(self, thumbprint: str) -> bool:
        """Forget a device at the gateway: it opens no new session, its tokens stop verifying.
        The caller has authenticated the device (its token's cnf.jkt is `thumbprint`)."""
        revoked = await self.store.revoke_device(thumbprint, self._clock())
        await self.revocations.refresh()
        return revoked

    async def revoke_user(self, user: str) -> int:
        """Every token the user holds and every device of theirs; the number of devices."""
        count = await self.store.revoke_user(user, self._clock())
        await self.revocations.refresh()
        return count

    async def revoke_token(self, jti: str) -> None:
        await self.store.revoke_token(jti, self._clock())
        await self.revocations.refresh()
