// Runs the proxy Worker inside Miniflare (Cloudflare's workerd, with its real KV, R2, D1 and
// queue producers) on a loopback port, for the tests and the bench. Prints one JSON line
// {"url": ...} once it answers, and stops on SIGTERM or when stdin closes.
//
// Usage: node serve.mjs <public key b64url> <state dir, or "" to keep nothing> [pool size]
// A pool size N adds N spare bindings of each kind (KV_P0.., R2_P0.., D1_P0..), so that the
// conformance suites give each test namespaces, buckets and databases of its own from one
// Miniflare.
// Every queue is consumed by a second Worker that records what arrives (RECORDER below).
// Miniflare comes from clients/node's node_modules (`make node`), so no second install.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../../..");
// BINDINGD_NODE_DIR: another folder whose node_modules has miniflare (a shared checkout's).
const nodeDir = process.env.BINDINGD_NODE_DIR || path.join(root, "clients/node");
const require = createRequire(path.join(nodeDir, "package.json"));
const { Miniflare } = require("miniflare");

const [publicKey, stateDir, poolArg] = process.argv.slice(2);
const pool = (prefix) => Array.from({ length: Number(poolArg || 0) }, (_, i) => prefix + i);
// Spare queues: producer Q_P<i> of the proxy Worker sends to queue bindingd-q<i>.
const queueProducers = { JOBS: { queueName: "bindingd-jobs" } };
for (const name of pool("Q_P")) queueProducers[name] = { queueName: `bindingd-q${name.slice(3)}` };
// A second Worker consumes every queue and writes each message it gets to the KV namespace
// RECEIVED (which the proxy Worker binds too): what a send delivered, read back through the
// proxy like any KV namespace. Key: <queue>/<ms received, 15 digits>-<message id>.
const RECORDER = `
function b64(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}
export default {
  async queue(batch, env) {
    for (const m of batch.messages) {
      const body = m.body;
      let record;
      if (typeof body === "string") record = { contentType: "text", body };
      else if (body instanceof ArrayBuffer) record = { contentType: "bytes", body: b64(new Uint8Array(body)) };
      else if (ArrayBuffer.isView(body)) record = { contentType: "bytes", body: b64(new Uint8Array(body.buffer, body.byteOffset, body.byteLength)) };
      else record = { contentType: "json", body };
      const now = Date.now();
      const key = batch.queue + "/" + String(now).padStart(15, "0") + "-" + m.id;
      await env.RECEIVED.put(key, JSON.stringify({ ...record, id: m.id, attempts: m.attempts, timestamp: m.timestamp.getTime(), received: now }));
    }
    batch.ackAll();
  },
};
`;
const mf = new Miniflare({
  host: "127.0.0.1",
  port: 0,
  kvPersist: stateDir ? path.join(stateDir, "kv") : false,
  r2Persist: stateDir ? path.join(stateDir, "r2") : false,
  d1Persist: stateDir ? path.join(stateDir, "d1") : false,
  workers: [
    {
      name: "proxy",
      modules: true,
      modulesRoot: here,
      scriptPath: path.join(here, "proxy.js"),
      compatibilityDate: "2025-01-01",
      bindings: { BINDINGD_PUBLIC_KEY: publicKey },
      // The binding names the tests and the conformance entry use.
      kvNamespaces: ["CACHE", "KV2", "RECEIVED", ...pool("KV_P")],
      r2Buckets: ["ASSETS_BUCKET", ...pool("R2_P")],
      d1Databases: ["APP_DB", ...pool("D1_P")],
      queueProducers,
    },
    {
      name: "recorder",
      modules: true,
      script: RECORDER,
      compatibilityDate: "2025-01-01",
      kvNamespaces: ["RECEIVED"],
      // At once, one by one, no retries: the tests look at what each send delivered.
      queueConsumers: Object.fromEntries(
        Object.values(queueProducers).map(({ queueName }) => [queueName, { maxBatchTimeout: 0, maxRetries: 0 }]),
      ),
    },
  ],
});
const url = await mf.ready;
process.stdout.write(JSON.stringify({ url: url.toString() }) + "\n");
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
