// The differential suite (issue 6, "Proof against the real runtime"): every scenario in
// differential/scenarios.mjs runs once inside workerd (Miniflare, with its own KV / R2 / D1) and
// once in Node through @bindingd/client against a real daemon's local providers; the normalised
// results must be equal, except for the few known differences listed below (each asserted as it
// is, so a change on either side shows up).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import * as client from "../dist/index.js";
import { runScenario, scenarios } from "./differential/scenarios.mjs";
import { startDaemon } from "./support/daemon.mjs";

const HERE = fileURLToPath(new URL("./differential/", import.meta.url));
const COMPATIBILITY_DATE = "2026-07-01";

/**
 * Where bindingd differs from workerd on purpose or cannot follow it, per scenario: the path of
 * the field in the result and what each side answers. README ("Differences from Cloudflare" in
 * the Node client section) explains each.
 */
const KNOWN_DIFFERENCES = {
  "kv/readTypes": [
    {
      path: ["unknownTypeMissingKey"],
      why: "an unknown type for a missing key: workerd answers null, bindingd's client a TypeError before the call",
      workerd: { ok: null },
      bindingd: { threw: "TypeError" },
    },
    {
      path: ["unknownTypeWithMetadataMissingKey"],
      why: "the same with getWithMetadata",
      workerd: { ok: { value: null, metadata: null, cacheStatus: null } },
      bindingd: { threw: "TypeError" },
    },
  ],
  "kv/listPaging": [
    {
      path: ["badCursor"],
      why: "a cursor the store did not make: Miniflare answers an empty page, bindingd InvalidArgument",
      workerd: { ok: [] },
      bindingd: { threw: "Error" },
    },
  ],
  "kv/bulkIntegerLikeKeys": [
    {
      path: ["strings"],
      why: "workerd drops integer-like keys (\"1\", \"10\") from a bulk get's Map; bindingd keeps them",
      workerd: { ok: { $map: [["bulk-int/a", "A"]] } },
      bindingd: {
        ok: {
          $map: [
            ["bulk-int/a", "A"],
            ["1", "one"],
            ["10", null],
          ],
        },
      },
    },
    {
      path: ["number"],
      why: "the same for a number key, which both turn into the string \"1\"",
      workerd: { ok: { $map: [["bulk-int/a", "A"]] } },
      bindingd: {
        ok: {
          $map: [
            ["bulk-int/a", "A"],
            ["1", "one"],
          ],
        },
      },
    },
  ],
};

/** Take a known difference out of a result after checking it is exactly as documented. */
function withoutKnownDifference(result, difference, side) {
  const parent = difference.path.slice(0, -1).reduce((node, key) => node?.[key], result);
  const last = difference.path.at(-1);
  assert.ok(parent !== undefined && last in parent, `${side}: no field ${difference.path.join(".")}`);
  assert.deepEqual(parent[last], difference[side], `${side} no longer answers as documented: ${difference.why}`);
  delete parent[last];
}

let mf;
let daemon;
let env;

before(async () => {
  mf = new Miniflare({
    modules: true,
    modulesRoot: HERE,
    scriptPath: `${HERE}worker.mjs`,
    compatibilityDate: COMPATIBILITY_DATE,
    kvNamespaces: ["CACHE"],
    r2Buckets: ["ASSETS_BUCKET"],
    d1Databases: ["APP_DB"],
  });
  daemon = await startDaemon(`version: 1
bindings:
  CACHE: { type: kv }
  ASSETS_BUCKET: { type: objects }
  APP_DB: { type: sql }
`);
  env = await client.connect({ endpoint: daemon.endpoint });
});

after(async () => {
  env?.close();
  await daemon?.stop();
  await mf?.dispose();
});

/** Node's side of R2 / D1 runs once the client has the class (they land on main separately). */
const CLIENT_CLASS = { kv: "KVNamespace", r2: "R2Bucket", d1: "D1Database" };

for (const [binding, group] of Object.entries(scenarios)) {
  const missing = typeof client[CLIENT_CLASS[binding]] !== "function";
  for (const name of Object.keys(group)) {
    const id = `${binding}/${name}`;
    test(id, async () => {
      const response = await mf.dispatchFetch(`http://differential/${binding}/${encodeURIComponent(name)}`);
      const inWorkerd = await response.json();
      if (missing) {
        // Until the client class lands, the scenario at least runs cleanly in workerd.
        assert.equal(inWorkerd.failed, undefined, inWorkerd.messages?.join("\n"));
        return;
      }
      // Through JSON like the workerd side, so both are plain data compared the same way.
      const inNode = JSON.parse(JSON.stringify(await runScenario(binding, name, env)));
      const workerdResult = { result: inWorkerd.result, failed: inWorkerd.failed };
      const nodeResult = { result: inNode.result, failed: inNode.failed };
      for (const difference of KNOWN_DIFFERENCES[id] ?? []) {
        withoutKnownDifference(workerdResult.result, difference, "workerd");
        withoutKnownDifference(nodeResult.result, difference, "bindingd");
      }
      try {
        assert.deepEqual(nodeResult, workerdResult);
      } catch (error) {
        error.message +=
          `\n\nerrors caught in workerd:\n  ${(inWorkerd.messages ?? []).join("\n  ")}` +
          `\nerrors caught through bindingd:\n  ${(inNode.messages ?? []).join("\n  ")}`;
        throw error;
      }
    });
  }
}
