/**
 * Queue bindings: the Workers `Queue` producer (send, sendBatch) plus a pull consumer for local
 * workers, whose batches and messages are shaped like the ones a Worker's `queue()` handler gets.
 *
 * Bodies are encoded here as workerd encodes them: "json" (the default) with JSON.stringify,
 * "text" as UTF-8, "bytes" from an ArrayBufferView; a consumer gets them back decoded (bytes as
 * an ArrayBuffer). "v8" needs a V8 serializer on both ends, so the daemon refuses it
 * (InvalidArgument saying so). Limits (128 KB a message, 100 messages and 256 KB a batch,
 * delays up to 12 h) are the daemon's: a batch that breaks one sends nothing.
 *
 * `metrics()` asks the daemon for the backlog as the backend tells it (RabbitMQ: the count of
 * messages ready for delivery only, no bytes or age); `send`/`sendBatch` answer zero metrics, as
 * Miniflare does (a second round trip per send would cost more than it tells).
 *
 * Known difference: workerd's default content type is "v8" (structured clone: a Date or Map
 * arrives as one); here it is "json", so such a body arrives as JSON.stringify left it.
 */
import {
  type QueueBatch,
  type QueueConsumeRequest,
  type QueueMessage,
  type QueueMessageSend,
  type QueueRetry,
  QueueService,
} from "./gen/bindingd/v1/queue.js";
import { decodeText, toArrayBuffer } from "./bytes.js";
import { InvalidArgument } from "./errors.js";
import type { Transport } from "./transport.js";
import type * as Workers from "@cloudflare/workers-types";

export type QueueContentType = Workers.QueueContentType;
export type QueueSendOptions = Workers.QueueSendOptions;
export type QueueSendBatchOptions = Workers.QueueSendBatchOptions;
export type QueueSendResponse = Workers.QueueSendResponse;
export type QueueSendBatchResponse = Workers.QueueSendBatchResponse;
export type QueueMetrics = Workers.QueueMetrics;
export type QueueRetryOptions = Workers.QueueRetryOptions;
export type MessageSendRequest<Body = unknown> = Workers.MessageSendRequest<Body>;
export type MessageBatchMetadata = Workers.MessageBatchMetadata;

/** How a consumer reads: see `Queue.consume`. */
export interface QueueConsumeOptions {
  /** Messages per batch, 1..100 (default 10). */
  batchSize?: number;
  /** How long a batch waits to fill once it has a message, 0..60000 ms (default 1000). */
  maxWaitMs?: number;
  /** How long a delivered message stays leased to this consumer, 1000..43200000 ms (default 30000). */
  visibilityTimeoutMs?: number;
  /** Ends the consumer: the iteration stops, no further batch is leased. */
  signal?: AbortSignal;
}

const encoder = new TextEncoder();
const INT32_MAX = 2 ** 31 - 1;
const MAX_DELAY_S = 43_200;

function zeroMetrics(): { backlogCount: number; backlogBytes: number } {
  return { backlogCount: 0, backlogBytes: 0 };
}

/** The body's bytes for its content type, with workerd's errors for a body that does not fit. */
function encodeBody(body: unknown, contentType: unknown): { body: Uint8Array; contentType: string } {
  if (body === undefined) throw new TypeError("Message body cannot be undefined");
  switch (contentType) {
    case undefined:
    case "json": {
      const json = JSON.stringify(body);
      if (json === undefined) throw new TypeError(`a "json" queue message must be JSON-serializable, not ${typeof body}`);
      return { body: encoder.encode(json), contentType: "json" };
    }
    case "text":
      if (typeof body !== "string") {
        throw new TypeError(`Content Type "text" requires a value of type string, but received: ${typeof body}`);
      }
      return { body: encoder.encode(body), contentType: "text" };
    case "bytes":
      if (!ArrayBuffer.isView(body)) {
        throw new TypeError(
          `Content Type "bytes" requires a value of type ArrayBufferView, but received: ${typeof body}`,
        );
      }
      return { body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength), contentType: "bytes" };
    case "v8":
      // The daemon answers InvalidArgument: "v8" needs a V8 isolate to decode.
      return { body: new Uint8Array(0), contentType: "v8" };
    default:
      throw new TypeError(`Unsupported queue message content type: ${String(contentType)}`);
  }
}

function decodeBody(body: Uint8Array, contentType: string): unknown {
  if (contentType === "json") return JSON.parse(decodeText(body));
  if (contentType === "text") return decodeText(body);
  return toArrayBuffer(body); // "bytes": an ArrayBuffer, as a Worker's consumer gets it
}

/** Seconds as the int32 the wire carries; the daemon checks the range it allows. */
function delayOf(value: unknown, binding: string, what = "delaySeconds"): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TypeError(`${what} must be a number of seconds, not ${String(value)}`);
  }
  const seconds = Math.trunc(value);
  if (Math.abs(seconds) > INT32_MAX) {
    throw new InvalidArgument(`${what} is ${seconds}; it must be between 0 and ${MAX_DELAY_S} (12 hours)`, {
      binding,
    });
  }
  return seconds;
}

function sendItem(binding: string, body: unknown, contentType: unknown, delaySeconds: unknown): QueueMessageSend {
  return { ...encodeBody(body, contentType), delaySeconds: delayOf(delaySeconds, binding) };
}

/** Optional consumer settings: a number in range or unset (the daemon checks the range). */
function optionalNumber(name: string, value: unknown, scale = 1): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`${name} must be a number`);
  return value / scale;
}

/** A batch size as the int32 the wire carries; the daemon checks the range it allows. */
function batchSizeOf(value: unknown, binding: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`batchSize must be a whole number of messages, not ${String(value)}`);
  }
  if (Math.abs(value) > INT32_MAX) {
    throw new InvalidArgument(`batch_size is ${value}; it must be between 1 and 100`, { binding });
  }
  return value;
}

// --- consuming -------------------------------------------------------------------------------

/** The Ack calls of one batch, so the consumer can wait for them before asking for more. */
class Settlements {
  #pending: Promise<void>[] = [];

  constructor(
    private readonly transport: Transport,
    readonly binding: string,
  ) {}

  send(acks: string[], retries: QueueRetry[]): Promise<void> {
    const call = this.transport
      .unary(QueueService.ack, { binding: this.binding, acks, retries })
      .then(() => undefined);
    // Workers' ack()/retry() return nothing to await, so worker code often drops the promise:
    // never let that become an unhandled rejection; `flush` reports the failure instead.
    call.catch(() => undefined);
    this.#pending.push(call);
    return call;
  }

  /** Wait for every Ack call so far; the first failure is thrown. */
  async flush(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    for (const outcome of await Promise.allSettled(pending)) {
      if (outcome.status === "rejected") throw outcome.reason;
    }
  }
}

/** Marks a message settled (first ack/retry wins, as in Workers) and answers its lease id. */
let claimLease: (message: Message) => string | null;

/**
 * One delivered message, like the ones a Worker's `queue()` handler gets. `ack()` and `retry()`
 * reach the daemon at once; the first of them wins, later calls do nothing. Neither acked nor
 * retried within the visibility timeout, the message is delivered again (attempts + 1).
 */
export class Message<Body = unknown> implements Workers.Message<Body> {
  static {
    claimLease = (message) => {
      if (message.#settled) return null;
      message.#settled = true;
      return message.#leaseId;
    };
  }

  /** 32 hex digits, the same on every delivery. */
  readonly id: string;
  /** When the message was sent. */
  readonly timestamp: Date;
  readonly body: Body;
  /** 1 on the first delivery, then one more per retry or expired lease. */
  readonly attempts: number;
  /** "json", "text" or "bytes" (a bindingd addition). */
  readonly contentType: string;
  readonly #leaseId: string;
  readonly #settlements: Settlements;
  #settled = false;

  constructor(settlements: Settlements, message: QueueMessage) {
    this.#settlements = settlements;
    this.#leaseId = message.leaseId;
    this.id = message.id;
    this.timestamp = new Date(Number(message.timestampMs));
    this.body = decodeBody(message.body, message.contentType) as Body;
    this.attempts = message.attempts;
    this.contentType = message.contentType;
  }

  /** Done with it: removed for good. */
  ack(): Promise<void> {
    const lease = claimLease(this);
    return lease === null ? Promise.resolve() : this.#settlements.send([lease], []);
  }

  /** Deliver it again (after `delaySeconds`), or dead-letter it after its last retry. */
  retry(options?: QueueRetryOptions): Promise<void> {
    const delaySeconds = delayOf(options?.delaySeconds, this.#settlements.binding);
    const lease = claimLease(this);
    return lease === null ? Promise.resolve() : this.#settlements.send([], [{ leaseId: lease, delaySeconds }]);
  }
}

/** A batch from `Queue.consume`, shaped like a Worker's `MessageBatch`. */
export class MessageBatch<Body = unknown> implements Workers.MessageBatch<Body> {
  readonly messages: readonly Message<Body>[];
  /** The binding's name. */
  readonly queue: string;
  /** Zero backlog counts: the daemon keeps none (Miniflare answers zeros too). */
  readonly metadata: MessageBatchMetadata = { metrics: zeroMetrics() };
  readonly #settlements: Settlements;

  constructor(settlements: Settlements, batch: QueueBatch) {
    this.#settlements = settlements;
    this.queue = settlements.binding;
    this.messages = batch.messages.map((message) => new Message<Body>(settlements, message));
  }

  /** Ack every message not yet acked or retried, in one call. */
  ackAll(): Promise<void> {
    const leases = this.#claimAll();
    return leases.length === 0 ? Promise.resolve() : this.#settlements.send(leases, []);
  }

  /** Retry every message not yet acked or retried, in one call. */
  retryAll(options?: QueueRetryOptions): Promise<void> {
    const delaySeconds = delayOf(options?.delaySeconds, this.queue);
    const retries = this.#claimAll().map((leaseId) => ({ leaseId, delaySeconds }));
    return retries.length === 0 ? Promise.resolve() : this.#settlements.send([], retries);
  }

  #claimAll(): string[] {
    return this.messages.map(claimLease).filter((lease): lease is string => lease !== null);
  }
}

// --- the binding -----------------------------------------------------------------------------

/** A Workers queue served by bindingd. */
export class Queue<Body = unknown> implements Workers.Queue<Body> {
  /** The binding's name in the daemon's config. */
  readonly binding: string;
  readonly #transport: Transport;

  constructor(transport: Transport, binding: string) {
    this.#transport = transport;
    this.binding = binding;
  }

  /** Send one message; answers once the backend stored it. */
  async send(message: Body, options?: QueueSendOptions): Promise<QueueSendResponse> {
    const item = sendItem(this.binding, message, options?.contentType, options?.delaySeconds);
    await this.#transport.unary(QueueService.send, { binding: this.binding, message: item });
    return { metadata: { metrics: zeroMetrics() } };
  }

  /** Up to 100 messages (256 KB): all of them, or none if one breaks a limit. */
  async sendBatch(
    messages: Iterable<MessageSendRequest<Body>>,
    options?: QueueSendBatchOptions,
  ): Promise<QueueSendBatchResponse> {
    if (messages === null || typeof (messages as Partial<Iterable<unknown>>)?.[Symbol.iterator] !== "function") {
      throw new TypeError("sendBatch() takes an iterable of {body, contentType?, delaySeconds?}");
    }
    const items = Array.from(messages, (request, index) => {
      if (request === null || typeof request !== "object") {
        throw new TypeError(`sendBatch() message ${index} must be an object {body, contentType?, delaySeconds?}`);
      }
      return sendItem(this.binding, request.body, request.contentType, request.delaySeconds);
    });
    if (items.length === 0) throw new TypeError("sendBatch() requires at least one message");
    await this.#transport.unary(QueueService.sendBatch, {
      binding: this.binding,
      messages: items,
      delaySeconds: delayOf(options?.delaySeconds, this.binding),
    });
    return { metadata: { metrics: zeroMetrics() } };
  }

  /** The backlog: messages stored and not acked, their bytes, when the oldest was sent. */
  async metrics(): Promise<QueueMetrics> {
    const answer = await this.#transport.unary(QueueService.metrics, { binding: this.binding });
    const metrics: QueueMetrics = {
      backlogCount: Number(answer.backlogCount),
      backlogBytes: Number(answer.backlogBytes),
    };
    if (answer.oldestMessageTimestampMs !== undefined) {
      metrics.oldestMessageTimestamp = new Date(Number(answer.oldestMessageTimestampMs));
    }
    return metrics;
  }

  /**
   * Batches as messages arrive, until the loop stops, `signal` aborts or the daemon drains.
   *
   * The daemon leases a batch only when this iterator asks for the next one, so a consumer that
   * stops holds nothing beyond what it received. Before asking, the iterator waits for the
   * previous batch's ack/retry calls and throws the first that failed.
   */
  async *consume(options: QueueConsumeOptions = {}): AsyncGenerator<MessageBatch<Body>, void, undefined> {
    const { signal } = options;
    const settings: QueueConsumeRequest = {
      binding: this.binding,
      batchSize: batchSizeOf(options.batchSize, this.binding),
      maxWaitSeconds: optionalNumber("maxWaitMs", options.maxWaitMs, 1000),
      visibilityTimeoutSeconds: optionalNumber("visibilityTimeoutMs", options.visibilityTimeoutMs, 1000),
    };
    if (signal?.aborted) return;
    const call = this.#transport.duplex(QueueService.consume);
    const stop = (): void => call.cancel();
    signal?.addEventListener("abort", stop, { once: true });
    try {
      call.write(settings);
      for await (const batch of call) {
        const settlements = new Settlements(this.#transport, this.binding);
        yield new MessageBatch<Body>(settlements, batch);
        await settlements.flush();
        if (signal?.aborted) return;
        call.write({ binding: "" }); // one more batch, please
      }
    } catch (error) {
      if (signal?.aborted) return; // the cancel we caused
      throw error;
    } finally {
      signal?.removeEventListener("abort", stop);
    }
  }
}

/** What a consumer's handler gets and may return, like a Worker's `queue(batch, env, ctx)`. */
export type QueueHandler<Body = unknown> = (batch: MessageBatch<Body>) => unknown;

export interface QueueConsumerOptions<Body = unknown> extends QueueConsumeOptions {
  /** Called when the handler throws (its unsettled messages are retried); default logs it. */
  onError?: (error: unknown, batch: MessageBatch<Body>) => void;
}

/**
 * Run a Worker's queue handler on this machine: `await consume(env.JOBS, (batch) =>
 * worker.queue(batch, env, ctx), { signal })`. As in Workers, messages the handler leaves
 * unsettled are acked when it returns and retried when it throws. Resolves when `signal`
 * aborts or the daemon drains.
 */
export async function consume<Body = unknown>(
  queue: Queue<Body>,
  handler: QueueHandler<Body>,
  options: QueueConsumerOptions<Body> = {},
): Promise<void> {
  const onError =
    options.onError ??
    ((error: unknown, batch: MessageBatch<Body>): void => {
      console.error(`bindingd queue consumer "${batch.queue}": the handler failed; its unsettled messages will be retried`, error);
    });
  for await (const batch of queue.consume(options)) {
    let failure: { error: unknown } | null = null;
    try {
      await handler(batch);
    } catch (error) {
      failure = { error };
    }
    if (failure === null) {
      await batch.ackAll();
    } else {
      await batch.retryAll();
      onError(failure.error, batch);
    }
  }
}
