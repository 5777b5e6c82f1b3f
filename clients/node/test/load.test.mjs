// Many calls in flight over one env's channel.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DaemonUnavailable, connect } from "../dist/index.js";
import { startDaemon } from "./support/daemon.mjs";

let daemon;
let env;

before(async () => {
  daemon = await startDaemon("version: 1\nbindings:\n  CACHE: { type: kv }\n");
  env = await connect({ endpoint: daemon.endpoint });
});

after(async () => {
  env?.close();
  await daemon?.stop();
});

const N = 3000;

async function putMany(prefix) {
  return Promise.allSettled(Array.from({ length: N }, (_, i) => env.CACHE.put(`${prefix}${i}`, String(i))));
}

test("a call the running daemon cancels is not reported as 'no daemon, start one'", async () => {
  // grpc-core once answered some of these CANCELLED (its default pending-call limits, now lifted in
  // bindingd/server/app.py); should any still fail, it must say the daemon cancelled it, not that
  // there is no daemon to connect to.
  const outcomes = await putMany("m");
  for (const outcome of outcomes) {
    if (outcome.status === "fulfilled") continue;
    const error = outcome.reason;
    assert.ok(error instanceof DaemonUnavailable, String(error));
    assert.doesNotMatch(error.message, /cannot connect/);
    assert.match(error.message, /cancelled the call/);
  }
});

test(
  `${N} KV puts in flight at once over one env all succeed`,
  async () => {
    const outcomes = await putMany("p");
    const failed = outcomes.filter((outcome) => outcome.status === "rejected");
    assert.equal(failed.length, 0, `${failed.length} failed, first: ${failed[0]?.reason}`);
    const values = await env.CACHE.get(["p0", `p${N - 1}`]);
    assert.deepEqual([...values.values()], ["0", String(N - 1)]);
  },
);
