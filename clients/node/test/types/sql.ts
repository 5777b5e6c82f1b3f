// Compiled with `tsc --noEmit` by `make node-test`: bindingd's D1Database and Queue (and the
// consumer's batches) must be assignable to the Workers types, so Worker code accepts them.
import type * as Workers from "@cloudflare/workers-types";
import { type D1Database, type MessageBatch, type Queue, connect, consume } from "../../dist/index.js";

interface Env {
  APP_DB: D1Database;
  JOBS: Queue<{ orderId: number }>;
}

interface Post {
  id: number;
  title: string;
}

// Worker code, written for Cloudflare, taking Cloudflare's types.
async function listPosts(db: Workers.D1Database): Promise<Post[]> {
  const { results, meta } = await db.prepare("SELECT id, title FROM posts WHERE id > ?").bind(0).all<Post>();
  const changes: number = meta.changes;
  void changes;
  return results;
}

async function savePost(db: Workers.D1Database, post: Post): Promise<number> {
  const insert = db.prepare("INSERT INTO posts (id, title) VALUES (?, ?)");
  const [first] = await db.batch([insert.bind(post.id, post.title), db.prepare("SELECT 1")]);
  const title: string | null = await db.prepare("SELECT title FROM posts").first<string>("title");
  const row: Post | null = await db.prepare("SELECT * FROM posts").first<Post>();
  const [columns, ...rows]: [string[], ...unknown[][]] = await db.prepare("SELECT 1").raw({ columnNames: true });
  const plain: unknown[][] = await db.prepare("SELECT 1").raw();
  const { count, duration }: Workers.D1ExecResult = await db.exec("DELETE FROM posts WHERE 0");
  const session: Workers.D1DatabaseSession = db.withSession("first-unconstrained");
  void [title, row, columns, rows, plain, count, duration, session.getBookmark()];
  return first?.meta.last_row_id ?? 0;
}

async function enqueue(queue: Workers.Queue<{ orderId: number }>): Promise<void> {
  await queue.send({ orderId: 1 }, { contentType: "json", delaySeconds: 5 });
  const sent: Workers.QueueSendBatchResponse = await queue.sendBatch([{ body: { orderId: 2 } }], { delaySeconds: 0 });
  void sent;
}

// A Worker's queue handler, run locally by the consumer helper with bindingd's batches.
const worker = {
  async queue(batch: Workers.MessageBatch<{ orderId: number }>, env: Env): Promise<void> {
    for (const message of batch.messages) {
      const when: Date = message.timestamp;
      void when;
      if (message.body.orderId > 0) message.ack();
      else message.retry({ delaySeconds: 10 });
    }
    await env.APP_DB.prepare("SELECT 1").run();
  },
};

export async function main(): Promise<void> {
  const env = await connect<Env>();
  const db: Workers.D1Database = env.APP_DB;
  const queue: Workers.Queue<{ orderId: number }> = env.JOBS;
  await listPosts(env.APP_DB);
  await savePost(db, { id: 1, title: "hello" });
  await enqueue(queue);
  const stop = new AbortController();
  await consume(env.JOBS, (batch: MessageBatch<{ orderId: number }>) => worker.queue(batch, env), {
    batchSize: 10,
    signal: stop.signal,
  });
  for await (const batch of env.JOBS.consume({ maxWaitMs: 500 })) {
    const workersBatch: Workers.MessageBatch<{ orderId: number }> = batch;
    workersBatch.ackAll();
    break;
  }
  env.close();
}
