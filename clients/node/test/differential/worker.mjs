// The Miniflare side of the differential suite: GET /<binding>/<scenario> runs that scenario
// against workerd's own KV / R2 / D1 and answers its normalised result as JSON.
import { runScenario } from "./scenarios.mjs";

export default {
  async fetch(request, env) {
    const [, binding, name] = new URL(request.url).pathname.split("/");
    return Response.json(await runScenario(binding, decodeURIComponent(name ?? ""), env));
  },
};
