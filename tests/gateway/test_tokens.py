"""Access tokens: every way a token can be wrong maps to the right reason, and no message
carries the token (issue 14, "Tokens")."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.errors import BindingdError, Reason
from bindingd.gateway import tokens
from bindingd.gateway.tokens import Claims, SigningKey

NOW = 1_800_000_000
GW = "team-gw"


def new_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def device_jkt() -> str:
    return tokens.thumbprint(Ed25519PrivateKey.generate().public_key())


def mint(key: SigningKey, *, now: int = NOW, ttl_s: int = 900, env: str = "staging", aud: str = GW) -> str:
    token, _ = tokens.mint(
        key,
        sub="alice",
        audience=aud,
        env=env,
        bindings={"CACHE": ["read", "write"], "APP_DB": ["read"]},
        jkt="device-thumb",
        now=now,
        ttl_s=ttl_s,
    )
    return token


def never(_: Claims) -> bool:
    return False


def verify(
    token: str, *keys: SigningKey, now: float = NOW + 1, env: str = "staging", revoked=never
) -> Claims:
    return tokens.verify(
        token, audience=GW, env=env, now=now, public_keys=tokens.keyring(keys), is_revoked=revoked
    )


def fails(token: str, reason: Reason, *keys: SigningKey, **kw) -> BindingdError:
    with pytest.raises(BindingdError) as info:
        verify(token, *keys, **kw)
    err = info.value
    assert err.reason == reason, err.message
    if token:
        assert token not in err.message and token not in str(err)
    parts = token.split(".")
    if len(parts) > 2 and len(parts[2]) >= 24:
        # Not even a recognisable piece of it (the payload or the signature).
        assert parts[2][:24] not in err.message
    return err


def test_a_good_token_verifies_with_its_claims() -> None:
    key = new_key()
    token, minted = tokens.mint(
        key,
        sub="alice",
        audience=GW,
        env="staging",
        bindings={"CACHE": ["read", "write"]},
        jkt=device_jkt(),
        now=NOW,
        ttl_s=900,
    )
    assert token.startswith("v4.public.")
    claims = verify(token, key)
    assert claims == minted
    assert claims.bindings == {"CACHE": ("read", "write")}
    assert (claims.iat, claims.nbf, claims.exp) == (NOW, NOW, NOW + 900)
    assert claims.kid == key.kid and claims.aud == GW and claims.sub == "alice"
    assert len(base64.urlsafe_b64decode(claims.jti + "==")) == 16


def test_the_payload_uses_paseto_registered_claims() -> None:
    """iat/nbf/exp as RFC 3339 strings, the device key as cnf.jkt, the kid in the footer."""
    import json

    key = new_key()
    token = mint(key)
    parts = token.split(".")
    body = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))[:-64]  # payload || signature
    payload = json.loads(body)
    assert payload["exp"] == "2027-01-15T08:15:00Z"
    assert payload["cnf"] == {"jkt": "device-thumb"}
    assert set(payload) == {"sub", "aud", "env", "bindings", "iat", "nbf", "exp", "jti", "cnf"}
    assert json.loads(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))) == {"kid": key.kid}


def test_jti_is_random() -> None:
    key = new_key()
    assert len({verify(mint(key), key).jti for _ in range(20)}) == 20


def test_expired() -> None:
    key = new_key()
    token = mint(key, ttl_s=60)
    assert verify(token, key, now=NOW + 59).sub == "alice"
    err = fails(token, Reason.SESSION_EXPIRED, key, now=NOW + 60)
    assert err.code.name == "UNAUTHENTICATED"
    assert '"staging"' in err.message and GW in err.message and "bindingd login --env staging" in err.message


def test_not_yet_valid() -> None:
    key = new_key()
    token = mint(key, now=NOW + 3600)
    err = fails(token, Reason.NOT_LOGGED_IN, key, now=NOW)
    assert "not valid before" in err.message and "bindingd login --env staging" in err.message
    # Another instance's clock a little ahead is tolerated.
    assert verify(mint(key, now=NOW + tokens.NBF_LEEWAY_S), key, now=NOW).sub == "alice"


def test_wrong_audience() -> None:
    key = new_key()
    err = fails(mint(key, aud="other-gw"), Reason.NOT_LOGGED_IN, key)
    assert "another gateway" in err.message and "bindingd login --env staging" in err.message


def test_wrong_env() -> None:
    key = new_key()
    err = fails(mint(key, env="staging"), Reason.NOT_LOGGED_IN, key, env="production")
    assert 'for env "staging"' in err.message and "bindingd login --env production" in err.message


def flip(token: str, part: int, at: int) -> str:
    """Flip one bit of one decoded byte of part 2 (payload || signature) or 3 (footer)."""
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[at] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)


@pytest.mark.parametrize("at", [0, 20, 40], ids=["payload-start", "payload-middle", "payload-later"])
def test_tampered_payload(at: int) -> None:
    key = new_key()
    fails(flip(mint(key), 2, at), Reason.NOT_LOGGED_IN, key)


@pytest.mark.parametrize("at", [-64, -1], ids=["signature-first", "signature-last"])
def test_tampered_signature(at: int) -> None:
    key = new_key()
    err = fails(flip(mint(key), 2, at), Reason.NOT_LOGGED_IN, key)
    assert "does not verify" in err.message


def test_tampered_footer() -> None:
    key = new_key()
    token = mint(key)
    parts = token.split(".")
    # Another kid the gateway knows: the footer is signed, so the signature still fails.
    other = new_key()
    footer = base64.urlsafe_b64encode(f'{{"kid":"{other.kid}"}}'.encode()).rstrip(b"=").decode()
    fails(".".join([*parts[:3], footer]), Reason.NOT_LOGGED_IN, key, other)


def test_signed_by_another_key() -> None:
    key, attacker = new_key(), new_key()
    err = fails(mint(attacker), Reason.NOT_LOGGED_IN, key)
    assert "key this gateway does not know" in err.message


def test_another_key_claiming_the_gateways_kid() -> None:
    """A forger who copies the gateway's kid into the footer still fails the signature."""
    key, attacker = new_key(), new_key()
    forged = tokens.SigningKey(attacker.private)
    forged.kid = key.kid
    fails(mint(forged), Reason.NOT_LOGGED_IN, key)


def test_rotated_key() -> None:
    old, new = new_key(), new_key()
    old_token = mint(old, ttl_s=900)
    new_token = mint(new, ttl_s=900)
    # During rotation the gateway verifies with both public keys.
    assert verify(old_token, new, old).kid == old.kid
    assert verify(new_token, new, old).kid == new.kid
    # The old key's tokens still expire as theirs do...
    fails(old_token, Reason.SESSION_EXPIRED, new, old, now=NOW + 900)
    # ...and once the old key is dropped, its tokens are not accepted at all.
    fails(old_token, Reason.NOT_LOGGED_IN, new)
    assert verify(new_token, new).kid == new.kid


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "v4.public.",
        "v4.public.AAAA",
        "v4.public.AAAA.AAAA",
        "v4.local.AAAA.eyJraWQiOiJ4In0",
        "v2.public.AAAA.eyJraWQiOiJ4In0",
        "v4.public.!!!!.eyJraWQiOiJ4In0",
        "v4.public.AAAA.bm90IGpzb24",
        "Bearer xyz",
        "v4.public.\u00e9\u00e9.\u00e9",
    ],
)
def test_garbage(garbage: str) -> None:
    err = fails(garbage, Reason.NOT_LOGGED_IN, new_key())
    assert "bindingd login --env staging" in err.message


def test_a_signed_payload_that_is_not_ours() -> None:
    """Signed with the right key but not our claims (a bug or an old format): NOT_LOGGED_IN."""
    import pyseto

    key = new_key()
    footer = f'{{"kid":"{key.kid}"}}'
    for payload in ['{"sub":"alice"}', "[]", "not json", '{"sub":1,"aud":"team-gw"}']:
        token = pyseto.encode(key._paseto, payload, footer=footer).decode()
        fails(token, Reason.NOT_LOGGED_IN, key)


def test_revoked() -> None:
    key = new_key()
    token = mint(key)
    seen: list[Claims] = []

    def revoked(claims: Claims) -> bool:
        seen.append(claims)
        return True

    err = fails(token, Reason.TOKEN_REVOKED, key, revoked=revoked)
    assert seen and seen[0].sub == "alice"
    assert "revoked" in err.message and "bindingd login --env staging" in err.message
    # A revoked token that has also expired says revoked: a refresh would not help.
    fails(token, Reason.TOKEN_REVOKED, key, revoked=revoked, now=NOW + 10_000)


def test_load_signing_key_from_pkcs8_pem(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "signing.key"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key = tokens.load_signing_key(path)
    assert key.kid == tokens.thumbprint(private.public_key())
    assert verify(mint(key), key).kid == key.kid


def test_load_signing_key_refuses_other_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "signing.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(BindingdError, match="not an Ed25519 key"):
        tokens.load_signing_key(path)
    (tmp_path / "bad.key").write_text("nope")
    with pytest.raises(BindingdError, match="cannot read"):
        tokens.load_signing_key(tmp_path / "bad.key")


def test_thumbprint_is_rfc7638() -> None:
    """RFC 8037 appendix A.3's example key and its JWK thumbprint."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert (
        tokens.thumbprint(Ed25519PublicKey.from_public_bytes(x))
        == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_a_remembered_signature_never_skips_a_check() -> None:
    """VerifiedTokens spares the signature check of a token seen before, and nothing else: an
    expired, revoked or other-env token still fails, a key dropped from the keyring no longer
    vouches for it, and a token differing by one byte is verified afresh (and fails)."""
    key = new_key()
    token = mint(key)
    keys = tokens.keyring([key])
    cache = tokens.VerifiedTokens()

    def check(t: str, *, now: float = NOW + 1, env: str = "staging", revoked=never, ring=keys) -> Claims:
        return tokens.verify(
            t, audience=GW, env=env, now=now, public_keys=ring, is_revoked=revoked, verified=cache
        )

    assert check(token).sub == "alice"
    assert cache.get(token, keys) is not None  # remembered
    for kw, reason in (
        ({"now": NOW + 901}, Reason.SESSION_EXPIRED),
        ({"revoked": lambda c: True}, Reason.TOKEN_REVOKED),
        ({"env": "production"}, Reason.NOT_LOGGED_IN),
        ({"ring": tokens.keyring([new_key()])}, Reason.NOT_LOGGED_IN),  # the key was rotated out
    ):
        with pytest.raises(BindingdError) as info:
            check(token, **kw)  # type: ignore[arg-type]
        assert info.value.reason == reason
    tampered = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    with pytest.raises(BindingdError) as info:
        check(tampered)
    assert info.value.reason == Reason.NOT_LOGGED_IN
    small = tokens.VerifiedTokens(size=2)
    for n in range(3):
        t = mint(key, now=NOW + n)
        small.add(t, verify(t, key, now=NOW + n + 1), keys[next(iter(keys))])
    assert len(small._entries) == 2  # bounded, oldest out
