/**
 * Objects bindings: the Workers `R2Bucket`, so code written for Cloudflare runs unchanged.
 *
 * Bodies stream both ways: `put` sends the value in messages of 256 KiB to 1 MiB as it reads
 * them (a ReadableStream or Blob is never held whole), and a get's `body` is a web
 * ReadableStream fed by the daemon's chunks as they arrive. Request building mirrors the
 * Python client (clients/python/bindingd_client/objects.py); the shapes and the small rules
 * that live in the runtime (Headers for onlyIf / range / httpMetadata, one checksum per put,
 * `bodyUsed`) follow workerd, whose types the class implements.
 */
import type { ReadableByteStreamController, UnderlyingByteSource } from "node:stream/web";
import {
  type ObjectConditional,
  type ObjectHttpMetadata,
  type ObjectMeta,
  type ObjectRangeRequest,
  type ObjectsGetResponse,
  type ObjectsPutRequest,
  type ObjectsUploadPartRequest,
  ObjectsService,
} from "./gen/bindingd/v1/objects.js";
import { INT64_MAX, bytesOf, decodeText, isReadableStream, streamChunks, toArrayBuffer, toInt32 } from "./bytes.js";
import { InternalError, InvalidArgument } from "./errors.js";
import type { Transport } from "./transport.js";
import { CHUNK_BYTES } from "./wire.js";
import type * as Workers from "@cloudflare/workers-types";

export type R2Conditional = Workers.R2Conditional;
export type R2Range = Workers.R2Range;
export type R2HTTPMetadata = Workers.R2HTTPMetadata;
export type R2StringChecksums = Workers.R2StringChecksums;
export type R2UploadedPart = Workers.R2UploadedPart;
export type R2ListOptions = Workers.R2ListOptions;
export type R2UploadPartOptions = Workers.R2UploadPartOptions;

/** Headers as Workers code has them, or Node's own (both work at run time). */
type AnyHeaders = Workers.Headers | globalThis.Headers;

export interface R2GetOptions {
  onlyIf?: R2Conditional | AnyHeaders;
  range?: R2Range | AnyHeaders;
  ssecKey?: ArrayBuffer | string;
}

export interface R2PutOptions extends Omit<Workers.R2PutOptions, "onlyIf" | "httpMetadata"> {
  onlyIf?: R2Conditional | AnyHeaders;
  httpMetadata?: R2HTTPMetadata | AnyHeaders;
}

export interface R2MultipartOptions extends Omit<Workers.R2MultipartOptions, "httpMetadata"> {
  httpMetadata?: R2HTTPMetadata | AnyHeaders;
}

/** What `put` and `uploadPart` accept; web streams and blobs may be Workers' or Node's. */
export type R2PutValue =
  | Workers.ReadableStream
  | globalThis.ReadableStream
  | ArrayBuffer
  | ArrayBufferView
  | string
  | null
  | Workers.Blob
  | globalThis.Blob;

/** One page of `list`; `cursor` only when `truncated`. */
export type R2Objects = {
  objects: R2Object[];
  delimitedPrefixes: string[];
} & ({ truncated: true; cursor: string } | { truncated: false });

/** Smaller chunks from a stream or blob are gathered up to this size before they are sent. */
const MIN_CHUNK = 256 * 1024;
/** The daemon's (and R2's) part numbers, for a number that does not even fit the wire. */
const PART_LIMITS = "it must be between 1 and 10000";
const BODY_USED = "Body has already been used. It can only be used once. Use tee() first if you need to read it twice.";

/** The algorithms a put may verify (the daemon verifies and stores each). */
const CHECKSUMS = {
  md5: { label: "MD5", bytes: 16 },
  sha1: { label: "SHA-1", bytes: 20 },
  sha256: { label: "SHA-256", bytes: 32 },
  sha384: { label: "SHA-384", bytes: 48 },
  sha512: { label: "SHA-512", bytes: 64 },
} as const;
type ChecksumName = keyof typeof CHECKSUMS;
const CHECKSUM_NAMES = Object.keys(CHECKSUMS) as ChecksumName[];

const HTTP_HEADERS: ReadonlyArray<[Exclude<keyof R2HTTPMetadata, "cacheExpiry">, string]> = [
  ["contentType", "content-type"],
  ["contentLanguage", "content-language"],
  ["contentDisposition", "content-disposition"],
  ["contentEncoding", "content-encoding"],
  ["cacheControl", "cache-control"],
];

// --- result types --------------------------------------------------------------------------------

function toHex(buffer: ArrayBuffer | undefined): string | undefined {
  return buffer === undefined ? undefined : Buffer.from(buffer).toString("hex");
}

/** Raw digests as ArrayBuffers; `toJSON()` gives them as hex, as in workerd. */
export class R2Checksums implements Workers.R2Checksums {
  readonly md5?: ArrayBuffer;
  readonly sha1?: ArrayBuffer;
  readonly sha256?: ArrayBuffer;
  readonly sha384?: ArrayBuffer;
  readonly sha512?: ArrayBuffer;

  constructor(digests: Partial<Record<ChecksumName, Uint8Array>>) {
    // Every name is an own property (undefined when absent), as workerd's object has them.
    this.md5 = digests.md5 && toArrayBuffer(digests.md5);
    this.sha1 = digests.sha1 && toArrayBuffer(digests.sha1);
    this.sha256 = digests.sha256 && toArrayBuffer(digests.sha256);
    this.sha384 = digests.sha384 && toArrayBuffer(digests.sha384);
    this.sha512 = digests.sha512 && toArrayBuffer(digests.sha512);
  }

  toJSON(): R2StringChecksums {
    const json: R2StringChecksums = {};
    for (const name of CHECKSUM_NAMES) {
      const hex = toHex(this[name]);
      if (hex !== undefined) json[name] = hex;
    }
    return json;
  }
}

function decodeHttpMetadata(message: ObjectHttpMetadata | undefined): R2HTTPMetadata {
  const found: R2HTTPMetadata = {};
  if (message === undefined) return found;
  for (const [name] of HTTP_HEADERS) {
    const value = message[name];
    if (value !== undefined) found[name] = value;
  }
  if (message.cacheExpiry !== undefined) found.cacheExpiry = new Date(Number(message.cacheExpiry));
  return found;
}

/** An object's metadata: what `head`, `put`, `list` and a failed `onlyIf` get return. */
export class R2Object implements Workers.R2Object {
  readonly key: string;
  readonly version: string;
  readonly size: number;
  readonly etag: string;
  readonly httpEtag: string;
  readonly checksums: R2Checksums;
  readonly uploaded: Date;
  readonly httpMetadata?: R2HTTPMetadata;
  readonly customMetadata?: Record<string, string>;
  /** The bytes a get returned (head and a failed onlyIf: the whole object); else undefined. */
  readonly range?: R2Range;
  readonly storageClass: string;
  readonly ssecKeyMd5?: string;

  /** Built from the daemon's answer; `range` overrides the one it carries. */
  constructor(meta: ObjectMeta, range?: R2Range) {
    this.key = meta.key;
    this.version = meta.version;
    this.size = Number(meta.size);
    this.etag = meta.etag;
    this.httpEtag = meta.httpEtag;
    const sums = meta.checksums;
    this.checksums = new R2Checksums({
      md5: sums?.md5,
      sha1: sums?.sha1,
      sha256: sums?.sha256,
      sha384: sums?.sha384,
      sha512: sums?.sha512,
    });
    this.uploaded = new Date(Number(meta.uploaded));
    this.httpMetadata = decodeHttpMetadata(meta.httpMetadata);
    this.customMetadata = { ...meta.customMetadata };
    this.range =
      range ?? (meta.range ? { offset: Number(meta.range.offset), length: Number(meta.range.length) } : undefined);
    this.storageClass = meta.storageClass;
    this.ssecKeyMd5 = undefined;
  }

  /** Set the object's HTTP metadata as response headers (`Expires` from cacheExpiry). */
  writeHttpMetadata(headers: AnyHeaders): void {
    const http = this.httpMetadata ?? {};
    for (const [name, header] of HTTP_HEADERS) {
      const value = http[name];
      if (value !== undefined) headers.set(header, value);
    }
    if (http.cacheExpiry !== undefined) headers.set("expires", http.cacheExpiry.toUTCString());
  }
}

type GetStream = AsyncGenerator<ObjectsGetResponse, void, undefined>;

/**
 * Ends the daemon's stream of a body that was neither read to the end nor cancelled, once its
 * ReadableStream can no longer be reached (`const o = await b.get(k); return o.etag`): else
 * the call would stay open, gRPC holding up to 16 MiB read ahead, the daemon a file open.
 */
const abandonedBodies = new FinalizationRegistry<GetStream>((responses) => {
  responses.return(undefined).catch(() => undefined);
});

/** An object with its body, streamed from the daemon as it is read; readable once. */
export class R2ObjectBody extends R2Object implements Workers.R2ObjectBody {
  readonly #stream: ReadableStream<Uint8Array>;
  #disturbed = false;

  constructor(meta: ObjectMeta, responses: GetStream) {
    super(meta);
    const markRead = (): void => {
      this.#disturbed = true;
    };
    // A byte stream that takes one chunk from the daemon's stream per read: what is fetched
    // ahead of the reader is only gRPC's own read-ahead (16 messages of at most 1 MiB).
    const source: UnderlyingByteSource = {
      type: "bytes",
      async pull(controller: ReadableByteStreamController): Promise<void> {
        markRead();
        for (;;) {
          const next = await responses.next();
          if (next.done) {
            controller.close();
            controller.byobRequest?.respond(0);
            return;
          }
          const part = next.value.part;
          if (part?.$case !== "chunk") {
            throw new InternalError(`the daemon sent a second header in the body of "${meta.key}"`);
          }
          if (part.chunk.byteLength === 0) continue;
          // A copy owns its buffer: a byte stream transfers it, and the decoded chunk is a view
          // into gRPC's message buffer.
          controller.enqueue(new Uint8Array(part.chunk));
          return;
        }
      },
      async cancel(): Promise<void> {
        markRead();
        await responses.return(undefined);
      },
    };
    this.#stream = new ReadableStream(source) as ReadableStream<Uint8Array>;
    abandonedBodies.register(this.#stream, responses);
  }

  get body(): Workers.ReadableStream {
    return this.#stream as unknown as Workers.ReadableStream;
  }

  get bodyUsed(): boolean {
    return this.#disturbed;
  }

  /** The whole body in one buffer, sized from the range the daemon announced. */
  async #readAll(): Promise<Uint8Array> {
    if (this.#disturbed || this.#stream.locked) throw new TypeError(BODY_USED);
    const range = this.range as { length?: number } | undefined;
    const expected = range?.length ?? this.size;
    let out = new Uint8Array(expected);
    let filled = 0;
    const reader = this.#stream.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (filled + value.byteLength > out.byteLength) {
          const grown = new Uint8Array(Math.max(out.byteLength * 2, filled + value.byteLength));
          grown.set(out.subarray(0, filled));
          out = grown;
        }
        out.set(value, filled);
        filled += value.byteLength;
      }
    } finally {
      reader.releaseLock();
    }
    return filled === out.byteLength ? out : out.slice(0, filled);
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const bytes = await this.#readAll();
    return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
      ? (bytes.buffer as ArrayBuffer)
      : toArrayBuffer(bytes);
  }

  async bytes(): Promise<Uint8Array> {
    return this.#readAll();
  }

  async text(): Promise<string> {
    return decodeText(await this.#readAll());
  }

  async json<T>(): Promise<T> {
    return JSON.parse(await this.text()) as T;
  }

  /** A Blob typed with the object's content type, as workerd gives it. */
  async blob(): Promise<Workers.Blob> {
    const bytes = await this.#readAll();
    return new Blob([bytes], { type: this.httpMetadata?.contentType ?? "" }) as unknown as Workers.Blob;
  }
}

// --- encoding options ----------------------------------------------------------------------------

/** A key as workerd takes it: any value but a Symbol is converted to its string. */
function checkKey(key: unknown): string {
  if (typeof key === "string") return key;
  if (typeof key === "symbol") throw new TypeError("Cannot convert a Symbol value to a string");
  return String(key);
}

/** An etag of an onlyIf object is bare hex: workerd refuses a quoted one (Headers carry quotes). */
/** An etag that equals no object's etag, in the daemon's If-Match list syntax. */
const NO_ETAG = '""';

function bareEtag(name: string, value: unknown): string {
  const etag = String(value);
  if (etag.length >= 2 && etag.startsWith('"') && etag.endsWith('"')) {
    throw new TypeError(`onlyIf.${name}: an etag must not be wrapped in quotes (${etag})`);
  }
  // workerd takes the string as one strong etag, whatever it holds: one with quotes, commas or
  // spaces (W/"...", a list) equals no object's etag. The daemon reads the field as an If-Match
  // list (as a Headers onlyIf is sent), so send it one that equals nothing.
  if (/[",\s]/.test(etag)) return NO_ETAG;
  return etag;
}

function isHeaders(value: unknown): value is AnyHeaders {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Headers).get === "function" &&
    typeof (value as Headers).has === "function"
  );
}

function isBlob(value: unknown): value is globalThis.Blob {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Blob).stream === "function" &&
    typeof (value as Blob).arrayBuffer === "function" &&
    typeof (value as Blob).size === "number"
  );
}

function millis(name: string, value: unknown): bigint {
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== "number" || !Number.isFinite(ms)) throw new TypeError(`${name} must be a valid Date`);
  return BigInt(Math.trunc(ms));
}

function encodeHttpMetadata(http: R2HTTPMetadata | AnyHeaders | undefined): ObjectHttpMetadata {
  const message: ObjectHttpMetadata = {};
  if (http === undefined || http === null) return message;
  if (isHeaders(http)) {
    for (const [name, header] of HTTP_HEADERS) {
      const value = http.get(header);
      if (value !== null) message[name] = value;
    }
    const expires = http.get("expires");
    const ms = expires === null ? NaN : Date.parse(expires);
    if (!Number.isNaN(ms)) message.cacheExpiry = BigInt(ms);
    return message;
  }
  if (typeof http !== "object") throw new TypeError("httpMetadata must be an object or a Headers");
  for (const [name] of HTTP_HEADERS) {
    const value = http[name];
    if (value !== undefined && value !== null) message[name] = String(value);
  }
  if (http.cacheExpiry !== undefined && http.cacheExpiry !== null) {
    message.cacheExpiry = millis("httpMetadata.cacheExpiry", http.cacheExpiry);
  }
  return message;
}

function encodeCustomMetadata(custom: Record<string, string> | undefined): Record<string, string> {
  if (custom === undefined || custom === null) return {};
  if (typeof custom !== "object") throw new TypeError("customMetadata must be an object of strings");
  const found: Record<string, string> = {};
  for (const [name, value] of Object.entries(custom)) found[name] = String(value);
  return found;
}

const SECOND = 1000n;

/**
 * The wire's millisecond bounds for onlyIf. With `secondsGranularity` (always, for Headers)
 * workerd compares whole seconds: uploaded_s > after_s, i.e. uploaded >= after_s + 1 s, and
 * uploaded_s < before_s, i.e. uploaded < before_s.
 */
function encodeConditional(onlyIf: R2Conditional | AnyHeaders | undefined): ObjectConditional | undefined {
  if (onlyIf === undefined || onlyIf === null) return undefined;
  const message: ObjectConditional = {};
  let after: bigint | undefined;
  let before: bigint | undefined;
  let seconds: boolean;
  if (isHeaders(onlyIf)) {
    const date = (header: string): bigint | undefined => {
      const value = onlyIf.get(header);
      if (value === null) return undefined;
      const ms = Date.parse(value);
      if (Number.isNaN(ms)) throw new TypeError(`onlyIf: the ${header} header is not an HTTP date: ${value}`);
      return BigInt(ms);
    };
    message.etagMatches = onlyIf.get("if-match") ?? undefined;
    message.etagDoesNotMatch = onlyIf.get("if-none-match") ?? undefined;
    after = date("if-modified-since");
    before = date("if-unmodified-since");
    seconds = true;
  } else {
    if (typeof onlyIf !== "object") throw new TypeError("onlyIf must be an object or a Headers");
    if (onlyIf.etagMatches !== undefined) message.etagMatches = bareEtag("etagMatches", onlyIf.etagMatches);
    if (onlyIf.etagDoesNotMatch !== undefined) {
      message.etagDoesNotMatch = bareEtag("etagDoesNotMatch", onlyIf.etagDoesNotMatch);
    }
    if (onlyIf.uploadedAfter !== undefined) after = millis("onlyIf.uploadedAfter", onlyIf.uploadedAfter);
    if (onlyIf.uploadedBefore !== undefined) before = millis("onlyIf.uploadedBefore", onlyIf.uploadedBefore);
    seconds = onlyIf.secondsGranularity === true;
  }
  const floor = (ms: bigint): bigint => ms - (((ms % SECOND) + SECOND) % SECOND);
  if (after !== undefined) message.uploadedAfter = seconds ? floor(after) + SECOND - 1n : after;
  if (before !== undefined) message.uploadedBefore = seconds ? floor(before) : before;
  return message;
}

function rangeNumber(name: string, value: unknown): bigint {
  if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`range ${name} must be a number`);
  if (value < 0) {
    const what = name === "offset" ? "Starting offset" : `The ${name}`;
    throw new RangeError(`Invalid range. ${what} (${value}) must be greater than or equal to 0.`);
  }
  const whole = BigInt(Math.trunc(value));
  // Else gRPC fails the call as an INTERNAL serialization error.
  if (whole > INT64_MAX) throw new RangeError(`Invalid range. The ${name} (${value}) is beyond 64 bits.`);
  return whole;
}

/** A `Range: bytes=...` header as an R2Range; like workerd, anything else reads the whole object. */
function rangeFromHeaders(headers: AnyHeaders): ObjectRangeRequest | undefined {
  const value = headers.get("range");
  if (value === null) return undefined;
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(value);
  if (match === null) return undefined;
  const [, first = "", last = ""] = match;
  if (first === "" && last === "") return undefined;
  if (first === "") return { suffix: BigInt(last) };
  if (last === "") return { offset: BigInt(first) };
  if (BigInt(last) < BigInt(first)) return undefined;
  return { offset: BigInt(first), length: BigInt(last) - BigInt(first) + 1n };
}

function encodeRange(range: R2Range | AnyHeaders | undefined): ObjectRangeRequest | undefined {
  if (range === undefined || range === null) return undefined;
  if (isHeaders(range)) return rangeFromHeaders(range);
  if (typeof range !== "object") throw new TypeError("range must be an object or a Headers");
  const { offset, length, suffix } = range as { offset?: number; length?: number; suffix?: number };
  if (offset === undefined && length === undefined && suffix === undefined) return undefined; // {}: the whole object
  const message: ObjectRangeRequest = {};
  if (suffix !== undefined) {
    if (offset !== undefined) throw new TypeError("Suffix is incompatible with offset.");
    if (length !== undefined) throw new TypeError("Suffix is incompatible with length.");
    message.suffix = rangeNumber("suffix", suffix);
    return message;
  }
  if (offset !== undefined) message.offset = rangeNumber("offset", offset);
  if (length !== undefined) message.length = rangeNumber("length", length);
  return message;
}

/** The one expected digest of a put (raw bytes), checked for size as workerd does. */
function encodeChecksums(options: R2PutOptions | undefined): { name: ChecksumName; digest: Uint8Array } | null {
  let found: { name: ChecksumName; digest: Uint8Array } | null = null;
  for (const name of CHECKSUM_NAMES) {
    const value = options?.[name];
    if (value === undefined || value === null) continue;
    if (found !== null) throw new TypeError("You cannot specify multiple hashing algorithms.");
    const { label, bytes } = CHECKSUMS[name];
    let digest: Uint8Array;
    if (typeof value === "string") {
      if (value.length !== bytes * 2) {
        throw new TypeError(`${label} is ${bytes * 2} hex characters, not ${value.length}`);
      }
      if (!/^[0-9a-f]*$/i.test(value)) throw new TypeError(`${label} must be hex characters`);
      digest = new Uint8Array(Buffer.from(value, "hex"));
    } else {
      const raw = bytesOf(value as ArrayBuffer | ArrayBufferView);
      if (raw === null) throw new TypeError(`${label} must be an ArrayBuffer, an ArrayBufferView or a hex string`);
      if (raw.byteLength !== bytes) throw new TypeError(`${label} is ${bytes} bytes, not ${raw.byteLength}`);
      digest = raw;
    }
    found = { name, digest };
  }
  return found;
}

// --- bodies --------------------------------------------------------------------------------------

/** Gather small chunks to MIN_CHUNK, pass big ones through in slices of at most CHUNK_BYTES. */
async function* rechunk(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array | null = null;
  let filled = 0;
  for await (const chunk of chunks) {
    let at = 0;
    while (at < chunk.byteLength) {
      const rest = chunk.byteLength - at;
      if (filled === 0 && rest >= MIN_CHUNK) {
        const size = Math.min(rest, CHUNK_BYTES);
        yield chunk.subarray(at, at + size);
        at += size;
        continue;
      }
      pending ??= new Uint8Array(MIN_CHUNK);
      const size = Math.min(rest, MIN_CHUNK - filled);
      pending.set(chunk.subarray(at, at + size), filled);
      filled += size;
      at += size;
      if (filled === MIN_CHUNK) {
        yield pending;
        pending = null;
        filled = 0;
      }
    }
  }
  if (pending !== null && filled > 0) yield pending.subarray(0, filled);
}

/** Refuse a value of the wrong kind before anything is sent (as workerd does). */
function checkValue(value: unknown, what: string): void {
  if (value === null || value === undefined || typeof value === "string") return;
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value) || isReadableStream(value) || isBlob(value)) return;
  throw new TypeError(
    `${what}: the value must be a ReadableStream, ArrayBuffer, ArrayBufferView, string, Blob or null`,
  );
}

/** A put value as chunks of at most CHUNK_BYTES, read from a stream or blob only as sent. */
async function* bodyChunks(value: R2PutValue | undefined, what: string): AsyncGenerator<Uint8Array> {
  if (value === null || value === undefined) return;
  if (typeof value === "string" || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    const bytes = bytesOf(value)!;
    for (let at = 0; at < bytes.byteLength; at += CHUNK_BYTES) yield bytes.subarray(at, at + CHUNK_BYTES);
    return;
  }
  const stream = isReadableStream(value) ? value : (value as globalThis.Blob).stream();
  yield* rechunk(streamChunks(stream as globalThis.ReadableStream<unknown>, what));
}

// --- the bindings --------------------------------------------------------------------------------

function unsupportedSsec(binding: string, ssecKey: unknown): void {
  if (ssecKey !== undefined && ssecKey !== null) {
    throw new InvalidArgument(
      `binding "${binding}": ssecKey (customer-supplied encryption keys) is not supported by bindingd; remove it`,
      { binding },
    );
  }
}

/** A multipart upload in progress (from `createMultipartUpload` or `resumeMultipartUpload`). */
export class R2MultipartUpload implements Workers.R2MultipartUpload {
  readonly key: string;
  readonly uploadId: string;
  readonly #transport: Transport;
  readonly #binding: string;

  constructor(transport: Transport, binding: string, key: string, uploadId: string) {
    this.#transport = transport;
    this.#binding = binding;
    this.key = key;
    this.uploadId = uploadId;
  }

  async uploadPart(
    partNumber: number,
    value: Exclude<R2PutValue, null>,
    options?: R2UploadPartOptions,
  ): Promise<R2UploadedPart> {
    if (typeof partNumber !== "number" || !Number.isInteger(partNumber)) {
      throw new TypeError("partNumber must be an integer");
    }
    if (partNumber < 1 || partNumber > 10000) {
      throw new TypeError(`Part number must be between 1 and 10000 (inclusive), not ${partNumber}`);
    }
    checkValue(value, "uploadPart");
    unsupportedSsec(this.#binding, options?.ssecKey);
    const header: ObjectsUploadPartRequest = {
      part: {
        $case: "header",
        header: { binding: this.#binding, key: this.key, uploadId: this.uploadId, partNumber },
      },
    };
    async function* requests(): AsyncGenerator<ObjectsUploadPartRequest> {
      yield header;
      for await (const chunk of bodyChunks(value, "uploadPart")) yield { part: { $case: "chunk", chunk } };
    }
    const response = await this.#transport.upload(ObjectsService.uploadPart, requests(), { headerAck: true });
    return { partNumber: response.partNumber, etag: response.etag };
  }

  async complete(uploadedParts: R2UploadedPart[]): Promise<R2Object> {
    if (!Array.isArray(uploadedParts)) throw new TypeError("complete() takes an array of uploaded parts");
    const binding = this.#binding;
    const parts = uploadedParts.map(({ partNumber, etag }) => ({
      partNumber:
        typeof partNumber === "number" ? toInt32("part number", partNumber, PART_LIMITS, binding) : partNumber,
      etag,
    }));
    const response = await this.#transport.unary(ObjectsService.completeMultipartUpload, {
      binding: this.#binding,
      key: this.key,
      uploadId: this.uploadId,
      parts,
    });
    if (response.object === undefined) throw new InternalError("the daemon completed an upload without its object");
    return new R2Object(response.object);
  }

  async abort(): Promise<void> {
    await this.#transport.unary(ObjectsService.abortMultipartUpload, {
      binding: this.#binding,
      key: this.key,
      uploadId: this.uploadId,
    });
  }
}

/** A Workers R2 bucket served by bindingd. */
export class R2Bucket implements Workers.R2Bucket {
  /** The binding's name in the daemon's config. */
  readonly binding: string;
  readonly #transport: Transport;

  constructor(transport: Transport, binding: string) {
    this.#transport = transport;
    this.binding = binding;
  }

  /** The object's metadata, or null; `range` is the whole object, as workerd reports it. */
  async head(key: string): Promise<R2Object | null> {
    const response = await this.#transport.unary(ObjectsService.head, { binding: this.binding, key: checkKey(key) });
    if (!response.found || response.object === undefined) return null;
    return new R2Object(response.object, { offset: 0, length: Number(response.object.size) });
  }

  get(
    key: string,
    options: R2GetOptions & { onlyIf: R2Conditional | AnyHeaders },
  ): Promise<R2ObjectBody | R2Object | null>;
  get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | null>;
  /** null if absent; the object without a body when onlyIf failed; else with its body. */
  async get(key: string, options?: R2GetOptions): Promise<R2ObjectBody | R2Object | null> {
    unsupportedSsec(this.binding, options?.ssecKey);
    const request = {
      binding: this.binding,
      key: checkKey(key),
      range: encodeRange(options?.range),
      onlyIf: encodeConditional(options?.onlyIf),
    };
    const responses = this.#transport.stream(ObjectsService.get, request);
    let first: IteratorResult<ObjectsGetResponse, void>;
    try {
      first = await responses.next();
    } catch (error) {
      await responses.return(undefined);
      throw error;
    }
    const part = first.done ? undefined : first.value.part;
    if (part?.$case !== "header") {
      await responses.return(undefined);
      throw new InternalError(`the daemon's answer to get "${key}" did not start with a header`);
    }
    const { found, object, conditionFailed } = part.header;
    if (!found || object === undefined) {
      await responses.return(undefined);
      return null;
    }
    if (conditionFailed) {
      await responses.return(undefined);
      return new R2Object(object, { offset: 0, length: Number(object.size) });
    }
    return new R2ObjectBody(object, responses);
  }

  put(
    key: string,
    value: R2PutValue,
    options?: R2PutOptions & { onlyIf: R2Conditional | AnyHeaders },
  ): Promise<R2Object | null>;
  put(key: string, value: R2PutValue, options?: R2PutOptions): Promise<R2Object>;
  /**
   * Store the value, streamed; null (nothing stored) when onlyIf is not met. A checksum is
   * verified by the daemon against the bytes received, and stored with the object.
   */
  async put(key: string, value: R2PutValue, options?: R2PutOptions): Promise<R2Object | null> {
    checkKey(key);
    checkValue(value, "put");
    unsupportedSsec(this.binding, options?.ssecKey);
    const expected = encodeChecksums(options);
    const checksums: Partial<Record<ChecksumName, Uint8Array>> = {};
    if (expected !== null) checksums[expected.name] = expected.digest;
    const header: ObjectsPutRequest = {
      part: {
        $case: "header",
        header: {
          binding: this.binding,
          key,
          httpMetadata: encodeHttpMetadata(options?.httpMetadata),
          customMetadata: encodeCustomMetadata(options?.customMetadata),
          onlyIf: encodeConditional(options?.onlyIf),
          checksums,
        },
      },
    };
    async function* requests(): AsyncGenerator<ObjectsPutRequest> {
      yield header;
      for await (const chunk of bodyChunks(value, "put")) {
        yield { part: { $case: "chunk", chunk } };
      }
    }
    const response = await this.#transport.upload(ObjectsService.put, requests(), { headerAck: true });
    if (!response.stored || response.object === undefined) return null;
    return new R2Object(response.object);
  }

  /** Delete one key or up to 1000; missing keys are not an error. */
  async delete(keys: string | string[]): Promise<void> {
    const names = Array.isArray(keys) ? keys.map(checkKey) : [checkKey(keys)];
    await this.#transport.unary(ObjectsService.delete, { binding: this.binding, keys: names });
  }

  async list(options?: R2ListOptions): Promise<R2Objects> {
    const limit = options?.limit;
    if (limit !== undefined && (typeof limit !== "number" || !Number.isFinite(limit))) {
      throw new TypeError("list limit must be a number");
    }
    const include = options?.include ?? [];
    for (const name of include) {
      if (name !== "httpMetadata" && name !== "customMetadata") {
        throw new RangeError(`list include takes "httpMetadata" and "customMetadata", not ${JSON.stringify(name)}`);
      }
    }
    const response = await this.#transport.unary(ObjectsService.list, {
      binding: this.binding,
      prefix: options?.prefix ?? "",
      delimiter: options?.delimiter ?? "",
      cursor: options?.cursor ?? "",
      startAfter: options?.startAfter ?? "",
      limit:
        limit === undefined ? undefined : toInt32("list limit", limit, "it must be between 1 and 1000", this.binding),
      includeHttpMetadata: include.includes("httpMetadata"),
      includeCustomMetadata: include.includes("customMetadata"),
    });
    const objects = response.objects.map((meta) => new R2Object(meta));
    const delimitedPrefixes = [...response.delimitedPrefixes];
    if (response.truncated) return { objects, delimitedPrefixes, truncated: true, cursor: response.cursor };
    // workerd's result has the cursor property even then, as undefined.
    return { objects, delimitedPrefixes, truncated: false, cursor: undefined } as R2Objects;
  }

  /** Start a multipart upload; `storageClass` is accepted and ignored (bindingd stores Standard). */
  async createMultipartUpload(key: string, options?: R2MultipartOptions): Promise<R2MultipartUpload> {
    checkKey(key);
    unsupportedSsec(this.binding, options?.ssecKey);
    const response = await this.#transport.unary(ObjectsService.createMultipartUpload, {
      binding: this.binding,
      key,
      httpMetadata: encodeHttpMetadata(options?.httpMetadata),
      customMetadata: encodeCustomMetadata(options?.customMetadata),
    });
    return new R2MultipartUpload(this.#transport, this.binding, key, response.uploadId);
  }

  resumeMultipartUpload(key: string, uploadId: string): R2MultipartUpload {
    if (typeof uploadId !== "string") throw new TypeError("uploadId must be a string");
    return new R2MultipartUpload(this.#transport, this.binding, checkKey(key), uploadId);
  }
}
