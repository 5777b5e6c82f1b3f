// Numbers too large for their int32/int64 field on the wire are the caller's mistake: they must be
// refused as such (InvalidArgument, or the TypeError/RangeError workerd throws), never reported as an
// INTERNAL "Request message serialization failure" from gRPC.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { BindingError, InvalidArgument, connect } from "../dist/index.js";
import { startDaemon } from "./support/daemon.mjs";

let daemon;
let env;

before(async () => {
  daemon = await startDaemon(`version: 1
bindings:
  CACHE: { type: kv }
  FILES: { type: objects }
`);
  env = await connect({ endpoint: daemon.endpoint });
  await env.FILES.put("o", "hello");
});

after(async () => {
  env?.close();
  await daemon?.stop();
});

/** A refusal of the caller's value: not gRPC's serialization failure, naming `option`. */
function refused(option, classes = [InvalidArgument]) {
  return (error) => {
    assert.ok(
      classes.some((cls) => error instanceof cls),
      `expected ${classes.map((c) => c.name).join(" or ")}, got ${error?.constructor?.name}: ${error?.message}`,
    );
    assert.notEqual(error.reason, "INTERNAL");
    assert.doesNotMatch(error.message, /serialization failure/);
    assert.match(error.message, option);
    return true;
  };
}

test("KV number options out of range are workerd's TypeError", async () => {
  const outOfRange = refused(/out of range/, [TypeError]);
  await assert.rejects(env.CACHE.put("k", "v", { expirationTtl: 1e30 }), outOfRange);
  await assert.rejects(env.CACHE.put("k", "v", { expiration: 1e30 }), outOfRange);
  await assert.rejects(env.CACHE.get("k", { cacheTtl: 1e30 }), outOfRange);
  await assert.rejects(env.CACHE.list({ limit: 1e12 }), outOfRange);
  assert.equal(await env.CACHE.get("k"), null, "nothing was stored");
});

test("an R2 range beyond 64 bits is a RangeError, as a negative one is", async () => {
  await assert.rejects(env.FILES.get("o", { range: { offset: 1e30 } }), refused(/offset/, [RangeError]));
  await assert.rejects(env.FILES.get("o", { range: { length: 1e30 } }), refused(/length/, [RangeError]));
  await assert.rejects(env.FILES.get("o", { range: { suffix: 1e30 } }), refused(/suffix/, [RangeError]));
});

test("R2 int32 fields out of range are InvalidArgument naming the binding", async () => {
  await assert.rejects(env.FILES.list({ limit: 1e12 }), refused(/limit/));
  const upload = await env.FILES.createMultipartUpload("m");
  try {
    // workerd's own check (a TypeError) comes first for uploadPart.
    await assert.rejects(upload.uploadPart(2 ** 40, "x"), refused(/Part number/, [TypeError]));
    await assert.rejects(upload.complete([{ partNumber: 2 ** 40, etag: "e" }]), (error) => {
      refused(/part number/)(error);
      assert.equal(error.binding, "FILES");
      return true;
    });
  } finally {
    await upload.abort();
  }
  // In range, the daemon's own check still answers (with binding and env).
  await assert.rejects(env.FILES.list({ limit: 5000 }), (error) => {
    assert.ok(error instanceof BindingError && error.env === "dev", String(error));
    return true;
  });
});
