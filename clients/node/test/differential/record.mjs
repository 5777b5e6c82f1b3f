// workerd's own answers to the differential scenarios, as JSON, for clients that cannot run
// them in-process (the PHP client: tests/blackbox/test_php_differential.py).
//
//   node test/differential/record.mjs OUT.json [binding/name ...]
//
// Runs each named scenario (all of them without names) in Miniflare against workerd's KV, R2
// and D1, in the order given, and writes {"binding/name": {result, failed, messages}}.
import { writeFileSync } from "node:fs";
import { scenarios } from "./scenarios.mjs";
import { workerdMiniflare } from "./workerd.mjs";

const [out, ...named] = process.argv.slice(2);
if (!out) {
  console.error("usage: record.mjs OUT.json [binding/name ...]");
  process.exit(2);
}
const ids = named.length > 0 ? named : Object.entries(scenarios).flatMap(([b, g]) => Object.keys(g).map((n) => `${b}/${n}`));
const mf = workerdMiniflare();
try {
  const answers = {};
  for (const id of ids) {
    const [binding, name] = id.split("/");
    const response = await mf.dispatchFetch(`http://differential/${binding}/${encodeURIComponent(name)}`);
    answers[id] = await response.json();
  }
  writeFileSync(out, JSON.stringify(answers, null, 1));
} finally {
  await mf.dispose();
}
