// Queue (producer and pull consumer) against a real daemon (local SQLite queues).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { InvalidArgument, Message, MessageBatch, PermissionDenied, Queue, connect, consume } from "../dist/index.js";
import { startDaemon } from "./support/daemon.mjs";

let daemon;
let env;
/** A consumer waits for messages as long as it takes: a regression must fail, not hang. */
const LIMIT = { timeout: 30_000 };

// One binding per test, so no test sees another's messages.
before(async () => {
  daemon = await startDaemon(`version: 1
bindings:
  JOBS: { type: queue }
  RETRIES: { type: queue }
  LIMITS: { type: queue }
  LEASES: { type: queue }
  RUNNER: { type: queue }
  STOPPED: { type: queue }
  LOCKED: { type: queue, access: read-only }
`);
  env = await connect({ endpoint: daemon.endpoint });
});

after(async () => {
  env?.close();
  await daemon?.stop();
});

/** The next batch of `queue`'s consumer iterator (which stays open for the next call). */
async function nextBatch(batches) {
  const { value, done } = await batches.next();
  assert.equal(done, false, "the consumer ended without a batch");
  return value;
}

/** Everything `queue` delivers within `ms` (the consumer is stopped by an AbortSignal then). */
async function drain(queue, ms) {
  const seen = [];
  for await (const batch of queue.consume({ maxWaitMs: 100, signal: AbortSignal.timeout(ms) })) {
    seen.push(...batch.messages);
    await batch.ackAll();
  }
  return seen;
}

test("queue bindings are Queue; send and sendBatch answer Workers' shape", LIMIT, async () => {
  assert.ok(env.JOBS instanceof Queue);
  const zero = { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
  assert.deepEqual(await env.JOBS.send({ n: 1 }), zero);
  assert.deepEqual(
    await env.JOBS.sendBatch([
      { body: "two", contentType: "text" },
      { body: new Uint8Array([0, 3, 255]), contentType: "bytes" },
      { body: [4, { four: true }] },
    ]),
    zero,
  );
  await env.JOBS.send("five", { contentType: "text", delaySeconds: 0 });

  const before = Date.now();
  const batches = env.JOBS.consume({ batchSize: 10, maxWaitMs: 200 });
  const batch = await nextBatch(batches);
  assert.ok(batch instanceof MessageBatch);
  assert.equal(batch.queue, "JOBS");
  assert.deepEqual(batch.metadata, { metrics: { backlogCount: 0, backlogBytes: 0 } });
  assert.equal(batch.messages.length, 5);
  const [json, text, bytes, array, last] = batch.messages;
  assert.ok(json instanceof Message);
  assert.deepEqual(json.body, { n: 1 });
  assert.equal(text.body, "two");
  assert.ok(bytes.body instanceof ArrayBuffer, "a bytes message arrives as an ArrayBuffer, as in workerd");
  assert.deepEqual([...new Uint8Array(bytes.body)], [0, 3, 255]);
  assert.deepEqual(array.body, [4, { four: true }]);
  assert.equal(last.body, "five");
  assert.deepEqual(
    batch.messages.map((m) => m.contentType),
    ["json", "text", "bytes", "json", "text"],
  );
  for (const message of batch.messages) {
    assert.match(message.id, /^[0-9a-f]{32}$/);
    assert.ok(message.timestamp instanceof Date);
    assert.ok(Math.abs(message.timestamp.getTime() - before) < 60_000);
    assert.equal(message.attempts, 1);
  }
  assert.equal(new Set(batch.messages.map((m) => m.id)).size, 5);
  await batch.messages[0].ack();
  await batch.ackAll(); // the rest, in one call
  await batches.return();
  assert.deepEqual(await drain(env.JOBS, 800), [], "acked messages are gone");
});

test("retry redelivers the same message with attempts 2; ack then removes it", LIMIT, async () => {
  await env.RETRIES.sendBatch([{ body: { job: "a" } }, { body: { job: "b" } }]);
  const batches = env.RETRIES.consume({ batchSize: 2, maxWaitMs: 200 });
  try {
    const first = await nextBatch(batches);
    assert.deepEqual(
      first.messages.map((m) => [m.body.job, m.attempts]),
      [
        ["a", 1],
        ["b", 1],
      ],
    );
    const [a, b] = first.messages;
    await a.ack();
    b.retry(); // Workers' retry() returns nothing to await; the consumer waits for it itself
    b.ack(); // the first of ack/retry wins, as in Workers: this does nothing

    const second = await nextBatch(batches);
    assert.equal(second.messages.length, 1);
    const again = second.messages[0];
    assert.equal(again.id, b.id);
    assert.equal(again.attempts, 2);
    assert.deepEqual(again.body, { job: "b" });
    assert.equal(again.timestamp.getTime(), b.timestamp.getTime());
    await second.retryAll({ delaySeconds: 0 });

    const third = await nextBatch(batches);
    assert.equal(third.messages[0].id, b.id);
    assert.equal(third.messages[0].attempts, 3);
    await third.ackAll();
  } finally {
    await batches.return();
  }
  assert.deepEqual(await drain(env.RETRIES, 800), []);
});

test("a message not settled within the visibility timeout comes back with attempts + 1", LIMIT, async () => {
  await env.LEASES.send("lease me", { contentType: "text" });
  const batches = env.LEASES.consume({ batchSize: 1, maxWaitMs: 0, visibilityTimeoutMs: 1000 });
  try {
    const first = await nextBatch(batches);
    assert.equal(first.messages[0].attempts, 1);
    const second = await nextBatch(batches); // not settled: redelivered once the lease ends
    assert.equal(second.messages[0].id, first.messages[0].id);
    assert.equal(second.messages[0].attempts, 2);
    await second.ackAll();
    await first.messages[0].ack(); // its lease expired: the daemon skips it, nothing fails
  } finally {
    await batches.return();
  }
});

test("limits are the daemon's: InvalidArgument naming the limit, and a failing batch sends nothing", LIMIT, async () => {
  const tooBig = "x".repeat(128_001);
  const invalid = (pattern) => (error) => {
    assert.ok(error instanceof InvalidArgument, `expected InvalidArgument, got ${error?.name}: ${error?.message}`);
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.match(error.message, pattern);
    return true;
  };
  await assert.rejects(env.LIMITS.send(tooBig, { contentType: "text" }), invalid(/128001 bytes.*128 KB/));
  await assert.rejects(
    env.LIMITS.sendBatch([{ body: "ok", contentType: "text" }, { body: tooBig, contentType: "text" }]),
    invalid(/128 KB/),
  );
  await assert.rejects(
    env.LIMITS.sendBatch(Array.from({ length: 101 }, (_, i) => ({ body: i }))),
    invalid(/101 messages.*100/),
  );
  await assert.rejects(env.LIMITS.send(1, { delaySeconds: 43_201 }), invalid(/43200/));
  await assert.rejects(env.LIMITS.send(1, { delaySeconds: 2 ** 40 }), invalid(/43200/));
  await assert.rejects(env.LIMITS.send({ a: 1 }, { contentType: "v8" }), invalid(/"v8" needs a V8 isolate/));
  await assert.rejects(env.LIMITS.consume({ batchSize: 101 }).next(), invalid(/batch_size is 101.*100/));
  await assert.rejects(env.LIMITS.consume({ batchSize: 2 ** 40 }).next(), invalid(/batch_size/));
  await assert.rejects(env.LIMITS.consume({ batchSize: 2.5 }).next(), TypeError);
  assert.deepEqual(await drain(env.LIMITS, 800), [], "nothing of a refused batch was sent");
});

test("bodies that do not fit their content type are TypeErrors with workerd's wording", LIMIT, async () => {
  await assert.rejects(env.LIMITS.send(undefined), { name: "TypeError", message: "Message body cannot be undefined" });
  await assert.rejects(env.LIMITS.send(1, { contentType: "text" }), {
    name: "TypeError",
    message: 'Content Type "text" requires a value of type string, but received: number',
  });
  await assert.rejects(env.LIMITS.send("s", { contentType: "bytes" }), {
    name: "TypeError",
    message: 'Content Type "bytes" requires a value of type ArrayBufferView, but received: string',
  });
  await assert.rejects(env.LIMITS.send("s", { contentType: "bogus" }), {
    name: "TypeError",
    message: "Unsupported queue message content type: bogus",
  });
  await assert.rejects(env.LIMITS.sendBatch([]), { name: "TypeError", message: "sendBatch() requires at least one message" });
  await assert.rejects(env.LIMITS.send(() => 1), TypeError);
});

test("metrics() tells the backlog: count, bytes and the oldest message's time", LIMIT, async () => {
  const before = Date.now();
  await env.LIMITS.sendBatch([{ body: "x".repeat(100), contentType: "text" }, { body: "y", contentType: "text" }]);
  const metrics = await env.LIMITS.metrics();
  assert.ok(metrics.backlogCount >= 2, JSON.stringify(metrics));
  assert.ok(metrics.backlogBytes >= 101);
  assert.ok(metrics.oldestMessageTimestamp instanceof Date);
  assert.ok(metrics.oldestMessageTimestamp.getTime() <= Date.now() + 1000);
  assert.ok(metrics.oldestMessageTimestamp.getTime() >= before - 3600_000);
});

test("consume(queue, handler) acks what the handler leaves and retries when it throws, as Workers does", LIMIT, async () => {
  await env.RUNNER.sendBatch([{ body: 1 }, { body: 2 }, { body: 3 }]);
  const stop = new AbortController();
  const calls = [];
  const errors = [];
  await consume(
    env.RUNNER,
    async (batch) => {
      calls.push(batch.messages.map((m) => [m.body, m.attempts]));
      if (calls.length === 1) {
        batch.messages[0].ack(); // settled explicitly: not retried when the handler throws
        throw new Error("first delivery fails");
      }
      if (calls.length === 2) stop.abort();
    },
    { batchSize: 3, maxWaitMs: 200, signal: stop.signal, onError: (error) => errors.push(error.message) },
  );
  assert.deepEqual(calls, [
    [
      [1, 1],
      [2, 1],
      [3, 1],
    ],
    [
      [2, 2],
      [3, 2],
    ],
  ]);
  assert.deepEqual(errors, ["first delivery fails"]);
  assert.deepEqual(await drain(env.RUNNER, 800), [], "the second run's messages were acked on return");
});

test("an aborted signal ends the consumer without an error and without leasing more", LIMIT, async () => {
  const stop = new AbortController();
  const batches = [];
  setTimeout(() => stop.abort(), 300);
  for await (const batch of env.STOPPED.consume({ signal: stop.signal })) batches.push(batch);
  assert.deepEqual(batches, []);
  await env.STOPPED.send("after");
  const [message] = await drain(env.STOPPED, 1500);
  assert.equal(message.body, "after");
  assert.equal(message.attempts, 1, "no earlier consumer held it");
});

test("a read-only queue binding refuses sending and consuming with PermissionDenied", LIMIT, async () => {
  const refused = (error) => error instanceof PermissionDenied && error.binding === "LOCKED";
  await assert.rejects(env.LOCKED.send({ n: 1 }), refused);
  await assert.rejects(async () => {
    for await (const batch of env.LOCKED.consume()) void batch;
  }, refused);
});
