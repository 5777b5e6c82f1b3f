"""Access tokens: PASETO v4.public, signed by the gateway's Ed25519 key (its `signing.key`).

A token says who (`sub`), for which gateway (`aud`) and env, which bindings and actions, when
(`iat`, `nbf`, `exp`, RFC 3339 strings as PASETO's registered claims are), which token (`jti`)
and which device it is bound to (`cnf.jkt`, the device key's thumbprint). Its footer names the
signing key (`kid`, that key's thumbprint), so after a key rotation the gateway verifies with
the old public key the tokens it signed with it until they expire.

Everything that goes wrong maps to one of three reasons: SESSION_EXPIRED (the daemon refreshes
and retries), TOKEN_REVOKED, or NOT_LOGGED_IN with what to do. No message carries the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyseto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bindingd.errors import BindingdError, Reason

HEADER = "v4.public."
# How far another gateway instance's clock may be ahead of this one's: a token minted there
# is not "not yet valid" here for that long. `exp` gets no leeway: the daemon refreshes early.
NBF_LEEWAY_S = 5


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint(key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK SHA-256 thumbprint (base64url), as `cnf.jkt` uses (RFC 7800).

    One function for device keys (`cnf.jkt`) and signing keys (the footer's `kid`)."""
    jwk = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public(key))}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(jwk.encode("ascii")).digest())


def raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


class VerifyingKey:
    """A gateway public key (the current one or a rotated one still verifying old tokens),
    with its kid and pyseto's form ready for verifying."""

    def __init__(self, public: Ed25519PublicKey) -> None:
        self.public = public
        self.kid = thumbprint(public)
        self._paseto: Any = pyseto.Key.from_asymmetric_key_params(4, x=raw_public(public))


class SigningKey:
    """The gateway's private key, with its kid and pyseto's form ready for signing."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.verifying = VerifyingKey(private.public_key())
        self.kid = self.verifying.kid
        self._paseto: Any = pyseto.Key.from_asymmetric_key_params(4, d=raw_private(private))

    def public(self) -> VerifyingKey:
        return self.verifying


def load_signing_key(path: Path) -> SigningKey:
    """Read a PKCS8 PEM Ed25519 private key (`bindingd gateway init` writes `signing.key`)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise BindingdError(Reason.INVALID_ARGUMENT, f"cannot read the signing key {path}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BindingdError(Reason.INVALID_ARGUMENT, f"the signing key {path} is not an Ed25519 key")
    return SigningKey(key)


def keyring(keys: Iterable[SigningKey | VerifyingKey]) -> dict[str, VerifyingKey]:
    """The public keys `verify` accepts, by kid: the current key and any rotated ones."""
    ring: dict[str, VerifyingKey] = {}
    for key in keys:
        public = key.public() if isinstance(key, SigningKey) else key
        ring[public.kid] = public
    return ring


@dataclass(frozen=True)
class Claims:
    sub: str
    aud: str
    env: str
    bindings: dict[str, tuple[str, ...]]
    iat: int  # seconds since the epoch
    nbf: int
    exp: int
    jti: str
    jkt: str  # cnf.jkt: the thumbprint of the device key the token was issued to
    kid: str  # the signing key's thumbprint, from the footer


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError("a time claim is not a string")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("a time claim has no time zone")
    return int(when.timestamp())


def mint(
    key: SigningKey,
    *,
    sub: str,
    audience: str,
    env: str,
    bindings: Mapping[str, Iterable[str]],
    jkt: str,
    now: float,
    ttl_s: int,
) -> tuple[str, Claims]:
    """Sign a token for `sub` on device `jkt`, valid from `now` for `ttl_s` seconds."""
    iat = int(now)
    claims = Claims(
        sub=sub,
        aud=audience,
        env=env,
        bindings={name: tuple(actions) for name, actions in bindings.items()},
        iat=iat,
        nbf=iat,
        exp=iat + ttl_s,
        jti=b64url(secrets.token_bytes(16)),
        jkt=jkt,
        kid=key.kid,
    )
    payload = {
        "sub": claims.sub,
        "aud": claims.aud,
        "env": claims.env,
        "bindings": {name: list(actions) for name, actions in claims.bindings.items()},
        "iat": rfc3339(claims.iat),
        "nbf": rfc3339(claims.nbf),
        "exp": rfc3339(claims.exp),
        "jti": claims.jti,
        "cnf": {"jkt": claims.jkt},
    }
    token = pyseto.encode(
        key._paseto,
        json.dumps(payload, separators=(",", ":")),
        footer=json.dumps({"kid": key.kid}, separators=(",", ":")),
    )
    return token.decode("ascii"), claims


def not_logged_in(audience: str, env: str, why: str) -> BindingdError:
    return BindingdError(
        Reason.NOT_LOGGED_IN,
        f'not logged in to gateway "{audience}" for env "{env}": {why}; run `bindingd login --env {env}`',
        env=env,
    )


def read_footer_kid(token: str) -> str:
    """The footer's kid, read before the signature is checked (the footer is signed too)."""
    parts = token.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}." != HEADER:
        raise ValueError("not a v4.public token with a footer")
    footer = json.loads(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)))
    kid = footer.get("kid") if isinstance(footer, dict) else None
    if not isinstance(kid, str):
        raise ValueError("no kid in the footer")
    return kid


def parse_claims(payload: bytes, kid: str) -> Claims:
    data = json.loads(payload)
    bindings = data["bindings"]
    if not isinstance(bindings, dict):
        raise ValueError("bindings is not a map")
    texts = [data[name] for name in ("sub", "aud", "env", "jti")] + [data["cnf"]["jkt"]]
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("a claim is not a string")
    return Claims(
        sub=data["sub"],
        aud=data["aud"],
        env=data["env"],
        bindings={str(name): tuple(str(a) for a in actions) for name, actions in bindings.items()},
        iat=parse_rfc3339(data["iat"]),
        nbf=parse_rfc3339(data["nbf"]),
        exp=parse_rfc3339(data["exp"]),
        jti=data["jti"],
        jkt=data["cnf"]["jkt"],
        kid=kid,
    )


class VerifiedTokens:
    """Tokens whose signature verified, with their claims, so that a session's token costs one
    Ed25519 verification, not one per call (the check dominated a KV call's cost at the
    gateway). Keyed by the whole token string: only the exact bytes that verified hit. A hit
    still needs its signing key to be trusted now (the same key object in the keyring: a key
    dropped at a reload is honoured no longer), and every claim check (audience, env, time,
    revocation) runs on every call. Bounded: the oldest entries go first."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: dict[str, tuple[Claims, VerifyingKey]] = {}

    def get(self, token: str, public_keys: Mapping[str, VerifyingKey]) -> Claims | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, key = entry
        if public_keys.get(claims.kid) is not key:
            del self._entries[token]
            return None
        return claims

    def add(self, token: str, claims: Claims, key: VerifyingKey) -> None:
        self._entries[token] = (claims, key)
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]


def _signed_claims(token: str, audience: str, env: str, public_keys: Mapping[str, VerifyingKey]) -> Claims:
    """The claims of a token whose signature verifies with a key of `public_keys`."""
    try:
        kid = read_footer_kid(token)
    except (ValueError, UnicodeError):  # json's errors are ValueErrors; binascii.Error too
        raise not_logged_in(audience, env, "the access token is not one this gateway issues") from None
    key = public_keys.get(kid)
    if key is None:
        raise not_logged_in(
            audience, env, "the access token was signed by a key this gateway does not know"
        ) from None
    try:
        # No deserializer: pyseto returns the verified bytes and checks no claim itself (its
        # checks use its own clock; ours use `now`).
        payload = pyseto.decode(key._paseto, token).payload
        if not isinstance(payload, bytes):
            raise ValueError("the payload is not bytes")
        return parse_claims(payload, kid)
    except (pyseto.PysetoError, ValueError, KeyError, TypeError, AttributeError):
        # A flipped byte anywhere fails the signature; a payload we did not write fails parsing.
        raise not_logged_in(audience, env, "the access token does not verify") from None


def verify(
    token: str,
    *,
    audience: str,
    env: str,
    now: float,
    public_keys: Mapping[str, VerifyingKey],
    is_revoked: Callable[[Claims], bool],
    verified: VerifiedTokens | None = None,
) -> Claims:
    """The token's claims if it is for this gateway and env, valid at `now` and not revoked.

    `verified` remembers tokens whose signature checked out (see VerifiedTokens): the same token
    on its next call skips the Ed25519 verification and the parsing, never the checks below.

    Raises BindingdError: SESSION_EXPIRED, TOKEN_REVOKED, or NOT_LOGGED_IN for everything else
    (garbage, tampered, an unknown signing key, not yet valid, another gateway or env)."""
    claims = verified.get(token, public_keys) if verified is not None else None
    if claims is None:
        claims = _signed_claims(token, audience, env, public_keys)
        if verified is not None:
            verified.add(token, claims, public_keys[claims.kid])
    if claims.aud != audience:
        raise not_logged_in(audience, env, "the access token was issued by another gateway")
    if claims.env != env:
        raise not_logged_in(audience, env, f'the access token is for env "{claims.env}"')
    if now + NBF_LEEWAY_S < claims.nbf:
        raise not_logged_in(audience, env, f"the access token is not valid before {rfc3339(claims.nbf)}")
    # Revoked before expired: a revoked token must not send the daemon into a refresh.
    if is_revoked(claims):
        raise BindingdError(
            Reason.TOKEN_REVOKED,
            f'access to env "{env}" through gateway "{audience}" was revoked; ask an admin for a new '
            f"enrolment code (`bindingd gateway grant`) and run `bindingd login --env {env}`",
            env=env,
        )
    if now >= claims.exp:
        raise BindingdError(
            Reason.SESSION_EXPIRED,
            f'the session for env "{env}" at gateway "{audience}" expired at {rfc3339(claims.exp)}; '
            f"the daemon opens a new one (if this persists, run `bindingd login --env {env}`)",
            env=env,
        )
    return claims
