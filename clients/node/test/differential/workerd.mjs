// The Miniflare that gives workerd's own answers to the differential scenarios: one definition
// for the Node differential (differential.test.mjs) and for the recorder of other clients'
// references (record.mjs), so that both compare against the same runtime and bindings.
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

const HERE = fileURLToPath(new URL("./", import.meta.url));
const COMPATIBILITY_DATE = "2026-07-01";

/** worker.mjs in Miniflare, with the KV, R2 and D1 bindings the scenarios use. */
export function workerdMiniflare() {
  return new Miniflare({
    modules: true,
    modulesRoot: HERE,
    scriptPath: `${HERE}worker.mjs`,
    compatibilityDate: COMPATIBILITY_DATE,
    kvNamespaces: ["CACHE"],
    r2Buckets: ["ASSETS_BUCKET"],
    d1Databases: ["APP_DB"],
  });
}
