/**
 * KV bindings: the Workers `KVNamespace`, so code written for Cloudflare runs unchanged.
 *
 * The daemon stores raw bytes; decoding to text / json / arrayBuffer / stream happens here, as
 * the Workers runtime does it. The overloads follow `@cloudflare/workers-types`, which a type
 * test checks by assigning this class to that interface.
 */
import {
  type KVEntry,
  KVService,
  type KVListResponse,
} from "./gen/bindingd/v1/kv.js";
import { bytesOf, decodeText, isReadableStream, readAll, streamOf, toArrayBuffer } from "./bytes.js";
import { InvalidArgument } from "./errors.js";
import type { Transport } from "./transport.js";
import type * as Workers from "@cloudflare/workers-types";

export type KVValueType = "text" | "json" | "arrayBuffer" | "stream";
export type KVNamespaceGetOptions<Type> = Workers.KVNamespaceGetOptions<Type>;
export type KVNamespacePutOptions = Workers.KVNamespacePutOptions;
export type KVNamespaceListOptions = Workers.KVNamespaceListOptions;
export type KVNamespaceListKey<Metadata, Key extends string = string> = Workers.KVNamespaceListKey<Metadata, Key>;
export type KVNamespaceListResult<Metadata, Key extends string = string> = Workers.KVNamespaceListResult<Metadata, Key>;
export type KVNamespaceGetWithMetadataResult<Value, Metadata> = Workers.KVNamespaceGetWithMetadataResult<
  Value,
  Metadata
>;
/** A web stream as Workers code sees it; at run time it is Node's own ReadableStream. */
type ReadableStream = Workers.ReadableStream;

type TypeArgument = KVValueType | Partial<KVNamespaceGetOptions<KVValueType | undefined>> | undefined | null;

const VALUE_TYPES: ReadonlySet<string> = new Set(["text", "json", "arrayBuffer", "stream"]);

/**
 * The requested type and cacheTtl. The type is checked by the caller: a single get refuses an
 * unknown type with a TypeError (before the call, also for a missing key, where workerd answers
 * null), a bulk get as the KV service does in Workers (an Error).
 */
function parseType(typeOrOptions: TypeArgument): { type: string; cacheTtl?: number } {
  if (typeOrOptions === undefined || typeOrOptions === null) return { type: "text" };
  if (typeof typeOrOptions === "string") return { type: typeOrOptions };
  if (typeof typeOrOptions !== "object") return { type: String(typeOrOptions) };
  const cacheTtl = typeOrOptions.cacheTtl === undefined ? undefined : workersInt(typeOrOptions.cacheTtl);
  return { type: typeOrOptions.type === undefined ? "text" : String(typeOrOptions.type), cacheTtl };
}

function checkValueType(type: string): KVValueType {
  if (!VALUE_TYPES.has(type)) {
    throw new TypeError(
      `Unknown response type. Possible types are "text", "arrayBuffer", "json", and "stream".`,
    );
  }
  return type as KVValueType;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * A number option (expiration, expirationTtl, cacheTtl, limit) read as workerd reads it, a 32-bit
 * integer: numeric strings and booleans convert, NaN and infinities become 0 (which the service
 * then refuses), fractions truncate, and a value outside the int32 range is a TypeError.
 */
function workersInt(value: unknown): number {
  const number = Number(value); // a Symbol is a TypeError here, as in workerd
  if (!Number.isFinite(number)) return 0;
  const integer = Math.trunc(number);
  if (integer < INT32_MIN || integer > INT32_MAX) {
    throw new TypeError(`Value out of range. Must be between ${INT32_MIN} and ${INT32_MAX} (inclusive).`);
  }
  return integer;
}

/** An optional int option: undefined stays unset; anything else (null too) converts. */
function optionalInt(value: unknown): bigint | undefined {
  return value === undefined ? undefined : BigInt(workersInt(value));
}

/**
 * A value as text the way workerd's KV decodes it: invalid UTF-8 becomes U+FFFD and a leading
 * byte-order mark stays part of the text (so such a value is not valid JSON either).
 */
function valueText(bytes: Uint8Array): string {
  return decodeText(bytes, true);
}

function decodeValue(entry: KVEntry, type: KVValueType): unknown {
  switch (type) {
    case "text":
      return valueText(entry.value);
    case "json":
      return JSON.parse(valueText(entry.value));
    case "arrayBuffer":
      return toArrayBuffer(entry.value);
    case "stream":
      return streamOf(new Uint8Array(toArrayBuffer(entry.value))) as unknown as ReadableStream;
  }
}

function decodeMetadata(json: string | undefined): unknown {
  return json === undefined ? null : JSON.parse(json);
}

/** A key as workerd takes it: any value converts to a string (a Symbol is a TypeError). */
function keyString(key: unknown): string {
  return `${key as string}`;
}

/**
 * A key of a single-key call. workerd refuses an empty key and "." / ".." itself, with a
 * TypeError, before asking the service (a bulk get leaves those to the service: an Error).
 */
function checkKey(key: unknown): string {
  const name = keyString(key);
  if (name === "") throw new TypeError("Key name cannot be empty.");
  if (name === "." || name === "..") throw new TypeError(`"${name}" is not allowed as a key name.`);
  return name;
}

/** Primitives convert to their string, as workerd's put does; other objects are a TypeError. */
function valueBytes(value: unknown): Uint8Array | null {
  const primitive = value === null || value === undefined || typeof value === "number";
  if (primitive || typeof value === "boolean" || typeof value === "bigint") return bytesOf(String(value));
  if (typeof value === "symbol") throw new TypeError("Cannot convert a Symbol value to a string");
  return bytesOf(value as string | ArrayBuffer | ArrayBufferView);
}

/** A Workers KV namespace served by bindingd. */
export class KVNamespace<Key extends string = string> implements Workers.KVNamespace<Key> {
  /** The binding's name in the daemon's config. */
  readonly binding: string;
  readonly #transport: Transport;

  constructor(transport: Transport, binding: string) {
    this.#transport = transport;
    this.binding = binding;
  }

  get(key: Key, options?: Partial<KVNamespaceGetOptions<undefined>>): Promise<string | null>;
  get(key: Key, type: "text"): Promise<string | null>;
  get<ExpectedValue = unknown>(key: Key, type: "json"): Promise<ExpectedValue | null>;
  get(key: Key, type: "arrayBuffer"): Promise<ArrayBuffer | null>;
  get(key: Key, type: "stream"): Promise<ReadableStream | null>;
  get(key: Key, options?: KVNamespaceGetOptions<"text">): Promise<string | null>;
  get<ExpectedValue = unknown>(key: Key, options?: KVNamespaceGetOptions<"json">): Promise<ExpectedValue | null>;
  get(key: Key, options?: KVNamespaceGetOptions<"arrayBuffer">): Promise<ArrayBuffer | null>;
  get(key: Key, options?: KVNamespaceGetOptions<"stream">): Promise<ReadableStream | null>;
  get(key: Array<Key>, type: "text"): Promise<Map<string, string | null>>;
  get<ExpectedValue = unknown>(key: Array<Key>, type: "json"): Promise<Map<string, ExpectedValue | null>>;
  get(key: Array<Key>, options?: Partial<KVNamespaceGetOptions<undefined>>): Promise<Map<string, string | null>>;
  get(key: Array<Key>, options?: KVNamespaceGetOptions<"text">): Promise<Map<string, string | null>>;
  get<ExpectedValue = unknown>(
    key: Array<Key>,
    options?: KVNamespaceGetOptions<"json">,
  ): Promise<Map<string, ExpectedValue | null>>;
  async get(key: Key | Array<Key>, typeOrOptions?: TypeArgument): Promise<unknown> {
    return this.#get(key, typeOrOptions, false);
  }

  getWithMetadata<Metadata = unknown>(
    key: Key,
    options?: Partial<KVNamespaceGetOptions<undefined>>,
  ): Promise<KVNamespaceGetWithMetadataResult<string, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Key,
    type: "text",
  ): Promise<KVNamespaceGetWithMetadataResult<string, Metadata>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(
    key: Key,
    type: "json",
  ): Promise<KVNamespaceGetWithMetadataResult<ExpectedValue, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Key,
    type: "arrayBuffer",
  ): Promise<KVNamespaceGetWithMetadataResult<ArrayBuffer, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Key,
    type: "stream",
  ): Promise<KVNamespaceGetWithMetadataResult<ReadableStream, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Key,
    options: KVNamespaceGetOptions<"text">,
  ): Promise<KVNamespaceGetWithMetadataResult<string, Metadata>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(
    key: Key,
    options: KVNamespaceGetOptions<"json">,
  ): Promise<KVNamespaceGetWithMetadataResult<ExpectedValue, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Key,
    options: KVNamespaceGetOptions<"arrayBuffer">,
  ): Promise<KVNamespaceGetWithMetadataResult<ArrayBuffer, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Key,
    options: KVNamespaceGetOptions<"stream">,
  ): Promise<KVNamespaceGetWithMetadataResult<ReadableStream, Metadata>>;
  getWithMetadata<Metadata = unknown>(
    key: Array<Key>,
    type: "text",
  ): Promise<Map<string, KVNamespaceGetWithMetadataResult<string, Metadata>>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(
    key: Array<Key>,
    type: "json",
  ): Promise<Map<string, KVNamespaceGetWithMetadataResult<ExpectedValue, Metadata>>>;
  getWithMetadata<Metadata = unknown>(
    key: Array<Key>,
    options?: Partial<KVNamespaceGetOptions<undefined>>,
  ): Promise<Map<string, KVNamespaceGetWithMetadataResult<string, Metadata>>>;
  getWithMetadata<Metadata = unknown>(
    key: Array<Key>,
    options?: KVNamespaceGetOptions<"text">,
  ): Promise<Map<string, KVNamespaceGetWithMetadataResult<string, Metadata>>>;
  getWithMetadata<ExpectedValue = unknown, Metadata = unknown>(
    key: Array<Key>,
    options?: KVNamespaceGetOptions<"json">,
  ): Promise<Map<string, KVNamespaceGetWithMetadataResult<ExpectedValue, Metadata>>>;
  async getWithMetadata(key: Key | Array<Key>, typeOrOptions?: TypeArgument): Promise<unknown> {
    return this.#get(key, typeOrOptions, true);
  }

  async #get(key: Key | Array<Key>, typeOrOptions: TypeArgument, withMetadata: boolean): Promise<unknown> {
    const { type, cacheTtl } = parseType(typeOrOptions);
    const ttl = cacheTtl === undefined ? undefined : BigInt(cacheTtl);
    if (!Array.isArray(key)) {
      const valueType = checkValueType(type);
      const response = await this.#transport.unary(KVService.get, {
        binding: this.binding,
        key: checkKey(key),
        cacheTtl: ttl,
      });
      const entry = response.entry;
      const found = entry !== undefined && entry.found;
      const value = found ? decodeValue(entry, valueType) : null;
      if (!withMetadata) return value;
      return { value, metadata: found ? decodeMetadata(entry.metadataJson) : null, cacheStatus: null };
    }
    // Checked here as the KV service checks a bulk get in Workers (an Error, not a TypeError).
    if (type !== "text" && type !== "json") {
      throw new InvalidArgument(`"${type}" is not a valid type. Use "json" or "text"`, { binding: this.binding });
    }
    if (key.length === 0) {
      throw new InvalidArgument("You must request a minimum of 1 key", { binding: this.binding });
    }
    const keys = key.map(keyString);
    const response = await this.#transport.unary(KVService.getBulk, { binding: this.binding, keys, cacheTtl: ttl });
    const byKey = new Map(response.entries.map((entry) => [entry.key, entry]));
    const values = new Map<string, unknown>();
    for (const k of keys) {
      const entry = byKey.get(k);
      if (entry === undefined || !entry.found) {
        // A missing key is null, also with metadata (not { value: null, metadata: null }).
        values.set(k, null);
        continue;
      }
      let value: unknown;
      try {
        value = decodeValue(entry, type);
      } catch {
        throw new InvalidArgument(`At least one of the requested keys corresponds to a non-${type} value`, {
          binding: this.binding,
        });
      }
      values.set(k, withMetadata ? { value, metadata: decodeMetadata(entry.metadataJson) } : value);
    }
    return values;
  }

  async put(
    key: Key,
    value: string | ArrayBuffer | ArrayBufferView | ReadableStream | globalThis.ReadableStream,
    options?: KVNamespacePutOptions | null,
  ): Promise<void> {
    if (options !== undefined && options !== null && typeof options !== "object") {
      throw new TypeError("Failed to execute 'put' on 'KvNamespace': parameter 3 is not of type 'PutOptions'.");
    }
    const name = checkKey(key);
    let bytes = valueBytes(value);
    if (bytes === null && isReadableStream(value)) {
      // workerd takes string chunks in a value stream too, as UTF-8.
      bytes = await readAll(value as globalThis.ReadableStream<unknown>, "KV put", { strings: true });
    }
    if (bytes === null) {
      throw new TypeError("KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and ReadableStreams as values.");
    }
    await this.#transport.unary(KVService.put, {
      binding: this.binding,
      key: name,
      value: bytes,
      expiration: optionalInt(options?.expiration),
      expirationTtl: optionalInt(options?.expirationTtl),
      metadataJson: this.#encodeMetadata(options?.metadata),
    });
  }

  /** JSON text of put metadata; metadata JSON cannot express is refused as the KV service does. */
  #encodeMetadata(metadata: unknown): string | undefined {
    if (metadata === undefined || metadata === null) return undefined;
    const json = JSON.stringify(metadata);
    if (json === undefined) {
      throw new InvalidArgument(`KV metadata must be JSON-serializable, not ${typeof metadata}`, {
        binding: this.binding,
      });
    }
    return json;
  }

  async delete(key: Key): Promise<void> {
    await this.#transport.unary(KVService.delete, { binding: this.binding, key: checkKey(key) });
  }

  async list<Metadata = unknown>(
    options?: KVNamespaceListOptions | null,
  ): Promise<KVNamespaceListResult<Metadata, Key>> {
    // As in workerd: a limit of 0 or less (or NaN) means none; prefix and cursor convert to strings.
    const limit = options?.limit === undefined || options.limit === null ? 0 : workersInt(options.limit);
    const prefix = options?.prefix ?? null;
    const cursor = options?.cursor ?? null;
    const response: KVListResponse = await this.#transport.unary(KVService.list, {
      binding: this.binding,
      prefix: prefix === null ? "" : keyString(prefix),
      limit: limit > 0 ? limit : undefined,
      cursor: cursor === null ? "" : keyString(cursor),
    });
    const keys = response.keys.map((k) => {
      const item: KVNamespaceListKey<Metadata, Key> = { name: k.name as Key };
      if (k.expiration !== undefined) item.expiration = Number(k.expiration);
      if (k.metadataJson !== undefined) item.metadata = JSON.parse(k.metadataJson) as Metadata;
      return item;
    });
    if (response.listComplete) return { list_complete: true, keys, cacheStatus: null };
    return { list_complete: false, keys, cursor: response.cursor, cacheStatus: null };
  }
}
