// KVNamespace against a real daemon (local provider).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { BindingNotFound, InvalidArgument, connect } from "../dist/index.js";
import { startDaemon } from "./support/daemon.mjs";

let daemon;
let env;

before(async () => {
  daemon = await startDaemon(`version: 1
bindings:
  CACHE: { type: kv }
  SITE_NAME: { type: var, value: "Example Shop" }
`);
  env = await connect({ endpoint: daemon.endpoint });
});

after(async () => {
  env?.close();
  await daemon?.stop();
});

test("env holds one property per binding; vars are strings", () => {
  assert.deepEqual(Object.keys(env), ["CACHE", "SITE_NAME"]);
  assert.equal(env.SITE_NAME, "Example Shop");
  assert.equal(env.envName, "dev");
});

test("put then get as text, json, arrayBuffer and stream", async () => {
  await env.CACHE.put("user:1", JSON.stringify({ n: 1 }), { metadata: { v: 2 } });
  assert.equal(await env.CACHE.get("user:1"), '{"n":1}');
  assert.deepEqual(await env.CACHE.get("user:1", "json"), { n: 1 });
  assert.deepEqual(await env.CACHE.get("user:1", { type: "json" }), { n: 1 });
  const buffer = await env.CACHE.get("user:1", "arrayBuffer");
  assert.ok(buffer instanceof ArrayBuffer);
  assert.equal(new TextDecoder().decode(buffer), '{"n":1}');
  const stream = await env.CACHE.get("user:1", "stream");
  assert.equal(await new Response(stream).text(), '{"n":1}');
  assert.deepEqual(await env.CACHE.getWithMetadata("user:1", "json"), {
    value: { n: 1 },
    metadata: { v: 2 },
    cacheStatus: null,
  });
});

test("a missing key is null; bulk get is a Map in request order", async () => {
  assert.equal(await env.CACHE.get("missing"), null);
  await env.CACHE.put("bulk:a", "A");
  const values = await env.CACHE.get(["bulk:z", "bulk:a"]);
  assert.ok(values instanceof Map);
  assert.deepEqual([...values], [
    ["bulk:z", null],
    ["bulk:a", "A"],
  ]);
});

test("binary values round-trip from views and streams", async () => {
  const bytes = new Uint8Array([0, 255, 1, 254]);
  await env.CACHE.put("bin:view", bytes.subarray(1, 3));
  assert.deepEqual(new Uint8Array(await env.CACHE.get("bin:view", "arrayBuffer")), new Uint8Array([255, 1]));
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(new Uint8Array([1, 2]));
      controller.enqueue(new Uint8Array([3]));
      controller.close();
    },
  });
  await env.CACHE.put("bin:stream", stream);
  assert.deepEqual(new Uint8Array(await env.CACHE.get("bin:stream", "arrayBuffer")), new Uint8Array([1, 2, 3]));
});

test("list pages with a cursor and delete removes", async () => {
  for (const i of [1, 2, 3]) await env.CACHE.put(`page:${i}`, String(i));
  const first = await env.CACHE.list({ prefix: "page:", limit: 2 });
  assert.equal(first.list_complete, false);
  assert.deepEqual(first.keys.map((k) => k.name), ["page:1", "page:2"]);
  const second = await env.CACHE.list({ prefix: "page:", cursor: first.cursor });
  assert.equal(second.list_complete, true);
  assert.deepEqual(second.keys.map((k) => k.name), ["page:3"]);
  await env.CACHE.delete("page:3");
  assert.equal(await env.CACHE.get("page:3"), null);
});

test("a broken limit is InvalidArgument naming the binding and env", async () => {
  await assert.rejects(env.CACHE.put("ttl", "x", { expirationTtl: 5 }), (error) => {
    assert.ok(error instanceof InvalidArgument);
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.equal(error.binding, "CACHE");
    assert.equal(error.env, "dev");
    assert.match(error.message, /60/);
    return true;
  });
  await assert.rejects(env.CACHE.get("k", "bogus"), TypeError);
});

test("a binding removed by a config reload answers BindingNotFound", async () => {
  const other = await startDaemon("version: 1\nbindings:\n  GONE: { type: kv }\n");
  try {
    const otherEnv = await connect({ endpoint: other.endpoint });
    const { writeFileSync } = await import("node:fs");
    writeFileSync(`${other.dir}/bindingd.yaml`, "version: 1\nbindings:\n  KEPT: { type: kv }\n");
    other.child.kill("SIGHUP");
    await assert.rejects(
      async () => {
        for (let i = 0; i < 100; i++) {
          await otherEnv.GONE.get("k");
          await new Promise((done) => setTimeout(done, 50));
        }
      },
      (error) => error instanceof BindingNotFound && error.binding === "GONE" && /KEPT/.test(error.message),
    );
    otherEnv.close();
  } finally {
    await other.stop();
  }
});

test("no daemon at the endpoint is DaemonUnavailable with how to start one", async () => {
  const { DaemonUnavailable } = await import("../dist/index.js");
  await assert.rejects(connect({ endpoint: "unix:///nonexistent/bindingd.sock" }), (error) => {
    assert.ok(error instanceof DaemonUnavailable);
    assert.match(error.message, /bindingd serve/);
    return true;
  });
});
