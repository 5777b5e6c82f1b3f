"""HTTP/JSON (Connect) calls to bindings served through a gateway: relayed there as the gRPC
ones are, so a PHP or curl worker reaches staging the same way (issues 14 and 16)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from blackbox.test_http import _envelopes
from conformance.gateway_backend import developer_config, serving_gateway
from support import daemon_in_process, write_project

INNER = """
    version: 1
    bindings:
      CACHE: { type: kv }
      APP_DB: { type: sql }
      JOBS: { type: queue }
      ASSETS: { type: objects }
"""
JSON = {"content-type": "application/json"}
STREAM = {"content-type": "application/connect+json"}


async def test_connect_json_calls_reach_remote_bindings(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "team"
    async with serving_gateway(root, write_project(root, INNER), request) as gateway:
        laptop = developer_config(tmp_path / "laptop", gateway, request)
        async with daemon_in_process(laptop) as daemon:
            connector = aiohttp.UnixConnector(path=str(daemon.http_socket_path))
            async with aiohttp.ClientSession(connector=connector) as http:

                async def call(method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                    async with http.post(f"http://b/{method}", data=json.dumps(body), headers=JSON) as r:
                        return r.status, await r.json(content_type=None)

                assert (await call("bindingd.v1.KV/Put", {"binding": "CACHE", "key": "k", "value": "dg=="}))[
                    0
                ] == 200
                status, got = await call("bindingd.v1.KV/Get", {"binding": "CACHE", "key": "k"})
                assert status == 200 and base64.b64decode(got["entry"]["value"]) == b"v"
                status, _ = await call(
                    "bindingd.v1.Database/Exec", {"binding": "APP_DB", "sql": "CREATE TABLE t (n INTEGER)"}
                )
                assert status == 200
                status, rows = await call(
                    "bindingd.v1.Database/Query",
                    {"binding": "APP_DB", "statement": {"sql": "SELECT count(*) AS c FROM t"}},
                )
                assert status == 200 and rows["rows"][0]["values"][0]["integer"] == "0"
                # A server stream through both hops: a queue's consume.
                message = {"body": base64.b64encode(b"job").decode(), "contentType": "bytes"}
                assert (await call("bindingd.v1.Queue/Send", {"binding": "JOBS", "message": message}))[
                    0
                ] == 200
                ask = json.dumps({"binding": "JOBS", "batchSize": 10, "maxWaitSeconds": 0.5}).encode()
                async with http.post(
                    "http://b/bindingd.v1.Queue/Consume",
                    data=struct.pack(">BI", 0, len(ask)) + ask,
                    headers=STREAM,
                ) as r:
                    messages = _envelopes(await r.read())
                assert messages[-1] == (2, {})
                got_bodies = [base64.b64decode(m["body"]) for _, b in messages[:-1] for m in b["messages"]]
                assert got_bodies == [b"job"]
                # Object bodies over the plain HTTP endpoint, both ways, through both hops.
                body = bytes(range(256)) * 4096  # 1 MiB
                async with http.put(
                    "http://b/objects/ASSETS/docs/a.bin",
                    data=body,
                    headers={"Content-Type": "application/pdf"},
                ) as r:
                    assert r.status == 200, await r.text()
                async with http.get("http://b/objects/ASSETS/docs/a.bin") as r:
                    assert r.status == 200 and await r.read() == body
                    assert r.headers["Content-Type"] == "application/pdf"
                async with http.get(
                    "http://b/objects/ASSETS/docs/a.bin", headers={"Range": "bytes=10-19"}
                ) as r:
                    assert r.status == 206 and await r.read() == body[10:20]
                async with http.head("http://b/objects/ASSETS/docs/a.bin") as r:
                    assert r.status == 200 and r.headers["Content-Length"] == str(len(body))
                async with http.delete("http://b/objects/ASSETS/docs/a.bin") as r:
                    assert r.status == 204
                async with http.get("http://b/objects/ASSETS/docs/a.bin") as r:
                    assert r.status == 404
                # The gateway's refusals arrive with its reason: a binding it does not serve.
                status, err = await call("bindingd.v1.KV/Get", {"binding": "NOPE", "key": "k"})
                assert status == 404 or status == 400, err
    # Read once the gateway has stopped: its last lines are written by then.
    audit = (root / "gateway-audit.jsonl").read_text()
    assert '"method":"/bindingd.v1.KV/Get"' in audit and '"method":"/bindingd.v1.Queue/Consume"' in audit
    assert '"method":"/bindingd.v1.Objects/Put"' in audit and '"method":"/bindingd.v1.Objects/Get"' in audit
