"""Signing the proxy Worker's requests (the Worker's side is worker/proxy.js, `authenticate`).

A token is `<payload b64url>.<signature b64url>` in `authorization: Bindingd ...`. The payload
binds the token to one request: method, path, SHA-256 of the arguments header and of the body,
with a short life and a random jti the Worker refuses to see twice. Ed25519 because WebCrypto in
workerd verifies it natively and the public half can be a plain Worker secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TOKEN_TTL_S = 30  # below the Worker's MAX_TTL_S (60): leaves room for clock skew


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The value of the Worker's BINDINGD_PUBLIC_KEY secret: the raw 32 bytes, base64url."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64url(raw)


def sign(
    key: Ed25519PrivateKey,
    method: str,
    path: str,
    args: str,
    body_sha256: str,
    *,
    now: float | None = None,
    ttl: int = TOKEN_TTL_S,
    jti: str | None = None,
) -> str:
    """The authorization header value for one request (`args` is the x-bindingd-args text)."""
    iat = int(time.time() if now is None else now)
    claims = {
        "v": 1,
        "iat": iat,
        "exp": iat + ttl,
        "jti": jti or secrets.token_urlsafe(18),
        "m": method,
        "p": path,
        "ah": hashlib.sha256(args.encode()).hexdigest(),
        "bh": body_sha256,
    }
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return f"Bindingd {b64url(payload)}.{b64url(key.sign(payload))}"
