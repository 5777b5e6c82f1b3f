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

/** The chunks of a web stream as bytes; a chunk that is not bytes is a TypeError, as in workerd. */
export async function* streamChunks(stream: ReadableStream<unknown>, what: string): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      const chunk =
        value instanceof ArrayBuffer || ArrayBuffer.isView(value) ? bytesOf(value as ArrayBuffer | ArrayBufferView) : null;
      if (chunk === null) throw new TypeError(`${what}: a ReadableStream must yield ArrayBuffer or ArrayBufferView chunks`);
      if (chunk.byteLength > 0) yield chunk;
    }
  } finally {
    reader.releaseLock();
  }
}

/** All of a stream's bytes in one buffer (for values that are small by their limits). */
export async function readAll(stream: ReadableStream<unknown>, what: string): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of streamChunks(stream, what)) {
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

/** Invalid UTF-8 becomes U+FFFD, as the Workers runtime's TextDecoder does. */
export function decodeText(bytes: Uint8Array): string {
  return new TextDecoder("utf-8").decode(bytes);
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

/**
 * Seconds (or another count) as the int64 the wire carries; undefined stays unset. Beyond 64
 * bits it is the caller's mistake (else gRPC would fail the call as an INTERNAL serialization
 * failure); in range, the daemon checks the limits of the option.
 */
export function toInt64(name: string, value: unknown, binding: string | null = null): bigint | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "bigint" && (typeof value !== "number" || !Number.isFinite(value))) {
    throw new TypeError(`${name} must be a finite number, not ${String(value)}`);
  }
  const whole = typeof value === "bigint" ? value : BigInt(Math.trunc(value));
  if (whole > INT64_MAX || whole < -INT64_MAX - 1n) {
    throw new InvalidArgument(`${name} is ${String(value)}, beyond the 64-bit integers bindingd accepts`, { binding });
  }
  return whole;
}

/** A count as the int32 the wire carries, refused (InvalidArgument) beyond it; the daemon checks the rest. */
export function toInt32(name: string, value: number, limits: string, binding: string): number {
  const whole = Math.trunc(value);
  if (Math.abs(whole) > INT32_MAX) throw new InvalidArgument(`${name} is ${value}; ${limits}`, { binding });
  return whole;
}
