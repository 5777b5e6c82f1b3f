// Compiled with `tsc --noEmit` by `make node-test`: the client's binding classes must be
// assignable to the Workers types, so code written against @cloudflare/workers-types accepts them.
import type * as Workers from "@cloudflare/workers-types";
import { connect, type KVNamespace } from "../../dist/index.js";

interface Env {
  CACHE: KVNamespace;
  SITE_NAME: string;
}

// Worker code, written for Cloudflare, taking Cloudflare's types.
async function readUser(env: { CACHE: Workers.KVNamespace }, id: number): Promise<unknown> {
  return env.CACHE.get(`user:${id}`, "json");
}

export async function main(): Promise<void> {
  const env = await connect<Env>();
  const cache: Workers.KVNamespace = env.CACHE;
  await readUser(env, 1);
  await cache.put("k", "v", { expirationTtl: 60 });
  const name: string = env.SITE_NAME;
  void name;
  env.close();
}
