/**
 * SQL bindings: the Workers `D1Database`, so code written for Cloudflare runs unchanged.
 *
 * Values are converted as D1 converts them in the Workers runtime: integers come back as JS
 * numbers (beyond 2^53 they lose precision, as in D1), blobs as arrays of numbers, booleans
 * bind as 1/0, ArrayBuffers and views bind as blobs, NaN and ±Infinity bind as NULL, and
 * `undefined`, bigint or an object refuse to bind with D1's `D1_TYPE_ERROR` message. A large
 * result streams from the daemon page by page (Query, then Fetch on its cursor) and `first()`
 * closes the cursor after the first page, as the Python client does.
 *
 * Known differences from D1 (workerd), visible only through SQLite's `typeof()` or a column
 * without type affinity: workerd binds every JS number and boolean as REAL, bindingd binds
 * integral numbers and booleans as INTEGER. A typed-array view binds as its bytes here; workerd
 * converts it element by element (an Int16Array's 256 becomes the byte 0).
 */
import {
  DatabaseService,
  type SqlMeta,
  type SqlQueryResponse,
  type SqlRow,
  type SqlStatement,
  type SqlValue,
} from "./gen/bindingd/v1/database.js";
import { SqlError } from "./errors.js";
import type { Transport } from "./transport.js";
import type * as Workers from "@cloudflare/workers-types";

export type D1Meta = Workers.D1Meta;
export type D1Response = Workers.D1Response;
export type D1Result<T = unknown> = Workers.D1Result<T>;
export type D1ExecResult = Workers.D1ExecResult;
export type D1SessionBookmark = Workers.D1SessionBookmark;
export type D1SessionConstraint = Workers.D1SessionConstraint;

/** What `meta.served_by` says, so a result shows where it came from (Miniflare: "miniflare.db"). */
const SERVED_BY = "bindingd";
const INT64_LIMIT = 2 ** 63;

// --- values ----------------------------------------------------------------------------------

/** D1's own wording, so code that matches on it behaves the same. */
function typeError(value: unknown): Error {
  return new Error(`D1_TYPE_ERROR: Type '${typeof value}' not supported for value '${String(value)}'`);
}

/** One bound value on the wire; throws D1's type error for what D1 cannot bind. */
export function encodeValue(value: unknown): SqlValue {
  if (value === null) return { kind: { $case: "null", null: true } };
  switch (typeof value) {
    case "boolean":
      return { kind: { $case: "boolean", boolean: value } };
    case "number":
      // D1 sends bound values as JSON, where NaN and ±Infinity become null.
      if (!Number.isFinite(value)) return { kind: { $case: "null", null: true } };
      if (Number.isInteger(value) && Math.abs(value) < INT64_LIMIT) {
        return { kind: { $case: "integer", integer: BigInt(value) } };
      }
      return { kind: { $case: "real", real: value } };
    case "string":
      return { kind: { $case: "text", text: value } };
    case "symbol":
      throw new TypeError("Cannot convert a Symbol value to a string");
    case "object":
      if (value instanceof ArrayBuffer) return { kind: { $case: "blob", blob: new Uint8Array(value) } };
      // D1 binds an array of numbers as the blob of those bytes.
      if (Array.isArray(value) && value.every((item) => typeof item === "number")) {
        return { kind: { $case: "blob", blob: Uint8Array.from(value) } };
      }
      if (ArrayBuffer.isView(value)) {
        return { kind: { $case: "blob", blob: new Uint8Array(value.buffer, value.byteOffset, value.byteLength) } };
      }
      throw typeError(value);
    default:
      throw typeError(value);
  }
}

/** A result value as D1 gives it to a Worker. */
export function decodeValue(value: SqlValue): unknown {
  const kind = value.kind;
  switch (kind?.$case) {
    case undefined:
    case "null":
      return null;
    case "integer":
      return Number(kind.integer); // D1 answers numbers; beyond 2^53 they round, as in D1
    case "real":
      return Number.isFinite(kind.real) ? kind.real : null; // D1 answers JSON: no NaN or Infinity
    case "text":
      return kind.text;
    case "blob":
      return Array.from(kind.blob);
    case "boolean":
      return kind.boolean; // only a PostgreSQL boolean column answers one
  }
}

function decodeRow(row: SqlRow): unknown[] {
  return row.values.map(decodeValue);
}

/** Columns to object; a repeated column name keeps its last value, as in D1. */
function rowObject(columns: readonly string[], values: readonly unknown[]): Record<string, unknown> {
  return Object.fromEntries(columns.map((name, i) => [name, values[i]]));
}

function decodeMeta(meta: SqlMeta | undefined): D1Meta & Record<string, unknown> {
  return {
    served_by: SERVED_BY,
    duration: meta?.duration ?? 0,
    changes: Number(meta?.changes ?? 0n),
    last_row_id: Number(meta?.lastRowId ?? 0n),
    changed_db: meta?.changedDb ?? false,
    // Only SQLite can tell the size; the Workers type has no null here, so others answer 0.
    size_after: Number(meta?.sizeAfter ?? 0n),
    rows_read: Number(meta?.rowsRead ?? 0n),
    rows_written: Number(meta?.rowsWritten ?? 0n),
  };
}

function result<T>(columns: readonly string[], rows: readonly unknown[][], meta: SqlMeta | undefined): D1Result<T> {
  return {
    success: true,
    meta: decodeMeta(meta),
    results: rows.map((row) => rowObject(columns, row) as T),
  };
}

/**
 * D1 errors read "D1_ERROR: <what SQLite said>"; the daemon's SqlError carries the backend's
 * message alone, so it gets D1's prefix (the class, reason, binding and env stay the daemon's).
 */
function asD1Error(error: unknown, prefix: string): unknown {
  if (!(error instanceof SqlError) || error.message.startsWith("D1_")) return error;
  return new SqlError(`${prefix}: ${error.message}`, {
    reason: error.reason,
    binding: error.binding,
    env: error.env,
    backend: error.backend,
    requestId: error.requestId,
    code: error.code,
  });
}

async function sqlCall<R>(prefix: string, call: () => Promise<R>): Promise<R> {
  try {
    return await call();
  } catch (error) {
    throw asD1Error(error, prefix);
  }
}

// --- statements ------------------------------------------------------------------------------

/** The wire form of a statement, for `batch` (kept off the public surface). */
let wireStatement: (statement: D1PreparedStatement) => SqlStatement;

/** A statement and its bound values; `bind` returns a new statement, as in D1. */
export class D1PreparedStatement implements Workers.D1PreparedStatement {
  static {
    wireStatement = (statement) => ({ sql: statement.#sql, params: [...statement.#params] });
  }

  readonly #transport: Transport;
  readonly #binding: string;
  readonly #sql: string;
  readonly #params: readonly SqlValue[];

  /** Made by `D1Database.prepare`. */
  constructor(transport: Transport, binding: string, sql: string, params: readonly SqlValue[] = []) {
    this.#transport = transport;
    this.#binding = binding;
    this.#sql = sql;
    this.#params = params;
  }

  /** Values for `?` / `?NNN`; a value D1 cannot bind throws here, as in D1. */
  bind(...values: unknown[]): D1PreparedStatement {
    return new D1PreparedStatement(this.#transport, this.#binding, this.#sql, values.map(encodeValue));
  }

  /**
   * The messages of the answer: the Query answer, then (for a large result) its Fetch stream.
   * Leaving early closes a cursor not yet fetched; leaving a Fetch cancels it (the daemon
   * stops the query).
   */
  async *#parts(): AsyncGenerator<SqlQueryResponse, void, undefined> {
    const transport = this.#transport;
    const binding = this.#binding;
    const first = await transport.unary(DatabaseService.query, { binding, statement: wireStatement(this) });
    let fetching = false;
    try {
      yield first;
      if (first.cursor) {
        fetching = true;
        yield* transport.stream(DatabaseService.fetch, { binding, cursor: first.cursor });
      }
    } finally {
      if (first.cursor && !fetching) {
        // Best effort: the daemon drops an unread cursor after 30 s anyway.
        await transport.unary(DatabaseService.closeCursor, { binding, cursor: first.cursor }).catch(() => undefined);
      }
    }
  }

  async #collect(): Promise<{ columns: string[]; rows: unknown[][]; meta: SqlMeta | undefined }> {
    let columns: string[] = [];
    const rows: unknown[][] = [];
    let meta: SqlMeta | undefined;
    for await (const part of this.#parts()) {
      if (part.columns.length > 0) columns = part.columns;
      for (const row of part.rows) rows.push(decodeRow(row));
      if (part.meta !== undefined) meta = part.meta;
    }
    return { columns, rows, meta };
  }

  first<T = unknown>(colName: string): Promise<T | null>;
  first<T = Record<string, unknown>>(): Promise<T | null>;
  /** The first row (or one of its values), null when there is none; the rest is never sent. */
  async first<T>(colName?: string): Promise<T | null> {
    return sqlCall("D1_ERROR", async () => {
      let columns: string[] = [];
      let row: unknown[] | null = null;
      for await (const part of this.#parts()) {
        if (part.columns.length > 0) columns = part.columns;
        const firstRow = part.rows[0];
        if (firstRow !== undefined) {
          row = decodeRow(firstRow);
          break;
        }
      }
      if (row === null) return null;
      if (colName === undefined) return rowObject(columns, row) as T;
      // D1 checks the column only when there is a row (an empty result is null either way).
      const index = columns.lastIndexOf(colName);
      if (index < 0) {
        throw new SqlError(`D1_COLUMN_NOTFOUND: Column not found (${colName})`, {
          binding: this.#binding,
        });
      }
      return row[index] as T;
    });
  }

  /** D1's run(): the same shape as all(). */
  async run<T = Record<string, unknown>>(): Promise<D1Result<T>> {
    return this.all<T>();
  }

  async all<T = Record<string, unknown>>(): Promise<D1Result<T>> {
    return sqlCall("D1_ERROR", async () => {
      const { columns, rows, meta } = await this.#collect();
      return result<T>(columns, rows, meta);
    });
  }

  raw<T = unknown[]>(options: { columnNames: true }): Promise<[string[], ...T[]]>;
  raw<T = unknown[]>(options?: { columnNames?: false }): Promise<T[]>;
  /** Rows as arrays; `{columnNames: true}` puts the column names first. */
  async raw<T = unknown[]>(options?: { columnNames?: boolean }): Promise<[string[], ...T[]] | T[]> {
    return sqlCall("D1_ERROR", async () => {
      const { columns, rows } = await this.#collect();
      if (options?.columnNames === true) return [columns, ...(rows as T[])] as [string[], ...T[]];
      return rows as T[];
    });
  }
}

// --- the database ----------------------------------------------------------------------------

function statementsOf(statements: readonly unknown[]): SqlStatement[] {
  if (!Array.isArray(statements)) throw new TypeError("batch() takes an array of prepared statements");
  // D1's own errors for these are plain Errors.
  if (statements.length === 0) throw new Error("D1_ERROR: No SQL statements detected.");
  return statements.map((statement, index) => {
    if (!(statement instanceof D1PreparedStatement)) {
      throw new Error(`D1_ERROR: batch() statement ${index} is not a statement from prepare()`);
    }
    return wireStatement(statement);
  });
}

/** A Workers D1 database served by bindingd. */
export class D1Database implements Workers.D1Database {
  /** The binding's name in the daemon's config. */
  readonly binding: string;
  readonly #transport: Transport;

  constructor(transport: Transport, binding: string) {
    this.#transport = transport;
    this.binding = binding;
  }

  prepare(query: string): D1PreparedStatement {
    if (typeof query !== "string") throw new TypeError(`a SQL statement must be a string, not ${typeof query}`);
    return new D1PreparedStatement(this.#transport, this.binding, query);
  }

  /** Every statement in one transaction: all or nothing; a failure names the statement's index. */
  async batch<T = unknown>(statements: Workers.D1PreparedStatement[]): Promise<D1Result<T>[]> {
    const wire = statementsOf(statements);
    return sqlCall("D1_ERROR", async () => {
      const response = await this.#transport.unary(DatabaseService.batch, { binding: this.binding, statements: wire });
      return response.results.map((r) => result<T>(r.columns, r.rows.map(decodeRow), r.meta));
    });
  }

  /**
   * A script of statements separated by `;`, without bound values. Unlike D1, which runs them
   * one by one, the daemon runs the script in one transaction: a failure applies nothing.
   */
  async exec(query: string): Promise<D1ExecResult> {
    if (typeof query !== "string") throw new TypeError(`a SQL script must be a string, not ${typeof query}`);
    return sqlCall("D1_EXEC_ERROR", async () => {
      const response = await this.#transport.unary(DatabaseService.exec, { binding: this.binding, sql: query });
      return { count: Number(response.count), duration: response.duration };
    });
  }

  /**
   * D1's read-replication session. bindingd serves one database with no replicas, so every
   * read already sees every earlier write: the session simply forwards to this database and
   * has no bookmark.
   */
  withSession(_constraintOrBookmark?: D1SessionBookmark | D1SessionConstraint): D1DatabaseSession {
    return new D1DatabaseSession(this);
  }

  /** Deprecated in D1 (alpha databases only); bindingd has no dump. */
  async dump(): Promise<ArrayBuffer> {
    throw new Error(
      `D1_DUMP_ERROR: dump() is not supported by bindingd (binding "${this.binding}"); ` +
        "D1 deprecated it too: export with the backend's own tools (e.g. sqlite3 .dump)",
    );
  }
}

/** What `withSession()` returns: forwards to its database (see there). */
export class D1DatabaseSession implements Workers.D1DatabaseSession {
  readonly #database: D1Database;

  constructor(database: D1Database) {
    this.#database = database;
  }

  prepare(query: string): D1PreparedStatement {
    return this.#database.prepare(query);
  }

  batch<T = unknown>(statements: Workers.D1PreparedStatement[]): Promise<D1Result<T>[]> {
    return this.#database.batch<T>(statements);
  }

  /** Always null: there are no replicas to keep consistent with. */
  getBookmark(): D1SessionBookmark | null {
    return null;
  }
}
