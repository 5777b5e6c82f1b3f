// Runs the proxy Worker inside Miniflare (Cloudflare's workerd, with its real KV, R2, D1 and
// queue producers) on a loopback port, for the tests and the bench. Prints one JSON line
// {"url": ...} once it answers, and stops on SIGTERM or when stdin closes.
//
// Usage: node serve.mjs <public key b64url> <state dir, or "" to keep nothing> [pool size]
// A pool size N adds N spare bindings of each kind (KV_P0.., R2_P0.., D1_P0..), so that the
// conformance suites give each test namespaces, buckets and databases of its own from one
// Miniflare.
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
const mf = new Miniflare({
  modules: true,
  scriptPath: path.join(here, "proxy.js"),
  compatibilityDate: "2025-01-01",
  host: "127.0.0.1",
  port: 0,
  bindings: { BINDINGD_PUBLIC_KEY: publicKey },
  // The binding names the tests and the conformance entry use.
  kvNamespaces: ["CACHE", "KV2", ...pool("KV_P")],
  r2Buckets: ["ASSETS_BUCKET", ...pool("R2_P")],
  d1Databases: ["APP_DB", ...pool("D1_P")],
  queueProducers: { JOBS: { queueName: "bindingd-jobs" } },
  kvPersist: stateDir ? path.join(stateDir, "kv") : false,
  r2Persist: stateDir ? path.join(stateDir, "r2") : false,
  d1Persist: stateDir ? path.join(stateDir, "d1") : false,
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
