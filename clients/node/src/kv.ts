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
import { bytesOf, decodeText, isReadableStream, readAll, streamOf, toArrayBuffer, toInt64 } from "./bytes.js";
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

function parseType(typeOrOptions: TypeArgument, bulk: boolean): { type: KVValueType; cacheTtl?: number } {
  let type: unknown = "text";
  let cacheTtl: number | undefined;
  if (typeof typeOrOptions === "string") {
    type = typeOrOptions;
  } else if (typeOrOptions !== undefined && typeOrOptions !== null) {
    if (typeof typeOrOptions !== "object") {
      throw new TypeError("the second argument to get() must be a type string or an options object");
    }
    type = typeOrOptions.type ?? "text";
    cacheTtl = typeOrOptions.cacheTtl;
  }
  if (type !== "text" && type !== "json" && type !== "arrayBuffer" && type !== "stream") {
    throw new TypeError(
      `Unknown response type. Possible types are "text", "arrayBuffer", "json", and "stream".`,
    );
  }
  if (bulk && type !== "text" && type !== "json") {
    throw new TypeError(`"${type}" is not a valid type. Use "json" or "text"`);
  }
  return { type, cacheTtl };
}

function decodeValue(entry: KVEntry, type: KVValueType): unknown {
  switch (type) {
    case "text":
      return decodeText(entry.value);
    case "json":
      return JSON.parse(decodeText(entry.value));
    case "arrayBuffer":
      return toArrayBuffer(entry.value);
    case "stream":
      return streamOf(new Uint8Array(toArrayBuffer(entry.value))) as unknown as ReadableStream;
  }
}

function decodeMetadata(json: string | undefined): unknown {
  return json === undefined ? null : JSON.parse(json);
}

function encodeMetadata(metadata: unknown): string | undefined {
  if (metadata === undefined || metadata === null) return undefined;
  const json = JSON.stringify(metadata);
  if (json === undefined) throw new TypeError("KV metadata must be JSON-serializable");
  return json;
}

function checkKey(key: unknown): string {
  if (typeof key !== "string") throw new TypeError(`a KV key must be a string, not ${typeof key}`);
  return key;
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
    const bulk = Array.isArray(key);
    const { type, cacheTtl } = parseType(typeOrOptions, bulk);
    const ttl = toInt64("cacheTtl", cacheTtl);
    const shape = (entry: KVEntry | undefined): unknown => {
      const found = entry !== undefined && entry.found;
      const value = found ? decodeValue(entry, type) : null;
      if (!withMetadata) return value;
      return { value, metadata: found ? decodeMetadata(entry.metadataJson) : null, cacheStatus: null };
    };
    if (!bulk) {
      const response = await this.#transport.unary(KVService.get, {
        binding: this.binding,
        key: checkKey(key),
        cacheTtl: ttl,
      });
      return shape(response.entry);
    }
    const keys = key.map(checkKey);
    const response = await this.#transport.unary(KVService.getBulk, { binding: this.binding, keys, cacheTtl: ttl });
    const byKey = new Map(response.entries.map((entry) => [entry.key, entry]));
    return new Map(keys.map((k) => [k, shape(byKey.get(k))]));
  }

  async put(
    key: Key,
    value: string | ArrayBuffer | ArrayBufferView | ReadableStream | globalThis.ReadableStream,
    options?: KVNamespacePutOptions,
  ): Promise<void> {
    let bytes = bytesOf(value as string | ArrayBuffer | ArrayBufferView);
    if (bytes === null && isReadableStream(value)) bytes = await readAll(value as globalThis.ReadableStream, "KV put");
    if (bytes === null) {
      throw new TypeError("a KV value must be a string, ArrayBuffer, ArrayBufferView or ReadableStream");
    }
    await this.#transport.unary(KVService.put, {
      binding: this.binding,
      key: checkKey(key),
      value: bytes,
      expiration: toInt64("expiration", options?.expiration),
      expirationTtl: toInt64("expirationTtl", options?.expirationTtl),
      metadataJson: encodeMetadata(options?.metadata),
    });
  }

  async delete(key: Key): Promise<void> {
    await this.#transport.unary(KVService.delete, { binding: this.binding, key: checkKey(key) });
  }

  async list<Metadata = unknown>(options?: KVNamespaceListOptions): Promise<KVNamespaceListResult<Metadata, Key>> {
    const limit = options?.limit;
    if (limit !== undefined && (typeof limit !== "number" || !Number.isFinite(limit))) {
      throw new TypeError("list limit must be a number");
    }
    const response: KVListResponse = await this.#transport.unary(KVService.list, {
      binding: this.binding,
      prefix: options?.prefix ?? "",
      limit: limit === undefined ? undefined : Math.trunc(limit),
      cursor: options?.cursor ?? "",
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
