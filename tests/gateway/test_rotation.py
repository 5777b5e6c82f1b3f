"""Rotating the gateway's signing key (issue 14, "Tokens: a gateway key rotated"): with the old
key under `previous_signing_keys`, tokens it signed keep working until they expire while new
sessions are signed with the new key; without it, they stop verifying."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bindingd_client import connect
from conformance.gateway_backend import credentials, developer_config, serving_gateway
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import daemon_in_process, write_project

from bindingd.errors import BindingdError, Reason
from bindingd.gateway import tokens


def _new_key(path: Path) -> Path:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path


async def test_old_tokens_verify_after_a_rotation_and_new_ones_use_the_new_key(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "team"
    inner = write_project(root, "version: 1\nbindings:\n  CACHE: { type: kv }\n")
    old_key = credentials(request).pki / "signing.key"
    new_key = _new_key(tmp_path / "new-signing.key")
    state = {"kind": "sqlite", "path": str(root / "state.sqlite3")}
    async with serving_gateway(root, inner, request, state=state, name="before.yaml") as before:
        port, listen = before.port, before.config.listen
        laptop = developer_config(tmp_path / "laptop", before, request)
        async with daemon_in_process(laptop) as daemon:
            env = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await env.CACHE.put("k", "before")
                session = daemon.runtime.gateway
                assert session is not None
                token = session._token
                assert tokens.read_footer_kid(token) == before.sessions.signing_key.kid
                await before.shutdown()
                rotated = {
                    "listen": listen,
                    "signing_key": str(new_key),
                    "previous_signing_keys": [str(old_key)],
                }
                async with serving_gateway(
                    root, inner, request, state=state, name="after.yaml", settings=rotated
                ) as after:
                    assert after.port == port
                    # The daemon's session token, signed with the old key, still serves.
                    assert await env.CACHE.get("k") == "before"
                    assert session._token == token
                    # A new session is signed with the new key.
                    await session.renew(token)
                    assert tokens.read_footer_kid(session._token) == after.sessions.signing_key.kid
                    assert after.sessions.signing_key.kid != before.sessions.signing_key.kid
                    assert await env.CACHE.get("k") == "before"
                    # Without the old key, its tokens no longer verify.
                    after.sessions.public_keys.pop(before.sessions.signing_key.kid)
                    with pytest.raises(BindingdError) as refused:
                        after.sessions.verify(token, "dev")
                    assert refused.value.reason == Reason.NOT_LOGGED_IN
                    assert "a key this gateway does not know" in refused.value.message
            finally:
                await env.aclose()
