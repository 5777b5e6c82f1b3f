// D1Database against a real daemon (local SQLite provider).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { D1Database, PermissionDenied, SqlError, connect } from "../dist/index.js";
import { startDaemon } from "./support/daemon.mjs";

let daemon;
let env;
let dataDir;

before(async () => {
  // APP_DB and REPORTS share one existing SQLite file (an empty file is an empty database);
  // REPORTS may only read it.
  dataDir = mkdtempSync(join(tmpdir(), "bindingd-node-d1-"));
  const shared = join(dataDir, "shared.sqlite3");
  writeFileSync(shared, "");
  daemon = await startDaemon(`version: 1
connections:
  shared: { kind: sqlite, path: ${JSON.stringify(shared)} }
bindings:
  DB: { type: sql }
  APP_DB: { type: sql, connection: shared }
  REPORTS: { type: sql, connection: shared, access: read-only }
`);
  env = await connect({ endpoint: daemon.endpoint });
  await env.DB.exec(
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL UNIQUE, score REAL, body BLOB, flag INTEGER, extra);" +
      "INSERT INTO posts (id, title, score) VALUES (1, 'first', 1.5), (2, 'second', 2.5)",
  );
});

after(async () => {
  env?.close();
  await daemon?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** A SqlError on DB; `fromDaemon` errors also name the env (the client alone does not know it). */
const sqlError = (pattern, { fromDaemon = true } = {}) => (error) => {
  assert.ok(error instanceof SqlError, `expected SqlError, got ${error?.name}: ${error?.message}`);
  assert.equal(error.reason, "SQL_ERROR");
  assert.equal(error.binding, "DB");
  if (fromDaemon) assert.equal(error.env, "dev");
  assert.match(error.message, pattern);
  return true;
};

test("sql bindings are D1Database", () => {
  assert.ok(env.DB instanceof D1Database);
  assert.equal(env.DB.binding, "DB");
});

test("values round-trip as D1 gives them: null, ints, floats, text, blobs as number arrays, booleans as 1/0", async () => {
  const blob = new Uint8Array([9, 0, 1, 2, 255, 7]);
  await env.DB.prepare("CREATE TABLE typed (k TEXT PRIMARY KEY, v)").run();
  const insert = env.DB.prepare("INSERT INTO typed (k, v) VALUES (?, ?)");
  const values = [
    ["null", null],
    ["int", 42],
    ["negative", -7],
    ["zero", 0],
    ["safe", Number.MAX_SAFE_INTEGER],
    ["float", 1.25],
    ["text", "hé ✓"],
    ["empty", ""],
    ["buffer", blob.buffer],
    ["view", blob.subarray(1, 5)],
    ["true", true],
    ["false", false],
    ["nan", Number.NaN],
    ["infinity", Number.POSITIVE_INFINITY],
  ];
  await env.DB.batch(values.map(([k, v]) => insert.bind(k, v)));
  const { results } = await env.DB.prepare("SELECT k, v, typeof(v) AS t FROM typed").all();
  const got = Object.fromEntries(results.map((row) => [row.k, [row.v, row.t]]));
  assert.deepEqual(got, {
    null: [null, "null"],
    int: [42, "integer"],
    negative: [-7, "integer"],
    zero: [0, "integer"],
    safe: [Number.MAX_SAFE_INTEGER, "integer"],
    float: [1.25, "real"],
    text: ["hé ✓", "text"],
    empty: ["", "text"],
    buffer: [[9, 0, 1, 2, 255, 7], "blob"],
    view: [[0, 1, 2, 255], "blob"],
    true: [1, "integer"],
    false: [0, "integer"],
    // D1 sends bound values as JSON, where NaN and Infinity are null.
    nan: [null, "null"],
    infinity: [null, "null"],
  });
  // Integers past 2^53 come back as (rounded) numbers, as D1 answers them.
  const big = await env.DB.prepare("SELECT 9007199254740993 AS a, 9223372036854775807 AS b, -9223372036854775808 AS c").first();
  assert.deepEqual(big, { a: 9007199254740992, b: 9223372036854775807, c: -9223372036854775808 });
  assert.equal(typeof big.a, "number");
});

test("bind refuses what D1 refuses, at bind time, with D1's message", () => {
  const statement = env.DB.prepare("SELECT ?");
  assert.throws(() => statement.bind(undefined), {
    message: "D1_TYPE_ERROR: Type 'undefined' not supported for value 'undefined'",
  });
  assert.throws(() => statement.bind(5n), { message: "D1_TYPE_ERROR: Type 'bigint' not supported for value '5'" });
  assert.throws(() => statement.bind({ a: 1 }), {
    message: "D1_TYPE_ERROR: Type 'object' not supported for value '[object Object]'",
  });
  assert.throws(() => env.DB.prepare(7), TypeError);
});

test("bind returns a new statement; the original keeps its values", async () => {
  const base = env.DB.prepare("SELECT title FROM posts WHERE id = ?");
  const one = base.bind(1);
  const two = one.bind(2);
  assert.equal(await one.first("title"), "first");
  assert.equal(await two.first("title"), "second");
  await assert.rejects(base.first(), sqlError(/^D1_ERROR: .*1 parameter/));
});

test("first, first(column), all, run and raw", async () => {
  const select = env.DB.prepare("SELECT id, title FROM posts ORDER BY id");
  assert.deepEqual(await select.first(), { id: 1, title: "first" });
  assert.equal(await select.first("title"), "first");
  const none = env.DB.prepare("SELECT id, title FROM posts WHERE id < 0");
  assert.equal(await none.first(), null);
  assert.equal(await none.first("missing"), null); // D1 checks the column only when there is a row
  await assert.rejects(
    select.first("missing"),
    sqlError(/^D1_COLUMN_NOTFOUND: Column not found \(missing\)$/, { fromDaemon: false }),
  );

  const all = await select.all();
  assert.equal(all.success, true);
  assert.deepEqual(all.results, [
    { id: 1, title: "first" },
    { id: 2, title: "second" },
  ]);
  assert.deepEqual(await select.raw(), [
    [1, "first"],
    [2, "second"],
  ]);
  assert.deepEqual(await select.raw({ columnNames: true }), [
    ["id", "title"],
    [1, "first"],
    [2, "second"],
  ]);
  assert.deepEqual(await none.raw({ columnNames: true }), [["id", "title"]]);
  // A repeated column name keeps its last value, as in D1.
  assert.deepEqual(await env.DB.prepare("SELECT 1 AS a, 2 AS a").first(), { a: 2 });

  const run = await env.DB.prepare("UPDATE posts SET score = score + 1 WHERE id = ?").bind(2).run();
  assert.equal(run.success, true);
  assert.deepEqual(run.results, []);
  assert.equal(run.meta.changes, 1);
});

test("meta has D1's fields with sane values", async () => {
  const insert = await env.DB.prepare("INSERT INTO posts (id, title) VALUES (?, ?)").bind(10, "ten").run();
  const { meta } = insert;
  assert.deepEqual(Object.keys(meta).sort(), [
    "changed_db",
    "changes",
    "duration",
    "last_row_id",
    "rows_read",
    "rows_written",
    "served_by",
    "size_after",
  ]);
  assert.equal(meta.changes, 1);
  assert.equal(meta.last_row_id, 10);
  assert.equal(meta.changed_db, true);
  assert.ok(meta.rows_written >= 1);
  assert.equal(typeof meta.duration, "number");
  assert.ok(meta.duration >= 0);
  assert.ok(meta.size_after > 0, "SQLite reports the database size");
  assert.equal(meta.served_by, "bindingd");

  const read = await env.DB.prepare("SELECT * FROM posts").all();
  assert.equal(read.meta.changes, 0);
  assert.equal(read.meta.changed_db, false);
  assert.equal(read.meta.rows_read, read.results.length);
  await env.DB.prepare("DELETE FROM posts WHERE id = 10").run();
});

test("a constraint violation and a syntax error are SqlError with D1's prefix and the backend's message", async () => {
  await assert.rejects(
    env.DB.prepare("INSERT INTO posts (id, title) VALUES (?, ?)").bind(3, "first").run(),
    sqlError(/^D1_ERROR: .*UNIQUE constraint failed: posts\.title/),
  );
  await assert.rejects(env.DB.prepare("SELEC 1").all(), sqlError(/^D1_ERROR: .*syntax error/));
  assert.equal(await env.DB.prepare("SELECT count(*) AS n FROM posts").first("n"), 2);
});

test("batch is one transaction: when the third statement fails nothing is applied and the error names it", async () => {
  const insert = env.DB.prepare("INSERT INTO posts (id, title) VALUES (?, ?)");
  await assert.rejects(
    env.DB.batch([insert.bind(20, "twenty"), insert.bind(21, "twenty-one"), insert.bind(22, "first")]),
    sqlError(/^D1_ERROR: .*statement 2 failed, nothing was applied: UNIQUE constraint failed/),
  );
  assert.equal(await env.DB.prepare("SELECT count(*) AS n FROM posts WHERE id >= 20").first("n"), 0);

  const results = await env.DB.batch([
    insert.bind(20, "twenty"),
    env.DB.prepare("SELECT id FROM posts WHERE id >= ? ORDER BY id").bind(20),
  ]);
  assert.equal(results.length, 2);
  assert.equal(results[0].success, true);
  assert.equal(results[0].meta.changes, 1);
  assert.equal(results[0].meta.last_row_id, 20);
  assert.deepEqual(results[1].results, [{ id: 20 }]);
  await env.DB.prepare("DELETE FROM posts WHERE id = 20").run();
  await assert.rejects(env.DB.batch([{ sql: "SELECT 1" }]), /D1_ERROR: batch\(\) statement 0 is not a statement/);
  await assert.rejects(env.DB.batch([]), /D1_ERROR: No SQL statements detected/);
});

test("exec runs a multi-statement script and counts its statements; a failing script applies nothing", async () => {
  const done = await env.DB.exec(
    "CREATE TABLE script (n INTEGER UNIQUE);\nINSERT INTO script VALUES (1);\nINSERT INTO script VALUES (2);\n" +
      "UPDATE script SET n = n * 10 WHERE n = 2",
  );
  assert.equal(done.count, 4);
  assert.equal(typeof done.duration, "number");
  assert.deepEqual(await env.DB.prepare("SELECT n FROM script ORDER BY n").raw(), [[1], [20]]);
  await assert.rejects(
    env.DB.exec("INSERT INTO script VALUES (3); INSERT INTO script VALUES (1)"),
    sqlError(/^D1_EXEC_ERROR: .*statement 1 failed.*UNIQUE constraint failed/),
  );
  assert.equal(await env.DB.prepare("SELECT count(*) AS n FROM script").first("n"), 2);
});

test("a 100,000-row SELECT streams through the daemon's pages and arrives whole", async () => {
  const count = 100_000;
  const select = env.DB.prepare(
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) " +
      "SELECT n, 'row ' || n AS label, x'00ff' AS b FROM c",
  ).bind(count);
  const { results, meta } = await select.all();
  assert.equal(results.length, count);
  assert.deepEqual(results[0], { n: 1, label: "row 1", b: [0, 255] });
  assert.deepEqual(results[count - 1], { n: count, label: `row ${count}`, b: [0, 255] });
  let sum = 0;
  for (let i = 0; i < count; i++) {
    if (results[i].n !== i + 1 || results[i].label !== `row ${i + 1}`) assert.fail(`row ${i} is ${JSON.stringify(results[i])}`);
    sum += results[i].n;
  }
  assert.equal(sum, (count * (count + 1)) / 2);
  assert.equal(meta.rows_read, count, "the meta comes with the last page");

  const raw = await select.raw({ columnNames: true });
  assert.equal(raw.length, count + 1);
  assert.deepEqual(raw[count], [count, `row ${count}`, [0, 255]]);
  // first() reads one page and closes the cursor instead of fetching the rest.
  assert.deepEqual(await select.first(), { n: 1, label: "row 1", b: [0, 255] });
  assert.equal(await env.DB.prepare("SELECT 1 AS one").first("one"), 1);
});

test("first() of a large INSERT ... RETURNING keeps every row written, as D1 does", async () => {
  await env.DB.exec("CREATE TABLE many (n INTEGER)");
  const first = await env.DB.prepare(
    "INSERT INTO many (n) WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) " +
      "SELECT n FROM c RETURNING n",
  ).first();
  assert.ok(first !== null && typeof first.n === "number");
  assert.equal(await env.DB.prepare("SELECT count(*) AS n FROM many").first("n"), 1000);
});

test("a read-only binding reads and refuses a write with PermissionDenied", async () => {
  await env.APP_DB.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('kept')");
  assert.deepEqual((await env.REPORTS.prepare("SELECT text FROM notes").all()).results, [{ text: "kept" }]);
  const refused = (error) => {
    assert.ok(error instanceof PermissionDenied, `expected PermissionDenied, got ${error?.name}: ${error?.message}`);
    assert.equal(error.binding, "REPORTS");
    return true;
  };
  await assert.rejects(env.REPORTS.prepare("INSERT INTO notes (text) VALUES (?)").bind("no").run(), refused);
  await assert.rejects(env.REPORTS.exec("DELETE FROM notes"), refused);
  await assert.rejects(env.REPORTS.batch([env.REPORTS.prepare("DELETE FROM notes")]), refused);
  assert.equal(await env.APP_DB.prepare("SELECT count(*) AS n FROM notes").first("n"), 1);
});

test("withSession forwards to the database; dump is refused clearly", async () => {
  const session = env.DB.withSession("first-primary");
  assert.equal(session.getBookmark(), null);
  assert.equal(await session.prepare("SELECT title FROM posts WHERE id = 1").first("title"), "first");
  const [result] = await session.batch([session.prepare("SELECT 2 AS two")]);
  assert.deepEqual(result.results, [{ two: 2 }]);
  await assert.rejects(env.DB.dump(), /D1_DUMP_ERROR: dump\(\) is not supported by bindingd/);
});
