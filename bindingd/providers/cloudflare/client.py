"""The client of a `cloudflare` connection entry: one aiohttp session to the proxy Worker, and the
signing key, shared by every binding on the entry. Also the mapping of the Worker's answers to
the error table.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.config.model import Connection
from bindingd.errors import BindingdError, Reason, backend_timeout, backend_unavailable, invalid_argument
from bindingd.providers.cloudflare.token import sign

DEFAULT_TIMEOUT_S = 30.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# The Worker's reasons that are the error table's own; anything else is the backend's failure.
_PASSED_THROUGH = {r.value for r in Reason}


def load_key(text: str, connection: str) -> Ed25519PrivateKey:
    """The daemon's signing key: a PEM (PKCS#8) Ed25519 private key, or its raw 32 bytes in base64."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if isinstance(key, Ed25519PrivateKey):
                return key
        else:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError:
        pass
    raise BindingdError(
        Reason.AUTH_FAILED,
        f'the key of cloudflare connection "{connection}" is not an Ed25519 private key '
        "(PEM, or its 32 raw bytes in base64); `bindingd cloudflare deploy` writes one",
    )


# Arguments longer than this travel as the request's body rather than in x-bindingd-args.
ARGS_HEADER_MAX = 8 * 1024


@dataclass
class ProxyClient:
    connection: Connection
    url: str
    key: Ed25519PrivateKey
    session: aiohttp.ClientSession
    timeout: float

    async def call(
        self,
        binding: str,
        op: str,
        args: dict[str, Any],
        body: bytes | AsyncIterator[bytes] | BinaryIO = b"",
        body_sha256: str | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One call on the Worker's binding `binding`; raises the error table's error for a
        refusal. Returns (status, body, headers) for 200 and 404 (absent key)."""
        async with self.open(binding, op, args, body, body_sha256) as resp:
            data = await resp.read()
            return resp.status, data, dict(resp.headers)

    def open(
        self,
        binding: str,
        op: str,
        args: dict[str, Any],
        body: bytes | AsyncIterator[bytes] | BinaryIO = b"",
        body_sha256: str | None = None,
    ) -> _Call:
        path = f"/v1/{binding}/{op}"
        args_text = json.dumps(args, separators=(",", ":"))
        headers: dict[str, str] = {}
        if body == b"" and len(args_text) > ARGS_HEADER_MAX:
            # Too large for a header (Cloudflare takes 32 KiB of them in all; a 128 KB queue
            # message or a statement's parameters would be refused with 431): the arguments
            # are the body, and the signature covers "" as arguments and them as the body.
            body, args_text = args_text.encode(), ""
        else:
            headers["x-bindingd-args"] = args_text
        if body_sha256 is None:
            assert isinstance(body, bytes), "a streamed body needs its SHA-256"
            # (a file is streamed with its length: R2 needs it)
            body_sha256 = hashlib.sha256(body).hexdigest()
        headers["authorization"] = sign(self.key, "POST", path, args_text, body_sha256)
        return _Call(self, self.url + path, headers, body)

    async def check_response(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status in (200, 404) and "x-bindingd-kind" in resp.headers:
            return
        if resp.status == 404 and resp.headers.get("x-bindingd-found") == "0":
            return
        text = await resp.text()
        try:
            err = json.loads(text)["error"]
            reason, message = str(err["reason"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            raise backend_unavailable(
                f'the proxy Worker at {self.url} (connection "{self.connection.name}") answered '
                f"HTTP {resp.status} without a bindingd error; is it bindingd's proxy Worker?"
            ) from None
        where = f'proxy Worker at {self.url} (connection "{self.connection.name}")'
        if reason == "AUTH_FAILED":
            raise BindingdError(
                Reason.AUTH_FAILED,
                f"the {where} refused the request: {message}; redeploy with "
                "`bindingd cloudflare deploy` if the key changed",
            )
        if reason == "BINDING_NOT_FOUND":
            # The daemon's binding exists; the Worker lacks it: a deployment mismatch.
            raise BindingdError(
                Reason.BINDING_NOT_FOUND,
                f"{message} ({where}); add it to the Worker's wrangler config and redeploy, "
                "or set remote_binding: to the name it has there",
            )
        if reason in _PASSED_THROUGH and reason not in ("INTERNAL", "BACKEND_UNAVAILABLE"):
            raise BindingdError(Reason(reason), message)
        # The store's own failure inside the Worker (or a Worker that failed): worth a retry.
        raise backend_unavailable(
            f"the {where} failed: {message}; retry, and if it persists check the Worker's logs "
            "(`wrangler tail`) and Cloudflare's status"
        )


class _Call:
    """`async with client.open(...) as resp`: the response, checked, streamed by the caller."""

    def __init__(
        self,
        client: ProxyClient,
        url: str,
        headers: dict[str, str],
        body: bytes | AsyncIterator[bytes] | BinaryIO,
    ) -> None:
        self.client, self.url, self.headers, self.body = client, url, headers, body
        self.resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        c = self.client
        try:
            self.resp = await c.session.post(self.url, headers=self.headers, data=self.body)
        except TimeoutError:
            raise backend_timeout(
                f"the proxy Worker at {c.url} did not answer within {c.timeout:g}s "
                f'(connection "{c.connection.name}")'
            ) from None
        except aiohttp.ClientError as e:
            raise backend_unavailable(
                f'cannot reach the proxy Worker at {c.url} (connection "{c.connection.name}"): {e}'
            ) from None
        try:
            await c.check_response(self.resp)
        except BaseException:
            self.resp.release()
            raise
        return self.resp

    async def __aexit__(self, *exc: object) -> None:
        if self.resp is not None:
            self.resp.release()


async def open_client(connection: Connection) -> ProxyClient:
    """One keep-alive session per connection entry; it connects on first use, not here."""
    url = str(connection.options["url"]).rstrip("/")
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise invalid_argument(
            f'cloudflare connection "{connection.name}": url must be https:// (plain http only on loopback)'
        )
    timeout = float(connection.options.get("timeout", DEFAULT_TIMEOUT_S))
    # The key first: a bad key must not leave a session open ("Unclosed client session").
    key = load_key(str(connection.options["key"]), connection.name)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        connector=aiohttp.TCPConnector(limit=64),
    )
    return ProxyClient(connection, url, key, session, timeout)


async def close_client(client: ProxyClient) -> None:
    await client.session.close()
    # Lets aiohttp's transports finish closing before the loop does.
    await asyncio.sleep(0)
