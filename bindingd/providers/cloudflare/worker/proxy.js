// bindingd's proxy Worker: the daemon's `cloudflare` connection reaches the account's KV
// namespaces, R2 buckets, D1 databases and queue producers through it, one HTTP request per
// binding call.
//
// Request:  POST /v1/<BINDING>/<op>
//   x-bindingd-args: JSON arguments of the call (key, options, SQL and params, ...)
//   body:            the value (KV put, R2 put: streamed to R2, never buffered) or empty
//   authorization:   "Bindingd <payload b64url>.<signature b64url>"
// The payload is JSON {v:1, iat, exp, jti, m, p, ah, bh}: method, path, SHA-256 hex of the args
// header and of the body. The signature is Ed25519 over the payload's bytes, made by the daemon;
// the public half (raw 32 bytes, base64) is this Worker's secret BINDINGD_PUBLIC_KEY.
//
// Why the body hash is checked differently for R2 puts: hashing the body before acting would
// mean buffering an object of any size. R2's own `sha256` put option verifies the streamed bytes
// against the signed hash and stores nothing on a mismatch, so the tamper check stays, streamed.
//
// Replay: a jti seen within its validity window is refused. The set lives in this isolate's
// memory: one isolate serves a request stream from one location, and tokens live at most
// MAX_TTL_S seconds, so a replay would have to reach another isolate within that window. That
// gap is accepted and documented (README); a Durable Object would close it at the cost of a hop.

const MAX_TTL_S = 60; // a token valid longer than this is refused whatever its exp says
const CLOCK_SKEW_S = 30;
const seen = new Map(); // jti -> exp (seconds)

const enc = new TextEncoder();

function b64urlDecode(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(buf) {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256hex(data) {
  return hex(await crypto.subtle.digest("SHA-256", data));
}

function fail(status, reason, message, extra = {}) {
  return Response.json({ error: { reason, message, ...extra } }, { status });
}

let keyCache = null;
async function publicKey(env) {
  if (!env.BINDINGD_PUBLIC_KEY) return null;
  if (keyCache && keyCache.raw === env.BINDINGD_PUBLIC_KEY) return keyCache.key;
  const raw = b64urlDecode(env.BINDINGD_PUBLIC_KEY.trim());
  const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
  keyCache = { raw: env.BINDINGD_PUBLIC_KEY, key };
  return key;
}

// Returns {claims} or a refusal Response. Nothing is executed before this passes.
async function authenticate(request, env, path, argsRaw) {
  const key = await publicKey(env);
  if (!key) return fail(500, "AUTH_FAILED", "the proxy Worker has no BINDINGD_PUBLIC_KEY secret; run `bindingd cloudflare deploy`");
  const auth = request.headers.get("authorization") || "";
  const m = /^Bindingd ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(auth);
  if (!m) return fail(401, "AUTH_FAILED", "request is not signed");
  let payloadBytes, sig, claims;
  try {
    payloadBytes = b64urlDecode(m[1]);
    sig = b64urlDecode(m[2]);
    claims = JSON.parse(new TextDecoder().decode(payloadBytes));
  } catch {
    return fail(401, "AUTH_FAILED", "malformed token");
  }
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, sig, payloadBytes);
  if (!ok) return fail(401, "AUTH_FAILED", "bad signature (is the daemon's key the one deployed with this Worker?)");
  const now = Math.floor(Date.now() / 1000);
  if (claims.v !== 1 || typeof claims.jti !== "string" || claims.jti.length < 16) return fail(401, "AUTH_FAILED", "malformed token claims");
  if (typeof claims.exp !== "number" || claims.exp < now - CLOCK_SKEW_S) return fail(401, "AUTH_FAILED", "token expired");
  if (typeof claims.iat !== "number" || claims.iat > now + CLOCK_SKEW_S || claims.exp - claims.iat > MAX_TTL_S) {
    return fail(401, "AUTH_FAILED", "token lifetime is not acceptable (iat in the future or longer than " + MAX_TTL_S + " s)");
  }
  if (claims.m !== request.method || claims.p !== path) return fail(401, "AUTH_FAILED", "token was signed for another request");
  if (claims.ah !== (await sha256hex(enc.encode(argsRaw)))) return fail(401, "AUTH_FAILED", "arguments do not match the signature");
  // Forget expired ids, oldest first, stopping at the first one still valid: ids come in
  // about the order they expire, and walking the whole map (60-90 s of calls) on every
  // request made each request slower as the call rate grew. An id left behind a later one
  // is expired, and its token is refused as expired above before it is looked up here.
  for (const [j, exp] of seen) {
    if (exp >= now - CLOCK_SKEW_S) break;
    seen.delete(j);
  }
  if (seen.has(claims.jti)) return fail(401, "AUTH_FAILED", "token replayed");
  seen.set(claims.jti, claims.exp);
  return { claims };
}

function objectJson(o) {
  if (!o) return null;
  return {
    key: o.key, version: o.version, size: o.size, etag: o.etag, httpEtag: o.httpEtag,
    uploaded: o.uploaded.toISOString(), httpMetadata: o.httpMetadata || {},
    customMetadata: o.customMetadata || {}, range: o.range || null,
    checksums: o.checksums && o.checksums.toJSON ? o.checksums.toJSON() : {},
    storageClass: o.storageClass,
  };
}

function r2Http(h) {
  // cacheExpiry travels as an ISO date; R2 wants a Date.
  if (!h) return undefined;
  const c = { ...h };
  if (c.cacheExpiry) c.cacheExpiry = new Date(c.cacheExpiry);
  return c;
}

// What R2 says of an upload id it does not know (the daemon names it "no such upload").
function noSuchUpload(e) {
  return /10024|does not exist|NoSuchUpload/i.test(String(e && e.message));
}

function r2Conditional(a) {
  // The daemon sends onlyIf with ISO dates; R2 wants Date objects.
  if (!a) return undefined;
  const c = { ...a };
  for (const k of ["uploadedBefore", "uploadedAfter"]) if (c[k]) c[k] = new Date(c[k]);
  return c;
}

async function bodyBytes(request) {
  return new Uint8Array(await request.arrayBuffer());
}

async function checkBody(claims, bytes) {
  if (claims.bh !== (await sha256hex(bytes))) return fail(401, "AUTH_FAILED", "body does not match the signature");
  return null;
}

async function kv(ns, op, a, request, claims) {
  switch (op) {
    case "get": {
      const r = await ns.getWithMetadata(a.key, { type: "arrayBuffer", cacheTtl: a.cacheTtl });
      if (r.value === null) return new Response(null, { status: 404, headers: { "x-bindingd-found": "0" } });
      return new Response(r.value, { headers: { "x-bindingd-metadata": JSON.stringify(r.metadata ?? null) } });
    }
    case "put": {
      const bytes = await bodyBytes(request);
      const bad = await checkBody(claims, bytes);
      if (bad) return bad;
      const opts = {};
      if (a.expiration != null) opts.expiration = a.expiration;
      if (a.expirationTtl != null) opts.expirationTtl = a.expirationTtl;
      if (a.metadata !== undefined && a.metadata !== null) opts.metadata = a.metadata;
      await ns.put(a.key, bytes, opts);
      return Response.json({});
    }
    case "delete":
      await ns.delete(a.key);
      return Response.json({});
    case "list": {
      if (a.after == null) return Response.json(await ns.list({ prefix: a.prefix, limit: a.limit, cursor: a.cursor || undefined }));
      // The daemon pages by "the keys after this one" (its own cursor, the same for every
      // backend); KV's cursors are opaque, so walk KV's pages here and skip up to `after`.
      const keys = [];
      let cursor;
      const limit = a.limit ?? 1000;
      for (;;) {
        const r = await ns.list({ prefix: a.prefix, cursor });
        for (const k of r.keys) if (k.name > a.after && keys.length <= limit) keys.push(k);
        if (r.list_complete || keys.length > limit) break;
        cursor = r.cursor;
      }
      return Response.json({ keys: keys.slice(0, limit), list_complete: keys.length <= limit });
    }
  }
  return null;
}

async function r2(bucket, op, a, request, claims) {
  switch (op) {
    case "head":
      return Response.json({ object: objectJson(await bucket.head(a.key)) });
    case "get": {
      const o = await bucket.get(a.key, { range: a.range, onlyIf: r2Conditional(a.onlyIf) });
      if (o === null) return Response.json({ object: null });
      // Condition not met: R2 returns the object without a body.
      if (!("body" in o) || !o.body) return Response.json({ object: objectJson(o), preconditionFailed: true });
      return new Response(o.body, { headers: { "x-bindingd-object": JSON.stringify(objectJson(o)) } });
    }
    case "put": {
      if (!/^[0-9a-f]{64}$/.test(claims.bh || "")) return fail(401, "AUTH_FAILED", "an object put must sign the body's SHA-256");
      const opts = {
        httpMetadata: r2Http(a.httpMetadata), customMetadata: a.customMetadata,
        onlyIf: r2Conditional(a.onlyIf), sha256: claims.bh,
      };
      // R2 takes one hashing option: sha256, signed; the daemon verified every other digest.
      let o;
      try {
        o = await bucket.put(a.key, request.body ?? new Uint8Array(0), opts);
      } catch (e) {
        if (/sha-?256|checksum|digest/i.test(String(e && e.message))) return fail(401, "AUTH_FAILED", "body does not match the signature");
        throw e;
      }
      if (o === null) return Response.json({ object: null, preconditionFailed: true });
      return Response.json({ object: objectJson(o) });
    }
    case "mpCreate": {
      const u = await bucket.createMultipartUpload(a.key, { httpMetadata: r2Http(a.httpMetadata), customMetadata: a.customMetadata });
      return Response.json({ uploadId: u.uploadId });
    }
    case "mpPart": {
      // R2's uploadPart has no sha256 option: the part is hashed as it streams to R2, and its
      // etag is answered only when the hash is the signed one (a tampered part is never named
      // to the daemon, so it cannot be part of a completed object).
      if (!/^[0-9a-f]{64}$/.test(claims.bh || "")) return fail(401, "AUTH_FAILED", "a part upload must sign the body's SHA-256");
      const length = Number(request.headers.get("content-length") ?? "0");
      if (!Number.isSafeInteger(length)) return fail(400, "INVALID_ARGUMENT", "a part needs a content-length");
      const u = bucket.resumeMultipartUpload(a.key, a.uploadId);
      const source = request.body ?? new Response(new Uint8Array(0)).body;
      const [toR2, toHash] = source.tee();
      const digest = new crypto.DigestStream("SHA-256");
      const hashing = toHash.pipeTo(digest);
      const fixed = new FixedLengthStream(length);
      const piping = toR2.pipeTo(fixed.writable).catch(() => {});
      let part;
      try {
        part = await u.uploadPart(a.partNumber, fixed.readable);
      } catch (e) {
        if (noSuchUpload(e)) return fail(400, "INVALID_ARGUMENT", "NoSuchUpload: " + String(e && e.message));
        throw e;
      }
      await piping;
      await hashing;
      if (hex(await digest.digest) !== claims.bh) return fail(401, "AUTH_FAILED", "body does not match the signature");
      return Response.json({ etag: part.etag });
    }
    case "mpCheck": {
      // Whether an upload id is live, asked before a part's body is accepted. R2's binding has
      // no lookup (no ListParts): a complete() naming a part no upload can have is refused with
      // InvalidPart (10025) while the upload is live, and leaves it live; with NoSuchUpload
      // (10024) once it was completed or aborted. Anything else (Miniflare answers an id it
      // never made with 10001) cannot tell: the part upload itself is then the check.
      const probe = [{ partNumber: 1, etag: "bindingd-upload-check" }];
      try {
        await bucket.resumeMultipartUpload(a.key, a.uploadId).complete(probe);
      } catch (e) {
        if (noSuchUpload(e)) return fail(400, "INVALID_ARGUMENT", "NoSuchUpload: " + String(e && e.message));
        return Response.json({ live: /\(10025\)/.test(String(e && e.message)) ? true : null });
      }
      return Response.json({ live: true }); // not reached: no part has that etag
    }
    case "mpComplete": {
      try {
        const o = await bucket.resumeMultipartUpload(a.key, a.uploadId).complete(a.parts);
        return Response.json({ object: objectJson(o) });
      } catch (e) {
        if (noSuchUpload(e)) return fail(400, "INVALID_ARGUMENT", "NoSuchUpload: " + String(e && e.message));
        throw e;
      }
    }
    case "mpAbort":
      try {
        await bucket.resumeMultipartUpload(a.key, a.uploadId).abort();
      } catch (e) {
        if (!noSuchUpload(e)) throw e;
      }
      return Response.json({});
    case "delete":
      await bucket.delete(a.keys ?? a.key);
      return Response.json({});
    case "list": {
      const r = await bucket.list({
        prefix: a.prefix, delimiter: a.delimiter, cursor: a.cursor || undefined,
        limit: a.limit, include: a.include, startAfter: a.startAfter,
      });
      return Response.json({
        objects: r.objects.map(objectJson), truncated: r.truncated,
        cursor: r.truncated ? r.cursor : null, delimitedPrefixes: r.delimitedPrefixes,
      });
    }
  }
  return null;
}

function blobsOut(rows) {
  // D1 returns BLOBs as ArrayBuffer / arrays; JSON carries them tagged so the daemon gets bytes.
  return rows.map((row) => {
    if (Array.isArray(row)) return row.map(cellOut);
    const o = {};
    for (const k in row) o[k] = cellOut(row[k]);
    return o;
  });
}
function cellOut(v) {
  // D1 hands BLOBs back as arrays of byte values (no other SQL value is an array).
  if (Array.isArray(v)) v = Uint8Array.from(v);
  if (v instanceof ArrayBuffer) v = new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return { $blob: b64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
  return v;
}
function b64(bytes) {
  // In slices: one fromCharCode(...) call per value overflows the stack past ~100 KB.
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}
function paramIn(v) {
  if (v && typeof v === "object" && typeof v.$blob === "string") return b64urlDecode(v.$blob);
  return v;
}

async function d1(db, op, a) {
  const stmt = (s) => db.prepare(s.sql).bind(...(s.params || []).map(paramIn));
  try {
    switch (op) {
      case "query": {
        const s = stmt(a);
        if (a.raw) {
          const [cols, ...rows] = await s.raw({ columnNames: true });
          return Response.json({ columns: cols ?? [], rows: blobsOut(rows), success: true, meta: {} });
        }
        const r = await s.all();
        return Response.json({ results: blobsOut(r.results), success: r.success, meta: r.meta });
      }
      case "batch": {
        const rs = await db.batch(a.statements.map(stmt));
        return Response.json({ results: rs.map((r) => ({ results: blobsOut(r.results), success: r.success, meta: r.meta })) });
      }
      // The daemon's sql provider: rows as arrays with their columns, and D1's meta.
      case "rows": {
        const r = await stmt(a).all();
        const out = rowsOf(r);
        // No rows, no column names in all()'s answer: a statement that changed nothing is run
        // again for them (raw() tells columns, not meta); one that wrote is never run twice.
        if (!out.rows.length && !(r.meta && r.meta.changed_db)) {
          const [cols] = await stmt(a).raw({ columnNames: true });
          out.columns = cols ?? [];
        }
        return Response.json(out);
      }
      case "rowsBatch": {
        const stmts = a.statements.map(stmt);
        try {
          const rs = await db.batch(stmts);
          return Response.json({ results: rs.map(rowsOf) });
        } catch (e) {
          // D1 rolled the batch back but does not say which statement failed: find it by
          // running prefixes that a missing table always rolls back.
          const i = await failingIndex(db, stmts);
          return fail(400, "SQL_ERROR", (i === null ? "" : i + "\x1f") + d1Message(e));
        }
      }
      case "exec": {
        const r = await db.exec(a.sql);
        return Response.json({ count: r.count, duration: r.duration });
      }
    }
  } catch (e) {
    return fail(400, "SQL_ERROR", d1Message(e));
  }
  return null;
}

function d1Message(e) {
  return String((e && (e.cause?.message || e.message)) || e);
}

function rowsOf(r) {
  const results = r.results || [];
  const columns = results.length ? Object.keys(results[0]) : [];
  return { columns, rows: blobsOut(results.map((o) => columns.map((c) => o[c]))), meta: r.meta };
}

const ROLLBACK_TABLE = "__bindingd_rollback__";
async function failingIndex(db, stmts) {
  // The smallest prefix that fails on its own; every try is rolled back by the last statement.
  const fails = async (k) => {
    try {
      await db.batch([...stmts.slice(0, k), db.prepare("SELECT * FROM " + ROLLBACK_TABLE)]);
      return true; // cannot happen: the table does not exist
    } catch (e) {
      return !d1Message(e).includes(ROLLBACK_TABLE);
    }
  };
  let lo = 1, hi = stmts.length;
  if (!(await fails(hi))) return null;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (await fails(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo - 1;
}

async function queue(q, op, a) {
  const msgOpts = (m) => ({ contentType: m.contentType, delaySeconds: m.delaySeconds });
  const body = (m) => (m.contentType === "bytes" ? b64urlDecode(m.body) : m.body);
  switch (op) {
    case "send":
      await q.send(body(a), msgOpts(a));
      return Response.json({});
    case "sendBatch":
      await q.sendBatch(a.messages.map((m) => ({ body: body(m), ...msgOpts(m) })), { delaySeconds: a.delaySeconds });
      return Response.json({});
  }
  return null;
}

// R2's error codes (the "(100NN)" its messages end with) for a request the caller got wrong:
// https://developers.cloudflare.com/r2/api/error-codes/. Every other code (10001 InternalError,
// 10043 ServiceUnavailable, 10058 TooManyRequests, ...) is R2's own failure.
const R2_CALLER_CODES = new Set([
  "10011", // EntityTooSmall: a part but the last under 5 MiB
  "10012", // EntityTooLarge / metadata too large
  "10020", // InvalidObjectName
  "10022", // InvalidMaxKeys / bad list arguments
  "10024", // NoSuchUpload
  "10025", // InvalidPart
  "10031", // PreconditionFailed
  "10037", // BadDigest
  "10039", // InvalidRange
  "10048", // InvalidPart: parts of unequal sizes
]);

// A binding call that threw: the caller's mistake (INVALID_ARGUMENT) when the runtime refused the
// arguments (TypeError, RangeError) or the store says so (an R2 caller code, a KV 4xx); anything
// else, internal or unknown, is the store's failure (BACKEND_UNAVAILABLE), so the daemon's caller
// sees a failure worth retrying rather than a mistake of theirs.
function failureOf(e, kind, name) {
  const msg = String((e && e.message) || e);
  if (e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError) {
    return fail(400, "INVALID_ARGUMENT", msg);
  }
  const r2code = /\((10\d{3})\)\s*$/.exec(msg);
  if (kind === "objects" && r2code && R2_CALLER_CODES.has(r2code[1])) return fail(400, "INVALID_ARGUMENT", msg);
  const kvStatus = /^KV \w+ failed: (\d{3})\b/.exec(msg);
  if (kind === "kv" && kvStatus && kvStatus[1].startsWith("4")) return fail(400, "INVALID_ARGUMENT", msg);
  return fail(503, "BACKEND_UNAVAILABLE", "the " + kind + " binding " + name + " failed in the proxy Worker: " + msg);
}

function kindOf(b) {
  // Duck typing on the runtime's binding objects: the Worker does not know its bindings' kinds
  // in advance, wrangler config decides them.
  if (!b || typeof b !== "object") return null;
  if (typeof b.prepare === "function" && typeof b.batch === "function") return "sql";
  if (typeof b.createMultipartUpload === "function") return "objects";
  if (typeof b.getWithMetadata === "function") return "kv";
  if (typeof b.sendBatch === "function") return "queue";
  return null;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const path = url.pathname;
    const m = /^\/v1\/([A-Za-z_][A-Za-z0-9_]*)\/([A-Za-z]+)$/.exec(path);
    if (!m || request.method !== "POST") return fail(404, "NOT_FOUND", "unknown route " + request.method + " " + path);
    // Arguments come in the x-bindingd-args header, or, too large for a header (a queue
    // message, a statement's parameters), as the JSON body of a call that has no body of its
    // own: then there is no header, and the signature covers "" as the arguments and the body.
    const inBody = !request.headers.has("x-bindingd-args");
    const argsRaw = inBody ? "" : request.headers.get("x-bindingd-args");
    const auth = await authenticate(request, env, path, argsRaw);
    if (auth instanceof Response) return auth;
    const [, name, op] = m;
    let a;
    try {
      if (inBody) {
        const bytes = await bodyBytes(request);
        const bad = await checkBody(auth.claims, bytes);
        if (bad) return bad;
        a = JSON.parse(new TextDecoder().decode(bytes));
      } else {
        a = JSON.parse(argsRaw);
      }
    } catch {
      return fail(400, "INVALID_ARGUMENT", "the call's arguments are not JSON");
    }
    const b = name === "BINDINGD_PUBLIC_KEY" ? undefined : env[name];
    const kind = kindOf(b);
    if (!kind) {
      const served = Object.keys(env).filter((k) => kindOf(env[k])).sort();
      return fail(404, "BINDING_NOT_FOUND", "the proxy Worker has no binding " + JSON.stringify(name) + " (it has: " + served.join(", ") + ")", { has: served });
    }
    let r;
    try {
      // A probe (bindingd check) only says the binding is there and of which kind: nothing is
      // read or written (a queue has no call that does nothing).
      if (op === "probe") r = Response.json({});
      else if (kind === "kv") r = await kv(b, op, a, request, auth.claims);
      else if (kind === "objects") r = await r2(b, op, a, request, auth.claims);
      else if (kind === "sql") r = await d1(b, op, a);
      else r = await queue(b, op, a);
    } catch (e) {
      return failureOf(e, kind, name);
    }
    if (!r) return fail(400, "INVALID_ARGUMENT", "operation " + JSON.stringify(op) + " is not supported on " + kind + " binding " + name);
    r.headers.set("x-bindingd-kind", kind);
    return r;
  },
};
