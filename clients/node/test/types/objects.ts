// Compiled with `tsc --noEmit` by `make node-test`: the client's R2Bucket (and what it returns)
// must be assignable to the Workers types, so code written against @cloudflare/workers-types
// accepts it unchanged.
import type * as Workers from "@cloudflare/workers-types";
import { connect, type R2Bucket, type R2Object, type R2ObjectBody } from "../../dist/index.js";

interface Env {
  ASSETS_BUCKET: R2Bucket;
}

// Worker code, written for Cloudflare, taking Cloudflare's types.
async function serveAsset(env: { ASSETS_BUCKET: Workers.R2Bucket }, key: string): Promise<number> {
  const object = await env.ASSETS_BUCKET.get(key, { range: { suffix: 10 }, onlyIf: { etagDoesNotMatch: "x" } });
  if (object === null) return 404;
  const headers = new Headers() as unknown as Workers.Headers;
  object.writeHttpMetadata(headers);
  if (!("body" in object)) return 304;
  const body: Workers.ReadableStream = object.body;
  void body;
  return 200;
}

async function upload(bucket: Workers.R2Bucket, data: Workers.ReadableStream): Promise<Workers.R2Object> {
  const stored: Workers.R2Object = await bucket.put("k", data, { httpMetadata: { contentType: "text/plain" } });
  const upload: Workers.R2MultipartUpload = await bucket.createMultipartUpload("mp");
  const part: Workers.R2UploadedPart = await upload.uploadPart(1, "x");
  await upload.complete([part]);
  return stored;
}

export async function main(): Promise<void> {
  const env = await connect<Env>();
  const bucket: Workers.R2Bucket = env.ASSETS_BUCKET;
  await serveAsset(env, "index.html");

  // The client's own types, with Node's web types accepted where Workers code passes its own.
  const stream = new ReadableStream<Uint8Array>();
  const stored: R2Object = await env.ASSETS_BUCKET.put("a", stream, {
    httpMetadata: new Headers({ "content-type": "text/plain" }),
    customMetadata: { by: "ann" },
    sha256: "00",
  });
  const asWorkers: Workers.R2Object = stored;
  const checksums: Workers.R2StringChecksums = stored.checksums.toJSON();
  const got: R2ObjectBody | null = await env.ASSETS_BUCKET.get("a", { range: new Headers({ range: "bytes=0-1" }) });
  if (got !== null) {
    const asWorkersBody: Workers.R2ObjectBody = got;
    const text: string = await got.text();
    const json: { a: number } = await asWorkersBody.json<{ a: number }>();
    void [text, json];
  }
  const conditional: R2ObjectBody | R2Object | null = await env.ASSETS_BUCKET.get("a", {
    onlyIf: { etagMatches: "e" },
  });
  const nullable: R2Object | null = await env.ASSETS_BUCKET.put("a", new Blob(["x"]), { onlyIf: new Headers() });
  const listing: Workers.R2Objects = await env.ASSETS_BUCKET.list({ prefix: "a", include: ["customMetadata"] });
  if (listing.truncated) {
    const cursor: string = listing.cursor;
    void cursor;
  }
  await upload(bucket, stream as unknown as Workers.ReadableStream);
  await env.ASSETS_BUCKET.delete(["a", "b"]);
  void [asWorkers, checksums, conditional, nullable];
  env.close();
}
