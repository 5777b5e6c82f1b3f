/** Turning the values Workers code passes (strings, buffers, views, web streams) into bytes. */

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

/** Seconds (or another count) as the int64 the wire carries; undefined stays unset. */
export function toInt64(name: string, value: unknown): bigint | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "bigint") return value;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TypeError(`${name} must be a finite number, not ${String(value)}`);
  }
  return BigInt(Math.trunc(value));
}
