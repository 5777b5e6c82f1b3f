// The differential suite (issue 6, "Proof against the real runtime"): every scenario in
// differential/scenarios.mjs runs once inside workerd (Miniflare, with its own KV / R2 / D1) and
// once in Node through @bindingd/client against a real daemon's local providers; the normalised
// results must be equal, except for the known differences listed below, each checked as it is.
//
// A third side (issue 15, "same code, same answers"): the same scenarios in Node through
// @bindingd/client against a daemon whose bindings are served by a `cloudflare` connection to
// bindingd's proxy Worker (bindingd/providers/cloudflare/worker/proxy.js), itself running in a
// second Miniflare with KV / R2 / D1 of its own, signed requests and all. Its answers are
// compared with workerd's direct ones, with a known-differences table of its own
// (KNOWN_DIFFERENCES_CLOUDFLARE): the client's own differences remain, the backend's should not.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { generateKeyPairSync } from "node:crypto";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import * as client from "../dist/index.js";
import { runScenario, scenarios } from "./differential/scenarios.mjs";
import { workerdMiniflare } from "./differential/workerd.mjs";
import { startDaemon } from "./support/daemon.mjs";

const PROXY_WORKER = fileURLToPath(new URL("../../../bindingd/providers/cloudflare/worker/proxy.js", import.meta.url));
// The proxy Worker's own date, as `bindingd cloudflare deploy` deploys it (deploy.py).
const PROXY_COMPATIBILITY_DATE = "2025-01-01";

/** A known difference at `path` in one scenario's result: what each side answers, and why. */
function differs(path, why, workerd, bindingd) {
  return { path, why, workerd, bindingd };
}

/**
 * Where bindingd and workerd answer differently, per scenario. README ("Differences from
 * Cloudflare" under the Node client) explains the lasting ones; the others are open and
 * reported. workerd's side must answer exactly as listed (so a Miniflare upgrade that changes it
 * shows up); bindingd's side may answer as listed or, once fixed, as workerd does (the test then
 * says the entry can go).
 */
const KNOWN_DIFFERENCES = {
  "kv/readTypes": [
    differs(
      ["unknownTypeMissingKey"],
      "an unknown type for a missing key: workerd answers null, bindingd's client a TypeError before the call",
      { ok: null },
      { threw: "TypeError" },
    ),
    differs(
      ["unknownTypeWithMetadataMissingKey"],
      "the same with getWithMetadata",
      { ok: { value: null, metadata: null, cacheStatus: null } },
      { threw: "TypeError" },
    ),
  ],
  "kv/listPaging": [
    differs(
      ["badCursor"],
      "a cursor the store did not make: Miniflare answers an empty page, bindingd InvalidArgument",
      { ok: [] },
      { threw: "Error" },
    ),
  ],
  "kv/unusualText": [
    differs(
      ["loneSurrogateKey"],
      "a key with a lone UTF-16 surrogate: workerd sends it as WTF-8, which Miniflare cannot decode (an Error); " +
        "bindingd stores it with U+FFFD in its place",
      { threw: "Error" },
      { ok: ["odd/\ufffdx"] },
    ),
    differs(
      ["loneSurrogateValue"],
      "a string value with a lone surrogate: workerd stores its WTF-8 bytes (ED B0 80), bindingd U+FFFD (EF BF BD)",
      { ok: ["a\ufffd\ufffd\ufffdb", { $arrayBuffer: { hex: "61edb08062" } }] },
      { ok: ["a\ufffdb", { $arrayBuffer: { hex: "61efbfbd62" } }] },
    ),
  ],
  "r2/unusualText": [
    differs(
      ["loneSurrogate"],
      "the same for an R2 string body",
      { ok: { $arrayBuffer: { hex: "61edb08062" } } },
      { ok: { $arrayBuffer: { hex: "61efbfbd62" } } },
    ),
  ],
  "kv/bulkIntegerLikeKeys": [
    differs(
      ["strings"],
      'workerd drops integer-like keys ("1", "10") from a bulk get\'s Map; bindingd keeps them',
      { ok: { $map: [["bulk-int/a", "A"]] } },
      { ok: { $map: [["bulk-int/a", "A"], ["1", "one"], ["10", null]] } },
    ),
    differs(
      ["number"],
      'the same for a number key, which both turn into the string "1"',
      { ok: { $map: [["bulk-int/a", "A"]] } },
      { ok: { $map: [["bulk-int/a", "A"], ["1", "one"]] } },
    ),
  ],
  "r2/putStreamOfUnknownLength": [
    differs(
      ["put"],
      "a ReadableStream of unknown length: workerd refuses it (TypeError), bindingd streams it in",
      { threw: "TypeError" },
      "<an R2Object>",
    ),
    differs(["read"], "so the object exists in bindingd only", { ok: null }, { ok: "abcd" }),
  ],
  "r2/keys": [
    ...["emptyPut", "emptyGet", "emptyHead"].map((name) =>
      differs([name], "an empty key: Miniflare stores and reads it, bindingd refuses (R2 keys are 1-1024 bytes)", "<an R2Object>", {
        threw: "Error",
      }),
    ),
  ],
  "r2/list": [
    differs(
      ["badCursor"],
      "a cursor the store did not make: Miniflare answers an empty page, bindingd InvalidArgument",
      { ok: { keys: [], truncated: false, hasCursor: false, delimitedPrefixes: [] } },
      { threw: "Error" },
    ),
  ],
  "r2/deleteMany": [
    differs(
      ["deleteOverThousand"],
      "delete of 1001 keys: Miniflare deletes them, bindingd refuses (R2's limit is 1000 keys per call)",
      { ok: { $undefined: true } },
      { threw: "Error" },
    ),
  ],
  "r2/multipart": [
    differs(
      ["noParts"],
      "complete([]): Miniflare makes an empty object (etag ...-0), bindingd refuses (R2 needs at least one part)",
      "<an R2Object>",
      { threw: "Error" },
    ),
  ],
  "d1/valueTypes": [
    ...["integer", "negative", "bigSafe", "booleanTrue", "booleanFalse"].map((name) =>
      differs(
        [name, "ok", "storage", "value"],
        "D1 binds every JS number (and boolean) as REAL; bindingd binds integral ones as INTEGER",
        "real",
        "integer",
      ),
    ),
    differs(
      ["boundDivision"],
      "the same seen in arithmetic: ? / 2 with 5 bound is 2.5 in D1, integer division in bindingd",
      { ok: { half: 2.5, storage: "real" } },
      { ok: { half: 2, storage: "integer" } },
    ),
  ],
  "d1/meta": [
    differs(
      ["createTable", "ok", "meta", "changed_db"],
      "DDL: D1 reports changed_db true, bindingd false (it counts changed rows only)",
      true,
      false,
    ),
    differs(["dropTable", "ok", "meta", "changed_db"], "the same for DROP TABLE", true, false),
  ],
  "d1/batch": [
  ],
  "d1/exec": [
    differs(
      ["trailingSemicolons"],
      'exec of "...;;": D1 refuses the empty statement, bindingd skips it',
      { threw: "Error" },
      { ok: { count: 1, duration: "<duration>" } },
    ),
    differs(
      ["multiLineStatement"],
      "a statement across lines: D1 runs each line alone and fails, bindingd runs the statement",
      { threw: "Error" },
      { ok: { count: 1, duration: "<duration>" } },
    ),
  ],
  "d1/sessions": [
    differs(
      ["bookmark"],
      "a session's getBookmark() after a query: a bookmark string in workerd, null in bindingd",
      { ok: "<bookmark>" },
      { ok: null },
    ),
    differs(["primaryBookmark"], "the same for a first-primary session", { ok: "<bookmark>" }, { ok: null }),
  ],
  "d1/errors": [
    differs(
      ["namedParameters"],
      ":name parameters: D1 binds them by position, bindingd refuses",
      { ok: { v: "x" } },
      { threw: "Error" },
    ),
    differs(
      ["onlyComment"],
      "a statement that is only a comment: D1 refuses it, bindingd runs it (no rows)",
      { threw: "Error" },
      {
        ok: {
          success: true,
          meta: {
            served_by: "<served_by>",
            duration: "<duration>",
            changes: 0,
            last_row_id: 0,
            changed_db: false,
            size_after: "<size_after>",
            rows_read: "<counted>",
            rows_written: "<counted>",
          },
          results: [],
        },
      },
    ),
    differs(
      ["twoStatements"],
      "prepare() of two statements: D1 runs both and answers the last, bindingd refuses",
      {
        ok: {
          success: true,
          meta: {
            served_by: "<served_by>",
            duration: "<duration>",
            changes: 0,
            last_row_id: 1,
            changed_db: false,
            size_after: "<size_after>",
            rows_read: "<counted>",
            rows_written: "<counted>",
          },
          results: [{ 2: 2 }],
        },
      },
      { threw: "Error" },
    ),
  ],
};

/**
 * Where bindingd through a `cloudflare` connection (the proxy Worker in Miniflare) answers
 * differently from workerd: the same rules as KNOWN_DIFFERENCES.
 */
const KNOWN_DIFFERENCES_CLOUDFLARE = {
  // The client's own differences: the same through any daemon.
  "kv/readTypes": KNOWN_DIFFERENCES["kv/readTypes"],
  "kv/unusualText": KNOWN_DIFFERENCES["kv/unusualText"],
  "r2/unusualText": KNOWN_DIFFERENCES["r2/unusualText"],
  "kv/bulkIntegerLikeKeys": KNOWN_DIFFERENCES["kv/bulkIntegerLikeKeys"],
  "r2/putStreamOfUnknownLength": KNOWN_DIFFERENCES["r2/putStreamOfUnknownLength"],
  "d1/sessions": KNOWN_DIFFERENCES["d1/sessions"],
  // The daemon's own rules, checked before a call reaches any backend.
  "kv/listPaging": [
    differs(
      ["badCursor"],
      "a cursor the daemon did not make: Miniflare answers an empty page, bindingd InvalidArgument (the daemon's " +
        "cursors are its own, the same for every backend)",
      { ok: [] },
      { threw: "Error" },
    ),
  ],
  "r2/keys": KNOWN_DIFFERENCES["r2/keys"],
  "r2/deleteMany": KNOWN_DIFFERENCES["r2/deleteMany"],
  "r2/multipart": KNOWN_DIFFERENCES["r2/multipart"],
  "d1/exec": KNOWN_DIFFERENCES["d1/exec"],
  "d1/errors": KNOWN_DIFFERENCES["d1/errors"].filter((d) => d.path[0] === "namedParameters"),
  // The daemon's abort cannot tell an id never made from one completed: Miniflare's R2 answers
  // both with its internal error (10001), and R2 aborts a completed upload without error.
  "r2/abortAgain": [
    differs(
      ["abortUnknown"],
      "abort of an upload id never made: workerd throws (R2 10001), bindingd through the proxy answers ok " +
        "(it takes 10001 for an upload already completed, which R2 aborts without error)",
      { threw: "Error" },
      { ok: { $undefined: true } },
    ),
  ],
  // R2 keeps no sha384 / sha512: the provider keeps a verified one in custom metadata and
  // answers it on get and head, and in a listing only with include customMetadata (asking for
  // that always would cost list pages: R2 answers fewer objects a page with metadata).
  "r2/checksumsSha2": ["sha384", "sha512"].map((digest) =>
    differs(
      [`${digest}Right`, "ok", "listed"],
      `R2 keeps no ${digest}: the provider answers the verified one on get and head, and in list() only with ` +
        "include customMetadata",
      "<listed with the digest>",
      "<listed without the digest>",
    ),
  ),
  // The proxy Worker reads a result's rows from all(), which it needs for D1's meta: columns
  // of the same name collapse to the last there. (all() itself answers so in workerd too.)
  "d1/firstAllRunRaw": [
    differs(
      ["duplicateColumnsRaw"],
      "raw() of columns with the same name: the proxy Worker reads rows from all()'s objects (it needs all()'s " +
        "meta, which raw() does not give), where duplicate names collapse to the last",
      { ok: [["a", "a", "b"], [1, 2, 3]] },
      { ok: [["a", "b"], [2, 3]] },
    ),
  ],
};

/**
 * R2's storageClass: Miniflare leaves it empty, R2 (and bindingd) say "Standard". Checked
 * everywhere, then compared no further.
 */
function relaxStorageClass(node, side, expected = side === "workerd" ? "" : "Standard") {
  if (Array.isArray(node)) return node.forEach((item) => relaxStorageClass(item, side, expected));
  if (node === null || typeof node !== "object") return;
  if (node.$class === "R2Object" || node.$class === "R2ObjectBody") {
    assert.equal(node.storageClass, expected, `${side}: storageClass of ${node.key}`);
    node.storageClass = "<storageClass>";
  }
  for (const value of Object.values(node)) relaxStorageClass(value, side, expected);
}

/**
 * Objects put through the proxy Worker carry checksums.sha256: the Worker checks a put's streamed
 * body against the signed SHA-256 with R2's own `sha256` put option (proxy.js: the tamper check
 * without buffering), and R2 records the checksum it verified. Where workerd's direct put has no
 * sha256, the proxy's must be a SHA-256 hex; it is then compared no further.
 */
function relaxProxySha256(workerdNode, nodeNode) {
  if (workerdNode === null || nodeNode === null || typeof workerdNode !== "object" || typeof nodeNode !== "object") return;
  const isChecksums = (c) => typeof c.md5 === "string" && /^[0-9a-f]{32}$/.test(c.md5);
  if (!Array.isArray(nodeNode) && isChecksums(nodeNode) && isChecksums(workerdNode) && !("sha256" in workerdNode)) {
    assert.match(String(nodeNode.sha256), /^[0-9a-f]{64}$/, "the proxy's put records the SHA-256 it verified");
    delete nodeNode.sha256;
  }
  for (const key of Object.keys(nodeNode)) if (key in workerdNode) relaxProxySha256(workerdNode[key], nodeNode[key]);
}

/**
 * D1's rows_read / rows_written count what SQLite's VM touched inside workerd (index entries
 * too: an INSERT into a table with a UNIQUE column writes 2); bindingd counts rows answered and
 * rows changed. Both must be non-negative integers; their values are not compared.
 */
function relaxD1Counters(node) {
  if (Array.isArray(node)) return node.forEach(relaxD1Counters);
  if (node === null || typeof node !== "object") return;
  if (node.served_by === "<served_by>") {
    for (const field of ["rows_read", "rows_written"]) {
      if (!(field in node)) continue;
      assert.ok(Number.isInteger(node[field]) && node[field] >= 0, `meta.${field} is ${node[field]}`);
      node[field] = "<counted>";
    }
  }
  for (const value of Object.values(node)) relaxD1Counters(value);
}

/**
 * Whether an outcome is the listed one. A listed value in angle brackets names a shape where the
 * exact value is long and beside the point: "<an R2Object>" (a successful outcome holding an
 * object), "<an empty body>", "<the whole object>" / "<the object>" (a read with a body).
 */
function answersAs(outcome, listed) {
  if (typeof listed !== "string" || !listed.startsWith("<")) return isDeepStrictEqual(outcome, listed);
  const ok = outcome?.ok;
  switch (listed) {
    case "<an R2Object>":
      return ok?.$class === "R2Object" || ok?.$class === "R2ObjectBody";
    case "<an empty body>":
      return ok?.text === "" && ok?.object?.range?.length === 0;
    case "<the whole object>":
      return typeof ok?.text === "string" && ok.text.length === ok.object?.size;
    case "<listed with the digest>": // one object's checksums in a list: md5 and the digest
      return Array.isArray(outcome) && outcome.length === 1 && Object.keys(outcome[0]).length === 2;
    case "<listed without the digest>":
      return Array.isArray(outcome) && outcome.length === 1 && Object.keys(outcome[0]).join() === "md5";
    case "<the object>":
      return typeof ok?.text === "string" && ok.object?.$class === "R2ObjectBody";
    default:
      throw new Error(`no such shape ${listed}`);
  }
}

/**
 * Take a known difference out of both results after checking it: workerd's side exactly as
 * listed; bindingd's as listed or (fixed) as workerd's. Returns a note when it no longer differs.
 */
function settleKnownDifference(workerdResult, nodeResult, difference) {
  const at = (result, side) => {
    const parent = difference.path.slice(0, -1).reduce((node, key) => node?.[key], result);
    const last = difference.path.at(-1);
    assert.ok(parent != null && last in parent, `${side}: no field ${difference.path.join(".")} (${difference.why})`);
    return [parent, last];
  };
  const [workerdParent, key] = at(workerdResult, "workerd");
  const [nodeParent] = at(nodeResult, "bindingd");
  assert.ok(answersAs(workerdParent[key], difference.workerd), `workerd no longer answers as listed: ${difference.why}\n${JSON.stringify(workerdParent[key])}`);
  let note = null;
  if (isDeepStrictEqual(nodeParent[key], workerdParent[key])) {
    note = `known difference at ${difference.path.join(".")} no longer differs; remove it: ${difference.why}`;
  } else {
    assert.ok(answersAs(nodeParent[key], difference.bindingd), `bindingd no longer answers as listed: ${difference.why}\n${JSON.stringify(nodeParent[key])}`);
  }
  delete workerdParent[key];
  delete nodeParent[key];
  return note;
}

let mf;
let daemon;
let env;
let proxyMf;
let cfDaemon;
let cfEnv;

/** A cloudflare connection's key pair: the daemon signs with the private half (raw, base64url),
 * the proxy Worker verifies with the public half (its BINDINGD_PUBLIC_KEY secret). */
function signingKeys() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { private: privateKey.export({ format: "jwk" }).d, public: publicKey.export({ format: "jwk" }).x };
}

before(async () => {
  mf = workerdMiniflare();
  // workerd up first: a runtime that fails to start must fail here, before there is a daemon to leave behind.
  await mf.ready;
  const keys = signingKeys();
  proxyMf = new Miniflare({
    modules: true,
    modulesRoot: dirname(PROXY_WORKER),
    scriptPath: PROXY_WORKER,
    compatibilityDate: PROXY_COMPATIBILITY_DATE,
    host: "127.0.0.1",
    port: 0,
    bindings: { BINDINGD_PUBLIC_KEY: keys.public },
    kvNamespaces: ["CACHE"],
    r2Buckets: ["ASSETS_BUCKET"],
    d1Databases: ["APP_DB"],
  });
  const proxyUrl = (await proxyMf.ready).toString().replace(/\/$/, "");
  daemon = await startDaemon(`version: 1
bindings:
  CACHE: { type: kv }
  ASSETS_BUCKET: { type: objects }
  APP_DB: { type: sql }
`);
  env = await client.connect({ endpoint: daemon.endpoint });
  cfDaemon = await startDaemon(`version: 1
connections:
  cf: { kind: cloudflare, url: "${proxyUrl}", key: "${keys.private}" }
bindings:
  CACHE: { type: kv, connection: cf }
  ASSETS_BUCKET: { type: objects, connection: cf }
  APP_DB: { type: sql, connection: cf }
`);
  cfEnv = await client.connect({ endpoint: cfDaemon.endpoint });
});

after(async () => {
  env?.close();
  cfEnv?.close();
  await daemon?.stop();
  await cfDaemon?.stop();
  await mf?.dispose();
  await proxyMf?.dispose();
});

/** workerd's direct answer to a scenario: run once, a fresh copy for each side compared with it. */
const inWorkerd = new Map();
async function workerdAnswer(binding, name) {
  if (!inWorkerd.has(`${binding}/${name}`)) {
    inWorkerd.set(
      `${binding}/${name}`,
      mf.dispatchFetch(`http://differential/${binding}/${encodeURIComponent(name)}`).then((r) => r.json()),
    );
  }
  return structuredClone(await inWorkerd.get(`${binding}/${name}`));
}

/**
 * One side against workerd: `side` names it in messages, `storageClass` is what it answers for
 * R2's storage class, `known` its known-differences table.
 */
async function compare(t, binding, name, clientEnv, { side, storageClass, known, proxied = false }) {
  const id = `${binding}/${name}`;
  const answer = await workerdAnswer(binding, name);
  // A scenario catches the errors it expects; one that throws in workerd is itself broken.
  assert.equal(answer.failed, undefined, answer.messages?.join("\n"));
  // Through JSON like the workerd side, so both are plain data compared the same way.
  const inNode = JSON.parse(JSON.stringify(await runScenario(binding, name, clientEnv)));
  const workerdResult = { result: answer.result, failed: answer.failed };
  const nodeResult = { result: inNode.result, failed: inNode.failed };
  const explain = (error) => {
    error.message +=
      `\n\nerrors caught in workerd:\n  ${(answer.messages ?? []).join("\n  ")}` +
      `\nerrors caught through ${side}:\n  ${(inNode.messages ?? []).join("\n  ")}`;
    return error;
  };
  try {
    relaxD1Counters(workerdResult);
    relaxD1Counters(nodeResult);
    relaxStorageClass(workerdResult, "workerd");
    relaxStorageClass(nodeResult, side, storageClass);
    if (proxied) relaxProxySha256(workerdResult, nodeResult);
    for (const difference of known[id] ?? []) {
      const note = settleKnownDifference(workerdResult.result, nodeResult.result, difference);
      if (note !== null) t.diagnostic(note);
    }
    assert.deepEqual(nodeResult, workerdResult);
  } catch (error) {
    throw explain(error);
  }
}

for (const [binding, group] of Object.entries(scenarios)) {
  for (const name of Object.keys(group)) {
    test(`${binding}/${name}`, (t) =>
      compare(t, binding, name, env, { side: "bindingd", storageClass: "Standard", known: KNOWN_DIFFERENCES }));
  }
}

// The third side, after the first two so that each scenario's workerd answer is reused.
for (const [binding, group] of Object.entries(scenarios)) {
  for (const name of Object.keys(group)) {
    test(`cloudflare: ${binding}/${name}`, (t) =>
      compare(t, binding, name, cfEnv, {
        side: "bindingd (cloudflare connection)",
        storageClass: "Standard",
        known: KNOWN_DIFFERENCES_CLOUDFLARE,
        proxied: true,
      }));
  }
}
