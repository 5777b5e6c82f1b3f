// The Node client through bindingd beside Miniflare's own bindings, from the same Node process.
//
//   node bench/node/bindings.mjs [--quick]
//
// One `bindingd serve` (local kv / objects / sql bindings, a child process on a unix socket) and
// one Miniflare (its KV, R2 and D1 bindings, called from Node through its proxy to workerd) are
// started side by side and seeded alike. Each operation is timed sequentially on both in
// interleaved rounds (bindingd block, Miniflare block, then the other way round) so that load
// drifting on a shared machine hits both. `make bench` runs this after the Python parts; it is
// not part of the published package (clients/node ships only dist/).
import { generateKeyPairSync } from "node:crypto";
import { createRequire } from "node:module";
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { connect } from "../../clients/node/dist/index.js";
import { startDaemon } from "../../clients/node/test/support/daemon.mjs";

// Miniflare is a dev dependency of clients/node: resolve it from there, not from bench/.
const requireFromClient = createRequire(new URL("../../clients/node/package.json", import.meta.url));
const { Miniflare } = await import(pathToFileURL(requireFromClient.resolve("miniflare")).href);

const QUICK = process.argv.includes("--quick");
// Per target, over all rounds. Miniflare's R2 and D1 calls take 5-20 ms each from Node (its
// KV about 3 ms): these counts keep a full run under a minute on a loaded 2-core machine.
const KV_CALLS = QUICK ? 300 : 1500;
const R2_D1_CALLS = QUICK ? 100 : 400;
const ROUNDS = 10;
// Warm-up per target, in ms of calls: grpc-js and Miniflare's proxy both need a few hundred
// calls before the JIT settles (the first few thousand bindingd calls ran 15-30% slower).
const WARMUP_MS = QUICK ? 300 : 1000;
const GOAL = 1 / 3; // bindingd p50 at most this fraction of Miniflare's

const KEY = "bench";
const VALUE = "v".repeat(100);
const OBJECT = new Uint8Array(1024).fill(0x61); // 1 KiB
const PROJECT = `version: 1
bindings:
  CACHE: { type: kv }
  BUCKET: { type: objects }
  DB: { type: sql }
`;
const WORKER = `export default { fetch() { return new Response("bench"); } };`;

/** Sequential latency samples of one target, and the time its blocks took. */
class Samples {
  latencies = [];
  elapsed = 0;

  async run(call, n) {
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await call();
      this.latencies.push(performance.now() - t0);
    }
    this.elapsed += performance.now() - started;
  }

  result() {
    const ordered = [...this.latencies].sort((a, b) => a - b);
    const at = (q) => ordered[Math.min(ordered.length - 1, Math.round(q * (ordered.length - 1)))];
    const mid = ordered.length / 2;
    const p50 = ordered.length % 2 ? ordered[Math.floor(mid)] : (ordered[mid - 1] + ordered[mid]) / 2;
    return { p50, p99: at(0.99), callsPerS: (ordered.length * 1000) / this.elapsed };
  }
}

/** Each operation's two targets, called `op.calls` times each in `ROUNDS` interleaved rounds. */
async function measure(operations) {
  for (const op of operations) {
    for (const call of [op.bindingd, op.miniflare]) {
      const until = performance.now() + WARMUP_MS;
      while (performance.now() < until) await call();
    }
  }
  const samples = operations.map(() => ({ bindingd: new Samples(), miniflare: new Samples() }));
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? ["bindingd", "miniflare"] : ["miniflare", "bindingd"];
    for (const [i, op] of operations.entries()) {
      for (const side of order) await samples[i][side].run(op[side], Math.ceil(op.calls / ROUNDS));
    }
  }
  return operations.map((op, i) => ({
    name: op.name,
    bindingd: samples[i].bindingd.result(),
    miniflare: samples[i].miniflare.result(),
  }));
}

function row(name, r, peer) {
  const ratio = (ours, theirs) => (peer ? ` (${(ours / theirs).toFixed(2)}x)` : "");
  return (
    `${name.padEnd(40)} p50 ${r.p50.toFixed(3).padStart(6)} ms${ratio(r.p50, peer?.p50)}  ` +
    `p99 ${r.p99.toFixed(3).padStart(6)} ms${ratio(r.p99, peer?.p99)}  ` +
    `${r.callsPerS.toFixed(0).padStart(8)} calls/s${ratio(r.callsPerS, peer?.callsPerS)}`
  );
}

function report(results) {
  const load = loadavg().map((x) => x.toFixed(2)).join(", ");
  const lines = [
    `node client: bindingd beside Miniflare's own bindings, from Node ${process.version} — ` +
      `${cpus().length} cores, load average ${load}`,
    `${KV_CALLS} (kv) and ${R2_D1_CALLS} (r2, d1) sequential calls per row in ${ROUNDS} interleaved rounds; ` +
      `ratios are bindingd / Miniflare`,
  ];
  for (const { name, bindingd, miniflare } of results) {
    lines.push(row(`${name}, miniflare`, miniflare));
    lines.push(row(`${name}, bindingd`, bindingd, miniflare));
  }
  for (const { name, bindingd, miniflare } of results) {
    const ratio = bindingd.p50 / miniflare.p50;
    lines.push(
      `goal: ${name} p50 at most 1/3 of Miniflare's: ${ratio.toFixed(2)}x, ${ratio <= GOAL ? "met" : "NOT met"}`,
    );
  }
  return lines;
}

/** The operations, each as a call through bindingd and the same call through Miniflare. */
function operations(env, mf) {
  const ops = [];
  ops.push({
    name: "kv get text",
    calls: KV_CALLS,
    bindingd: () => env.CACHE.get(KEY),
    miniflare: () => mf.kv.get(KEY),
  });
  ops.push({
    name: "r2 get 1 KiB + arrayBuffer",
    calls: R2_D1_CALLS,
    bindingd: async () => (await env.BUCKET.get(KEY)).arrayBuffer(),
    miniflare: async () => (await mf.r2.get(KEY)).arrayBuffer(),
  });
  ops.push({
    name: "d1 SELECT 1 first()",
    calls: R2_D1_CALLS,
    bindingd: () => env.DB.prepare("SELECT 1").first(),
    miniflare: () => mf.d1.prepare("SELECT 1").first(),
  });
  return ops;
}

async function seed(env, mf) {
  await env.CACHE.put(KEY, VALUE);
  await mf.kv.put(KEY, VALUE);
  await env.BUCKET.put(KEY, OBJECT);
  await mf.r2.put(KEY, OBJECT);
  // Both answer SELECT 1 without a table; a query checks that each database is up.
  for (const db of [env.DB, mf.d1]) {
    const row = await db.prepare("SELECT 1 AS one").first();
    if (row?.one !== 1) throw new Error(`SELECT 1 answered ${JSON.stringify(row)}`);
  }
  for (const [side, value] of [
    ["bindingd", await env.CACHE.get(KEY)],
    ["miniflare", await mf.kv.get(KEY)],
  ]) {
    if (value !== VALUE) throw new Error(`${side} kv get answered ${JSON.stringify(value)}`);
  }
  for (const [side, bucket] of [
    ["bindingd", env.BUCKET],
    ["miniflare", mf.r2],
  ]) {
    const body = await (await bucket.get(KEY)).arrayBuffer();
    if (body.byteLength !== OBJECT.length) throw new Error(`${side} r2 get answered ${body.byteLength} bytes`);
  }
}

// --- the cloudflare provider: the daemon -> the proxy Worker (in Miniflare) -> its bindings -----

const PROXY = fileURLToPath(new URL("../../bindingd/providers/cloudflare/worker/proxy.js", import.meta.url));

/** The proxy Worker in its own Miniflare, and a daemon whose CACHE / APP_DB are served through it
 * (a `cloudflare` connection, signed with a key made here). */
async function startCloudflare() {
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  const proxy = new Miniflare({
    modules: true,
    scriptPath: PROXY,
    compatibilityDate: "2025-01-01",
    host: "127.0.0.1",
    port: 0,
    bindings: { BINDINGD_PUBLIC_KEY: jwk.x },
    kvNamespaces: ["CACHE"],
    d1Databases: ["APP_DB"],
  });
  const url = (await proxy.ready).toString().replace(/\/$/, "");
  const key = Buffer.from(jwk.d, "base64url").toString("base64");
  const daemon = await startDaemon(`version: 1
connections:
  cf: { kind: cloudflare, url: "${url}", key: "${key}" }
bindings:
  CACHE: { type: kv, connection: cf }
  APP_DB: { type: sql, connection: cf }
`);
  return { proxy, url, daemon };
}

/** KV get and D1 SELECT 1 through the cloudflare provider beside the same calls on the same
 * Miniflare's bindings from Node; and an unsigned request to the Worker (refused before any
 * binding is used): the HTTP hop to workerd alone. */
async function measureCloudflare(cf) {
  const env = await connect({ endpoint: cf.daemon.endpoint });
  try {
    const direct = { kv: await cf.proxy.getKVNamespace("CACHE"), d1: await cf.proxy.getD1Database("APP_DB") };
    await env.CACHE.put(KEY, VALUE);
    if ((await direct.kv.get(KEY)) !== VALUE) throw new Error("the proxy's KV does not hold what bindingd put");
    const results = await measure([
      {
        name: "kv get text via cloudflare",
        calls: R2_D1_CALLS,
        bindingd: () => env.CACHE.get(KEY),
        miniflare: () => direct.kv.get(KEY),
      },
      {
        name: "d1 SELECT 1 first() via cloudflare",
        calls: R2_D1_CALLS,
        bindingd: () => env.APP_DB.prepare("SELECT 1").first(),
        miniflare: () => direct.d1.prepare("SELECT 1").first(),
      },
    ]);
    const hop = new Samples();
    const refused = async () => {
      const r = await fetch(`${cf.url}/v1/CACHE/get`, { method: "POST", headers: { "x-bindingd-args": "{}" } });
      await r.arrayBuffer();
      if (r.status !== 401) throw new Error(`an unsigned request answered ${r.status}`);
    };
    for (let i = 0; i < 50; i++) await refused();
    await hop.run(refused, R2_D1_CALLS);
    return { results, hop: hop.result() };
  } finally {
    env.close();
  }
}

function reportCloudflare({ results, hop }, local) {
  const lines = [
    "cloudflare provider: worker -> bindingd -> proxy Worker (HTTP, signed) -> workerd's binding, " +
      "beside the same call on Miniflare's binding from Node; ratios are via-cloudflare / direct",
  ];
  for (const { name, bindingd, miniflare } of results) {
    lines.push(row(`${name.replace(" via cloudflare", "")}, direct`, miniflare));
    lines.push(row(name, bindingd, miniflare));
  }
  lines.push(
    `where the time goes (p50): worker -> daemon -> a local kv binding ${local.p50.toFixed(3)} ms; ` +
      `an unsigned request from Node's fetch to the same Worker, refused before any binding is used, ` +
      `${hop.p50.toFixed(3)} ms: the HTTP round trip into workerd is most of a call either way ` +
      `(Miniflare's own bindings from Node make one too)`,
  );
  return lines;
}

async function main() {
  const daemon = await startDaemon(PROJECT);
  let env;
  const miniflare = new Miniflare({
    modules: true,
    script: WORKER,
    kvNamespaces: ["KV"],
    r2Buckets: ["R2"],
    d1Databases: ["DB"],
  });
  try {
    env = await connect({ endpoint: daemon.endpoint });
    await miniflare.ready;
    const mf = {
      kv: await miniflare.getKVNamespace("KV"),
      r2: await miniflare.getR2Bucket("R2"),
      d1: await miniflare.getD1Database("DB"),
    };
    await seed(env, mf);
    const results = await measure(operations(env, mf));
    for (const line of report(results)) console.log(line);
    const cf = await startCloudflare();
    try {
      const local = results.find((r) => r.name === "kv get text").bindingd;
      for (const line of reportCloudflare(await measureCloudflare(cf), local)) console.log(line);
    } finally {
      await cf.daemon.stop();
      await cf.proxy.dispose();
    }
  } finally {
    env?.close();
    await miniflare.dispose();
    await daemon.stop();
  }
}

await main();
