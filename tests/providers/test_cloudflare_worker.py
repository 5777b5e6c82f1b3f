"""The proxy Worker (bindingd/providers/cloudflare/worker/proxy.js) inside Miniflare, spoken to
over HTTP on loopback as the daemon would: every call needs a fresh token signed by the key whose
public half the Worker holds; unsigned, expired, wrong-key, replayed and tampered requests are
refused and change nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.providers.cloudflare.token import public_key_b64, sign

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "bindingd/providers/cloudflare/worker/serve.mjs"
NODE_DIR = Path(os.environ.get("BINDINGD_NODE_DIR", ROOT / "clients/node"))
MINIFLARE = NODE_DIR / "node_modules/miniflare"


@dataclass
class Worker:
    url: str
    key: Ed25519PrivateKey

    def call(
        self,
        binding: str,
        op: str,
        args: dict[str, object] | None = None,
        body: bytes = b"",
        *,
        key: Ed25519PrivateKey | None = None,
        auth: str | None = None,
        **sign_options: object,
    ) -> tuple[int, bytes, dict[str, str]]:
        path = f"/v1/{binding}/{op}"
        args_text = json.dumps(args or {})
        if auth is None:
            auth = sign(
                key or self.key,
                "POST",
                path,
                args_text,
                hashlib.sha256(body).hexdigest(),
                **sign_options,  # type: ignore[arg-type]
            )
        return self.raw(path, args_text, body, auth)

    def raw(
        self, path: str, args_text: str | None, body: bytes, auth: str
    ) -> tuple[int, bytes, dict[str, str]]:
        """`args_text` None: no x-bindingd-args header (the arguments are the body)."""
        headers = {} if args_text is None else {"x-bindingd-args": args_text}
        if auth:
            headers["authorization"] = auth
        req = urllib.request.Request(self.url.rstrip("/") + path, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    if shutil.which("node") is None or not MINIFLARE.exists():
        pytest.skip("needs node and clients/node's packages (make node)")
    key = Ed25519PrivateKey.generate()
    state = tmp_path_factory.mktemp("cfproxy")
    proc = subprocess.Popen(
        ["node", str(SERVE), public_key_b64(key), str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "Miniflare did not start (see stderr)"
        yield Worker(json.loads(line)["url"], key)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def kv_get(w: Worker, key: str) -> bytes | None:
    status, body, _ = w.call("CACHE", "get", {"key": key})
    if status == 404:
        return None
    assert status == 200, body
    return body


def test_signed_kv_round_trip(worker: Worker) -> None:
    k = f"rt-{uuid.uuid4().hex}"
    status, body, _ = worker.call("CACHE", "put", {"key": k, "metadata": {"v": 2}}, b"hello")
    assert status == 200, body
    status, body, headers = worker.call("CACHE", "get", {"key": k})
    assert (status, body) == (200, b"hello")
    assert json.loads(headers["x-bindingd-metadata"]) == {"v": 2}
    status, body, _ = worker.call("CACHE", "list", {"prefix": k})
    assert [x["name"] for x in json.loads(body)["keys"]] == [k]


@pytest.fixture
def seeded(worker: Worker) -> str:
    k = f"sig-{uuid.uuid4().hex}"
    assert worker.call("CACHE", "put", {"key": k}, b"original")[0] == 200
    return k


def refused(result: tuple[int, bytes, dict[str, str]], words: str) -> None:
    status, body, _ = result
    assert status == 401, body
    err = json.loads(body)["error"]
    assert err["reason"] == "AUTH_FAILED"
    assert words in err["message"]


def test_unsigned_refused(worker: Worker, seeded: str) -> None:
    refused(worker.call("CACHE", "put", {"key": seeded}, b"evil", auth=""), "not signed")
    assert kv_get(worker, seeded) == b"original"


def test_expired_refused(worker: Worker, seeded: str) -> None:
    import time

    old = time.time() - 600
    refused(worker.call("CACHE", "put", {"key": seeded}, b"evil", now=old), "expired")
    assert kv_get(worker, seeded) == b"original"


def test_too_long_lived_refused(worker: Worker, seeded: str) -> None:
    refused(worker.call("CACHE", "put", {"key": seeded}, b"evil", ttl=3600), "lifetime")
    assert kv_get(worker, seeded) == b"original"


def test_wrong_key_refused(worker: Worker, seeded: str) -> None:
    other = Ed25519PrivateKey.generate()
    refused(worker.call("CACHE", "put", {"key": seeded}, b"evil", key=other), "bad signature")
    assert kv_get(worker, seeded) == b"original"


def test_replay_refused(worker: Worker, seeded: str) -> None:
    path = "/v1/CACHE/delete"
    args = json.dumps({"key": seeded})
    auth = sign(worker.key, "POST", path, args, hashlib.sha256(b"").hexdigest())
    # Put the value back between the two: the replayed delete must not remove it again.
    assert worker.raw(path, args, b"", auth)[0] == 200
    assert kv_get(worker, seeded) is None
    assert worker.call("CACHE", "put", {"key": seeded}, b"original")[0] == 200
    refused(worker.raw(path, args, b"", auth), "replayed")
    assert kv_get(worker, seeded) == b"original"


def test_tampered_body_refused(worker: Worker, seeded: str) -> None:
    path = "/v1/CACHE/put"
    args = json.dumps({"key": seeded})
    auth = sign(worker.key, "POST", path, args, hashlib.sha256(b"signed").hexdigest())
    refused(worker.raw(path, args, b"evil", auth), "body does not match")
    assert kv_get(worker, seeded) == b"original"


def test_tampered_args_refused(worker: Worker, seeded: str) -> None:
    path = "/v1/CACHE/delete"
    auth = sign(worker.key, "POST", path, json.dumps({"key": "other"}), hashlib.sha256(b"").hexdigest())
    refused(worker.raw(path, json.dumps({"key": seeded}), b"", auth), "arguments")
    assert kv_get(worker, seeded) == b"original"


def test_arguments_in_the_body_are_signed_as_the_body(worker: Worker, seeded: str) -> None:
    """Arguments too large for a header travel as the body (ProxyClient.open): the signature
    covers "" as the arguments and the body, so neither can be swapped."""
    path = "/v1/CACHE/delete"
    signed = json.dumps({"key": "other"}).encode()
    auth = sign(worker.key, "POST", path, "", hashlib.sha256(signed).hexdigest())
    refused(worker.raw(path, None, json.dumps({"key": seeded}).encode(), auth), "body does not match")
    # Signed for header arguments, sent as the body: the arguments are not the signed ones.
    args = json.dumps({"key": seeded})
    auth = sign(worker.key, "POST", path, args, hashlib.sha256(b"").hexdigest())
    refused(worker.raw(path, None, args.encode(), auth), "arguments")
    assert kv_get(worker, seeded) == b"original"
    # Signed as it is sent, it is done.
    assert worker.call("CACHE", "put", {"key": f"{seeded}-gone"}, b"x")[0] == 200
    body = json.dumps({"key": f"{seeded}-gone"}).encode()
    auth = sign(worker.key, "POST", path, "", hashlib.sha256(body).hexdigest())
    status, answer, _ = worker.raw(path, None, body, auth)
    assert status == 200, answer
    assert kv_get(worker, f"{seeded}-gone") is None


def test_token_for_another_path_refused(worker: Worker, seeded: str) -> None:
    args = json.dumps({"key": seeded})
    auth = sign(worker.key, "POST", "/v1/CACHE/get", args, hashlib.sha256(b"").hexdigest())
    refused(worker.raw("/v1/CACHE/delete", args, b"", auth), "another request")
    assert kv_get(worker, seeded) == b"original"


def test_tampered_object_body_refused(worker: Worker) -> None:
    """R2 puts stream: the signed SHA-256 goes to R2's own check, which stores nothing."""
    k = f"obj-{uuid.uuid4().hex}"
    path = "/v1/ASSETS_BUCKET/put"
    args = json.dumps({"key": k})
    auth = sign(worker.key, "POST", path, args, hashlib.sha256(b"signed").hexdigest())
    status, body, _ = worker.raw(path, args, b"evil", auth)
    assert status in (400, 401), body
    status, body, _ = worker.call("ASSETS_BUCKET", "head", {"key": k})
    assert json.loads(body)["object"] is None


def test_tampered_part_body_refused(worker: Worker) -> None:
    """A part streams to R2 while the Worker hashes it: a part whose bytes are not the signed
    ones gets no etag, so it cannot be completed into an object."""
    k = f"mp-{uuid.uuid4().hex}"
    status, body, _ = worker.call("ASSETS_BUCKET", "mpCreate", {"key": k})
    assert status == 200, body
    upload_id = json.loads(body)["uploadId"]
    path = "/v1/ASSETS_BUCKET/mpPart"
    args = json.dumps({"key": k, "uploadId": upload_id, "partNumber": 1})
    auth = sign(worker.key, "POST", path, args, hashlib.sha256(b"signed").hexdigest())
    refused(worker.raw(path, args, b"evil", auth), "body does not match")
    status, body, _ = worker.call(
        "ASSETS_BUCKET", "mpPart", {"key": k, "uploadId": upload_id, "partNumber": 1}, b"signed"
    )
    assert status == 200 and json.loads(body)["etag"], body


def test_objects_sql_queue(worker: Worker) -> None:
    k = f"obj-{uuid.uuid4().hex}"
    data = b"x" * 300_000
    status, body, _ = worker.call("ASSETS_BUCKET", "put", {"key": k}, data)
    assert status == 200, body
    assert json.loads(body)["object"]["etag"] == hashlib.md5(data).hexdigest()
    status, body, headers = worker.call("ASSETS_BUCKET", "get", {"key": k})
    assert body == data and json.loads(headers["x-bindingd-object"])["size"] == len(data)

    t = f"t_{uuid.uuid4().hex[:8]}"
    q = worker.call("APP_DB", "exec", {"sql": f"CREATE TABLE {t} (id INTEGER, b BLOB)"})
    assert q[0] == 200, q[1]
    status, body, _ = worker.call(
        "APP_DB",
        "batch",
        {
            "statements": [
                {"sql": f"INSERT INTO {t} VALUES (?, ?)", "params": [1, {"$blob": "AAE"}]},
                {"sql": f"SELECT id, b FROM {t}"},
            ]
        },
    )
    assert status == 200, body
    assert json.loads(body)["results"][1]["results"] == [{"id": 1, "b": {"$blob": "AAE="}}]
    status, body, _ = worker.call("APP_DB", "query", {"sql": "SELECT nope FROM missing"})
    assert status == 400 and json.loads(body)["error"]["reason"] == "SQL_ERROR"

    status, body, _ = worker.call("JOBS", "send", {"body": {"id": 7}, "contentType": "json"})
    assert status == 200, body


def test_missing_binding_named(worker: Worker) -> None:
    status, body, _ = worker.call("NOPE", "get", {"key": "k"})
    err = json.loads(body)["error"]
    assert status == 404 and err["reason"] == "BINDING_NOT_FOUND"
    assert '"NOPE"' in err["message"] and "CACHE" in err["message"]


# --- the cloudflare providers, through the same Worker ------------------------------------------


def _pem(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _binding(name: str, type_: str, url: str, key: str, **options: str) -> Any:
    from bindingd.config.model import Binding, Connection

    connection = Connection("test-cf", "cloudflare", {"url": url, "key": key})
    return Binding(name, type_, "staging", connection=connection, options=options)


async def _provider(binding: Any, tmp_path: Path) -> Any:
    from bindingd import registry
    from bindingd.providers.connections import ProviderContext, SharedConnections

    provider = registry.create_provider(binding, ProviderContext(tmp_path, SharedConnections()))
    await provider.start()
    return provider


async def test_kv_provider_round_trip(worker: Worker, tmp_path: Path) -> None:
    kv = await _provider(_binding("CACHE", "kv", worker.url, _pem(worker.key)), tmp_path)
    try:
        p = f"prov-{uuid.uuid4().hex}:"
        await kv.put(p + "a", b"1", None, '{"v": 1}')
        await kv.put(p + "b", b"2", None, None)
        rec = await kv.get(p + "a", 0)
        assert (rec.value, json.loads(rec.metadata_json)) == (b"1", {"v": 1})
        keys, more = await kv.list(p, None, 1, 0)
        assert [k.name for k in keys] == [p + "a"] and more
        keys, more = await kv.list(p, p + "a", 10, 0)
        assert [k.name for k in keys] == [p + "b"] and not more
        await kv.delete(p + "a")
        assert await kv.get(p + "a", 0) is None
    finally:
        await kv.close()


async def test_provider_errors_named(worker: Worker, tmp_path: Path) -> None:
    from bindingd.errors import BindingdError, Reason

    missing = await _provider(
        _binding("CACHE", "kv", worker.url, _pem(worker.key), remote_binding="NOT_ON_WORKER"), tmp_path
    )
    wrong = await _provider(_binding("CACHE", "kv", worker.url, _pem(Ed25519PrivateKey.generate())), tmp_path)
    down = await _provider(_binding("CACHE", "kv", "http://127.0.0.1:9", _pem(worker.key)), tmp_path)
    queue = await _provider(_binding("JOBS", "queue", worker.url, _pem(worker.key)), tmp_path)
    try:
        with pytest.raises(BindingdError) as e:
            await missing.get("k", 0)
        assert e.value.reason == Reason.BINDING_NOT_FOUND and "NOT_ON_WORKER" in e.value.message
        with pytest.raises(BindingdError) as e:
            await wrong.get("k", 0)
        assert e.value.reason == Reason.AUTH_FAILED and "bad signature" in e.value.message
        with pytest.raises(BindingdError) as e:
            await down.get("k", 0)
        assert e.value.reason == Reason.BACKEND_UNAVAILABLE and "test-cf" in e.value.message
        with pytest.raises(BindingdError) as e:
            await queue.receive(1, 30, 0)
        assert e.value.reason == Reason.INVALID_ARGUMENT and "not supported from a laptop" in e.value.message
    finally:
        for p in (missing, wrong, down, queue):
            await p.close()


async def test_queue_provider_sends(worker: Worker, tmp_path: Path) -> None:
    from bindingd.domain.queue import OutgoingMessage

    queue = await _provider(_binding("JOBS", "queue", worker.url, _pem(worker.key)), tmp_path)
    try:
        one = OutgoingMessage("1", 0, b'{"id": 7}', "json", 0)
        two = OutgoingMessage("2", 0, b"\x00\x01", "bytes", 0)
        await queue.send([one])
        await queue.send([one, two])
    finally:
        await queue.close()


def _error(result: tuple[int, bytes, dict[str, str]]) -> tuple[int, str, str]:
    status, body, _ = result
    err = json.loads(body)["error"]
    return status, err["reason"], err["message"]


def test_store_failures_and_caller_mistakes_are_told_apart(worker: Worker) -> None:
    """A binding call that throws in the Worker: what the caller got wrong (arguments the runtime
    refuses, an R2 caller code, a KV 4xx) is INVALID_ARGUMENT; the store's own failure (R2's
    InternalError 10001 here, which Miniflare answers for completing an upload id it never made)
    is BACKEND_UNAVAILABLE, naming the binding."""
    mistakes = [
        worker.call("ASSETS_BUCKET", "list", {"limit": 5000}),  # R2 10022
        worker.call("ASSETS_BUCKET", "head", {"key": "k" * 2000}),  # R2 10020
        worker.call("ASSETS_BUCKET", "get", {"key": "k", "range": {"offset": -1}}),  # RangeError
        worker.call("ASSETS_BUCKET", "get", {"key": "k", "onlyIf": {"etagMatches": 5}}),  # TypeError
        worker.call("CACHE", "delete", {"key": "k" * 600}),  # KV 414
    ]
    for result in mistakes:
        status, reason, message = _error(result)
        assert (status, reason) == (400, "INVALID_ARGUMENT"), message
    internal = worker.call(
        "ASSETS_BUCKET",
        "mpComplete",
        {"key": "k", "uploadId": "never-made", "parts": [{"partNumber": 1, "etag": "e"}]},
    )
    status, reason, message = _error(internal)
    assert (status, reason) == (503, "BACKEND_UNAVAILABLE"), message
    assert "(10001)" in message and "ASSETS_BUCKET" in message


async def test_store_failure_reaches_the_provider_as_backend_unavailable(
    worker: Worker, tmp_path: Path
) -> None:
    from bindingd.errors import BindingdError, Reason

    bucket = await _provider(
        _binding("ASSETS", "objects", worker.url, _pem(worker.key), remote_binding="ASSETS_BUCKET"), tmp_path
    )
    try:
        with pytest.raises(BindingdError) as e:
            await bucket.complete_multipart_upload("k", "never-made", [(1, "e")])
        assert e.value.reason == Reason.BACKEND_UNAVAILABLE, e.value
        assert "test-cf" in e.value.message and "(10001)" in e.value.message and "retry" in e.value.message
        with pytest.raises(BindingdError) as e:
            await bucket.head("k" * 2000)
        assert e.value.reason == Reason.INVALID_ARGUMENT, e.value
    finally:
        await bucket.close()
