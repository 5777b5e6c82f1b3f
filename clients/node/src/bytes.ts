/** Turning the values Workers code passes (strings, buffers, views, web streams) into bytes. */
import { InvalidArgument } from "./errors.js";

const encoder = new TextEncoder();

/** The bytes of a string, ArrayBuffer or view, without copying a buffer or view. */
export function bytesOf(value: string | ArrayBuffer | ArrayBufferView): Uint8Array | null {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

export function isReadableStream(value: unknown): value is ReadableStream<unknown> {
  return typeof value === "object" && value !== null && typeof (value as ReadableStream).getReader === "function";
}

/**
 * The chunks of a web stream as bytes; a chunk that is not bytes is a TypeError, as in workerd.
 * With `strings`, string chunks count as their UTF-8 (workerd's KV put takes them).
 */
export async function* streamChunks(
  stream: ReadableStream<unknown>,
  what: string,
  { strings = false }: { strings?: boolean } = {},
): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      const bytesLike =
        value instanceof ArrayBuffer || ArrayBuffer.isView(value) || (strings && typeof value === "string");
      const chunk = bytesLike ? bytesOf(value as string | ArrayBuffer | ArrayBufferView) : null;
      if (chunk === null) throw new TypeError(`${what}: a ReadableStream must yield ArrayBuffer or ArrayBufferView chunks`);
      if (chunk.byteLength > 0) yield chunk;
    }
  } finally {
    reader.releaseLock();
  }
}

/** All of a stream's bytes in one buffer (for values that are small by their limits). */
export async function readAll(
  stream: ReadableStream<unknown>,
  what: string,
  options: { strings?: boolean } = {},
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of streamChunks(stream, what, options)) {
    chunks.push(chunk);
    size += chunk.byteLength;
  }
  return concat(chunks, size);
}

export function concat(chunks: Uint8Array[], size?: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const total = size ?? chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** A fresh ArrayBuffer holding exactly these bytes (a Buffer may be a view into a shared pool). */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(out).set(bytes);
  return out;
}

const decoder = new TextDecoder("utf-8");
const bomKeepingDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * Invalid UTF-8 becomes U+FFFD, as the Workers runtime's TextDecoder does. A leading byte-order
 * mark is dropped, unless `keepBom` (workerd's KV keeps it as part of the text).
 */
export function decodeText(bytes: Uint8Array, keepBom = false): string {
  return (keepBom ? bomKeepingDecoder : decoder).decode(bytes);
}

/** A one-chunk web stream of these bytes. */
export function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (bytes.byteLength > 0) controller.enqueue(bytes);
      controller.close();
    },
  });
}

export const INT64_MAX = 2n ** 63n - 1n;
export const INT32_MAX = 2 ** 31 - 1;

/** A count as the int32 the wire carries, refused (InvalidArgument) beyond it; the daemon checks the rest. */
export function toInt32(name: string, value: number, limits: string, binding: string): number {
  const whole = Math.trunc(value);
  if (Math.abs(whole) > INT32_MAX) throw new InvalidArgument(`${name} is ${value}; ${limits}`, { binding });
  return whole;
}
