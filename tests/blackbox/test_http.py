"""HTTP/JSON (issue 16): the Connect endpoint and /objects on a real daemon, over real sockets.

One daemon (unix socket + loopback TCP) serves the whole module; each test uses its own keys.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import os
import shutil
import socket
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from support import connect_envelopes as _envelopes
from support import daemon_in_process, write_project

from bindingd.server.app import Daemon

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONFIG = """\
version: 1
env: dev
bindings:
  CACHE: { type: kv }
  BUCKET: { type: objects }
  DB: { type: sql }
  JOBS: { type: queue }
  NAME: { type: var, value: "shop" }
"""
JSON = {"content-type": "application/json"}


def _free_port_pair() -> int:
    """A port P with P+1 free too (the HTTP listener takes --listen's port + 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


class Http:
    def __init__(self, daemon: Daemon, port: int, token: str) -> None:
        self.daemon = daemon
        self.unix = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.http_socket_path)))
        self.tcp = aiohttp.ClientSession()
        self.tcp_base = f"http://127.0.0.1:{port + 1}"
        self.token = token

    async def call(
        self, method: str, body: dict[str, Any], headers: dict[str, str] = JSON
    ) -> tuple[int, dict[str, Any]]:
        async with self.unix.post(f"http://bindingd/{method}", data=json.dumps(body), headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def close(self) -> None:
        await self.unix.close()
        await self.tcp.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Http]:
    root = tmp_path_factory.mktemp("http")
    config = write_project(root, CONFIG)
    port = _free_port_pair()
    async with daemon_in_process(config, listen=f"127.0.0.1:{port}", token="t0ken-for-http") as daemon:
        client = Http(daemon, port, "t0ken-for-http")
        try:
            yield client
        finally:
            await client.close()


def _reason(body: dict[str, Any]) -> dict[str, Any]:
    detail = body["details"][0]
    assert detail["type"] == "google.rpc.ErrorInfo"
    debug: dict[str, Any] = detail["debug"]
    return {"reason": debug["reason"], **debug["metadata"]}


async def test_socket_is_0600_beside_the_grpc_one(http: Http) -> None:
    path = http.daemon.http_socket_path
    assert path == http.daemon.socket_path.with_name("http.sock")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_pinned_curl_example(http: Http) -> None:
    """The example of DESIGN.md / the issue, with curl itself."""
    status, _ = await http.call("bindingd.v1.KV/Put", {"binding": "CACHE", "key": "k", "value": "aGk="})
    assert status == 200
    sock = str(http.daemon.http_socket_path)
    args = ["curl", "-sS", "-H", "content-type: application/json", "--unix-socket", sock]
    # In a subprocess the loop awaits: the daemon answering it runs on this same loop.
    proc = await asyncio.create_subprocess_exec(
        *args,
        "http://bindingd/bindingd.v1.KV/Get",
        "-d",
        '{"binding":"CACHE","key":"k"}',
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out) == {"entry": {"key": "k", "found": True, "value": "aGk="}}


async def test_kv_vars_sql_queue_round_trip(http: Http) -> None:
    put = {"binding": "CACHE", "key": "u:1", "value": base64.b64encode(b'{"a":1}').decode()}
    assert (await http.call("bindingd.v1.KV/Put", {**put, "metadataJson": '{"m":2}'}))[0] == 200
    status, body = await http.call("bindingd.v1.KV/List", {"binding": "CACHE", "prefix": "u:"})
    assert status == 200 and body["keys"] == [{"name": "u:1", "metadataJson": '{"m":2}'}]
    assert (await http.call("bindingd.v1.Vars/Get", {"binding": "NAME"})) == (200, {"value": "shop"})
    status, body = await http.call(
        "bindingd.v1.Database/Query",
        {"binding": "DB", "statement": {"sql": "SELECT ? + 1 AS n", "params": [{"integer": "41"}]}},
    )
    assert status == 200 and body["columns"] == ["n"] and body["rows"] == [{"values": [{"integer": "42"}]}]
    msg = {"body": base64.b64encode(b"hello").decode(), "contentType": "text"}
    assert (await http.call("bindingd.v1.Queue/Send", {"binding": "JOBS", "message": msg}))[0] == 200


async def test_errors_carry_reason_binding_env_and_connect_status(http: Http) -> None:
    status, body = await http.call("bindingd.v1.KV/Get", {"binding": "NOPE", "key": "k"})
    assert status == 404 and body["code"] == "not_found" and "NOPE" in body["message"]
    info = _reason(body)
    assert info["reason"] == "BINDING_NOT_FOUND" and info["binding"] == "NOPE" and info["env"] == "dev"
    # The ErrorInfo's protobuf bytes ride along, as Connect sends details.
    assert base64.b64decode(body["details"][0]["value"] + "==")
    status, body = await http.call("bindingd.v1.KV/Get", {"binding": "NAME", "key": "k"})
    assert (status, body["code"], _reason(body)["reason"]) == (
        400,
        "failed_precondition",
        "WRONG_BINDING_TYPE",
    )
    status, body = await http.call(
        "bindingd.v1.Database/Query", {"binding": "DB", "statement": {"sql": "SELEC"}}
    )
    assert (status, _reason(body)["reason"], _reason(body)["binding"]) == (400, "SQL_ERROR", "DB")
    status, body = await http.call("bindingd.v1.KV/Get", {"binding": "CACHE", "nokey": 1})
    assert (status, body["code"]) == (400, "invalid_argument") and "bindingd.v1.KVGetRequest" in body[
        "message"
    ]
    status, body = await http.call("bindingd.v1.KV/Nope", {})
    assert (status, body["code"]) == (501, "unimplemented")
    async with http.unix.post(
        "http://b/bindingd.v1.KV/Get", data="{}", headers={"x-request-id": "rid-7"}
    ) as r:
        assert r.status == 415  # not JSON nor proto: Connect's answer for a wrong content-type
    status, body = await http.call(
        "bindingd.v1.KV/Get", {"binding": "NOPE"}, headers={**JSON, "x-request-id": "rid-7"}
    )
    assert _reason(body)["request_id"] == "rid-7"
    # An x-request-id that is not one (empty, over 64 characters): the id made in its place is
    # the same in the response's header and its error body.
    for given in ("", "r" * 65):
        async with http.unix.post(
            "http://b/bindingd.v1.KV/Get",
            data=json.dumps({"binding": "NOPE"}),
            headers={**JSON, "x-request-id": given},
        ) as r:
            made = r.headers["x-request-id"]
            assert made and made != given and _reason(await r.json())["request_id"] == made


async def test_tcp_wants_the_bearer_token(http: Http) -> None:
    url = f"{http.tcp_base}/bindingd.v1.Vars/Get"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic x"}):
        async with http.tcp.post(url, json={"binding": "NAME"}, headers=headers) as r:
            body = await r.json()
            assert r.status == 401 and body["code"] == "unauthenticated"
            assert _reason(body)["reason"] == "AUTH_FAILED" and "Bearer" in body["message"]
    async with http.tcp.put(f"{http.tcp_base}/objects/BUCKET/x", data=b"no") as r:
        assert r.status == 401
    auth = {"authorization": f"Bearer {http.token}"}
    async with http.tcp.post(url, json={"binding": "NAME"}, headers=auth) as r:
        assert r.status == 200 and await r.json() == {"value": "shop"}


async def test_large_sql_result_streams_through_fetch(http: Http) -> None:
    sql = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1200) SELECT n FROM c"
    status, first = await http.call(
        "bindingd.v1.Database/Query", {"binding": "DB", "statement": {"sql": sql}}
    )
    assert status == 200 and first["cursor"]
    request = json.dumps({"binding": "DB", "cursor": first["cursor"]}).encode()
    headers = {"content-type": "application/connect+json"}
    body = struct.pack(">BI", 0, len(request)) + request
    async with http.unix.post("http://b/bindingd.v1.Database/Fetch", data=body, headers=headers) as r:
        assert r.status == 200 and r.headers["content-type"] == "application/connect+json"
        messages = _envelopes(await r.read())
    assert messages[-1] == (2, {})
    rows = [*first["rows"], *(row for flags, m in messages[:-1] for row in m.get("rows", []))]
    assert [int(row["values"][0]["integer"]) for row in rows] == list(range(1, 1201))
    # A used cursor fails inside the stream's end message, as Connect streams do.
    async with http.unix.post("http://b/bindingd.v1.Database/Fetch", data=body, headers=headers) as r:
        ((flags, end),) = _envelopes(await r.read())
    assert flags == 2 and end["error"]["code"] == "invalid_argument"


async def test_queue_consume_one_batch_per_request(http: Http) -> None:
    msgs = [{"body": base64.b64encode(f"m{i}".encode()).decode(), "contentType": "text"} for i in range(3)]
    assert (await http.call("bindingd.v1.Queue/SendBatch", {"binding": "JOBS", "messages": msgs}))[0] == 200
    ask = json.dumps({"binding": "JOBS", "batchSize": 100, "maxWaitSeconds": 0.2}).encode()
    headers = {"content-type": "application/connect+json"}
    async with http.unix.post(
        "http://b/bindingd.v1.Queue/Consume", data=struct.pack(">BI", 0, len(ask)) + ask, headers=headers
    ) as r:
        messages = _envelopes(await r.read())
    assert messages[-1] == (2, {})
    got = [base64.b64decode(m["body"]) for _, batch in messages[:-1] for m in batch["messages"]]
    assert set(got) >= {b"m0", b"m1", b"m2"}
    leases = [m["leaseId"] for _, batch in messages[:-1] for m in batch["messages"]]
    status, body = await http.call("bindingd.v1.Queue/Ack", {"binding": "JOBS", "acks": leases})
    assert status == 200, body


# --- /objects -----------------------------------------------------------------------------------


async def test_object_put_get_metadata_and_md5(http: Http) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    headers = {
        "content-type": "image/jpeg",
        "cache-control": "max-age=60",
        "content-md5": md5,
        "x-amz-meta-owner": "ann",
    }
    url = "http://b/objects/BUCKET/photos/a%20b.jpg"
    async with http.unix.put(url, data=data, headers=headers) as r:
        assert r.status == 200
        meta = await r.json()
        assert meta["key"] == "photos/a b.jpg" and r.headers["etag"] == meta["httpEtag"]
    async with http.unix.get(url) as r:
        assert r.status == 200 and await r.read() == data
        h = r.headers
        assert (h["content-type"], h["cache-control"], h["x-amz-meta-owner"]) == (
            "image/jpeg",
            "max-age=60",
            "ann",
        )
        assert h["content-md5"] == md5 and int(h["content-length"]) == len(data)
        assert h["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    async with http.unix.head(url) as r:
        assert r.status == 200 and int(r.headers["content-length"]) == len(data) and await r.read() == b""
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    async with http.unix.put(
        "http://b/objects/BUCKET/md5-bad", data=b"abc", headers={"content-md5": bad}
    ) as r:
        assert r.status == 400 and _reason(await r.json())["reason"] == "INVALID_ARGUMENT"
    async with http.unix.get("http://b/objects/BUCKET/md5-bad") as r:
        assert r.status == 404
    async with http.unix.delete(url) as r:
        assert r.status == 204
    async with http.unix.get(url) as r:
        assert r.status == 404 and (await r.json())["code"] == "not_found"


async def test_object_metadata_names_beyond_a_header_token_and_the_object_s_own_headers(http: Http) -> None:
    """R2 custom metadata names are any string; a header name is a token, so the rest goes
    percent-encoded both ways. An empty value stays. The daemon says when the object has no
    Content-Type of its own, and gives its size and version on a 304 too."""
    url = "http://b/objects/BUCKET/meta-names"
    headers = {"x-amz-meta-with%20space": "yes", "x-amz-meta-zo%C3%AB": ""}
    async with http.unix.put(url, data=b"abc", headers=headers, skip_auto_headers=["Content-Type"]) as r:
        assert r.status == 200, await r.text()
        meta = await r.json()
        assert meta["customMetadata"] == {"with space": "yes", "zoë": ""}
    async with http.unix.get(url) as r:
        h = r.headers
        assert (h["x-amz-meta-with%20space"], h["x-amz-meta-zo%C3%AB"]) == ("yes", "")
        assert h["x-bindingd-no-content-type"] == "1" and h["x-bindingd-size"] == "3"
        etag = h["etag"]
    async with http.unix.get(url, headers={"if-none-match": etag}) as r:
        assert r.status == 304
        assert r.headers["x-bindingd-size"] == "3" and r.headers["x-bindingd-version"]
    async with http.unix.put(url, data=b"abc", headers={"content-type": "text/plain"}) as r:
        assert r.status == 200
    async with http.unix.head(url) as r:
        assert "x-bindingd-no-content-type" not in r.headers and r.headers["content-type"] == "text/plain"


async def test_object_ranges(http: Http) -> None:
    data = bytes(range(256)) * 4
    url = "http://b/objects/BUCKET/range.bin"
    async with http.unix.put(url, data=data) as r:
        assert r.status == 200
    for spec, part, content_range in (
        ("bytes=10-19", data[10:20], "bytes 10-19/1024"),
        ("bytes=1000-", data[1000:], "bytes 1000-1023/1024"),
        ("bytes=-4", data[-4:], "bytes 1020-1023/1024"),
        ("bytes=1020-5000", data[1020:], "bytes 1020-1023/1024"),
    ):
        async with http.unix.get(url, headers={"range": spec}) as r:
            assert r.status == 206, spec
            assert await r.read() == part and r.headers["content-range"] == content_range
    async with http.unix.get(url, headers={"range": "bytes=2000-"}) as r:
        assert r.status == 416
    async with http.unix.get(url, headers={"range": "bytes=0-1,5-6"}) as r:
        assert r.status == 200 and await r.read() == data  # several ranges: the whole object, as S3


async def test_object_conditionals(http: Http) -> None:
    url = "http://b/objects/BUCKET/cond.txt"
    async with http.unix.put(url, data=b"v1") as r:
        etag = r.headers["etag"]
    async with http.unix.get(url) as r:
        last_modified = r.headers["last-modified"]
    later = email.utils.formatdate(
        email.utils.parsedate_to_datetime(last_modified).timestamp() + 3600, usegmt=True
    )
    earlier = email.utils.formatdate(
        email.utils.parsedate_to_datetime(last_modified).timestamp() - 3600, usegmt=True
    )
    cases = [
        ({"if-none-match": etag}, 304),
        ({"if-none-match": '"other"'}, 200),
        ({"if-match": etag}, 200),
        ({"if-match": '"other"'}, 412),
        ({"if-modified-since": last_modified}, 304),
        ({"if-modified-since": earlier}, 200),
        ({"if-unmodified-since": earlier}, 412),
        ({"if-unmodified-since": later}, 200),
    ]
    for headers, expected in cases:
        async with http.unix.get(url, headers=headers) as r:
            assert r.status == expected, headers
            if expected == 304:
                assert r.headers["etag"] == etag and await r.read() == b""
        async with http.unix.head(url, headers=headers) as r:
            assert r.status == expected, ("HEAD", headers)
    async with http.unix.put(url, data=b"v2", headers={"if-none-match": "*"}) as r:
        assert r.status == 412
    async with http.unix.put(url, data=b"v2", headers={"if-match": etag}) as r:
        assert r.status == 200
    async with http.unix.get(url) as r:
        assert await r.read() == b"v2"


async def test_object_errors_name_the_binding(http: Http) -> None:
    async with http.unix.get("http://b/objects/NOPE/k") as r:
        body = await r.json()
        assert r.status == 404 and _reason(body) | {"binding": "NOPE"} == _reason(body)
        assert _reason(body)["reason"] == "BINDING_NOT_FOUND"
    async with http.unix.get("http://b/objects/CACHE/k") as r:
        assert r.status == 400 and _reason(await r.json())["reason"] == "WRONG_BINDING_TYPE"
    async with http.unix.get("http://b/objects/BUCKET") as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_argument"


async def test_http_socket_path_rule(tmp_path: Path) -> None:
    from bindingd.server.http_app import http_socket_path

    assert http_socket_path(tmp_path / "bindingd.sock") == tmp_path / "http.sock"
    assert http_socket_path(tmp_path / "abc.sock") == tmp_path / "abc.http.sock"


def _envelope(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


async def test_objects_put_and_get_as_connect_streams(http: Http) -> None:
    """The Objects service itself (client- and server-streaming) also answers over Connect."""
    headers = {"content-type": "application/connect+json"}
    body = b"".join(
        (
            _envelope({"header": {"binding": "BUCKET", "key": "streamed", "customMetadata": {"a": "1"}}}),
            _envelope({"chunk": base64.b64encode(b"hello ").decode()}),
            _envelope({"chunk": base64.b64encode(b"world").decode()}),
        )
    )
    async with http.unix.post("http://b/bindingd.v1.Objects/Put", data=body, headers=headers) as r:
        (flags, answer), (end_flags, end) = _envelopes(await r.read())
    assert (flags, end_flags, end) == (0, 2, {}) and answer["stored"] and answer["object"]["size"] == "11"
    request = _envelope({"binding": "BUCKET", "key": "streamed", "range": {"offset": 6}})
    async with http.unix.post("http://b/bindingd.v1.Objects/Get", data=request, headers=headers) as r:
        messages = _envelopes(await r.read())
    assert messages[0][1]["header"]["object"]["customMetadata"] == {"a": "1"}
    assert b"".join(base64.b64decode(m["chunk"]) for _, m in messages[1:-1]) == b"world"
    assert messages[-1] == (2, {})
