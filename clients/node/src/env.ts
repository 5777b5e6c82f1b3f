/**
 * `connect()`: the bindings of the daemon's current environment as properties of a plain
 * object, like a Worker's `env`. Vars and secrets are strings; every other binding is the
 * Workers type for its kind.
 */
import { BindingsService, type ListBindingsResponse } from "./gen/bindingd/v1/bindings.js";
import { VarsService } from "./gen/bindingd/v1/vars.js";
import { D1Database } from "./sql.js";
import { KVNamespace } from "./kv.js";
import { Queue } from "./queue.js";
import { R2Bucket } from "./objects.js";
import { BindingError, DaemonUnavailable, START_HINT, WrongEnv } from "./errors.js";
import { type ConnectOptions, ENDPOINT_ENV, Transport, resolveEndpoint } from "./transport.js";

const ENV_VARIABLE = "BINDINGD_ENV";

/**
 * How long `connect()` waits for the daemon to answer. A missing socket or a refused port fails
 * at once; this bounds the cases where something accepts the connection but never answers (a
 * daemon suspended with Ctrl-Z, a port that is not bindingd), which would otherwise hang forever.
 */
const CONNECT_TIMEOUT_MS = 10_000;

/** `connect()`'s options: where the daemon is, and how long to wait for its first answer. */
export interface EnvConnectOptions extends ConnectOptions {
  /** Milliseconds to wait for the daemon's list of bindings (default 10000). */
  timeoutMs?: number;
  /** The env the daemon must serve (default `BINDINGD_ENV`); another one is a WrongEnv error. */
  env?: string;
}

/** The env the caller asked for and where it said so; null when any env will do. */
function wantedEnv(env: string | undefined): { name: string; askedBy: string } | null {
  if (env) return { name: env, askedBy: "connect({ env })" };
  const fromVariable = (process.env[ENV_VARIABLE] ?? "").trim();
  return fromVariable ? { name: fromVariable, askedBy: ENV_VARIABLE } : null;
}

/** Builds the object serving one binding type: `new cls(transport, bindingName)`. */
type BindingFactory = (transport: Transport, binding: string) => unknown;

const BINDING_CLASSES: Record<string, BindingFactory> = {
  kv: (transport, binding) => new KVNamespace(transport, binding),
  sql: (transport, binding) => new D1Database(transport, binding),
  queue: (transport, binding) => new Queue(transport, binding),
  objects: (transport, binding) => new R2Bucket(transport, binding),
};

const VALUE_TYPES = new Set(["var", "secret"]);

/** Stands for a binding type this client version cannot drive; any use throws. */
function unsupported(binding: string, type: string): unknown {
  const fail = (): never => {
    throw new Error(`binding "${binding}": the Node client of this version does not support ${type} bindings yet`);
  };
  return new Proxy(fail, { get: (_target, name) => (name === "then" ? undefined : fail()), apply: fail });
}

/** What `connect()` adds to the bindings, as non-enumerable properties. */
export interface EnvHandle {
  /** Close the channel; bindings taken from this env stop working. */
  close(): void;
  /** The daemon's environment name (e.g. "dev", "staging"). */
  readonly envName: string;
}

/** The default shape of `env` when the caller does not describe its bindings. */
export type Bindings = Record<string, unknown>;

async function buildEnv<E extends object>(
  transport: Transport,
  timeoutMs: number,
  wanted: { name: string; askedBy: string } | null,
): Promise<E & EnvHandle> {
  const deadline = Date.now() + timeoutMs;
  const listing: ListBindingsResponse = await transport.unary(BindingsService.list, {}, { deadline });
  if (wanted !== null && listing.env !== wanted.name) {
    // Talking to dev while staging was asked for would read and write the wrong data.
    throw new WrongEnv(
      `the bindingd daemon at ${transport.target} serves env "${listing.env}", not "${wanted.name}" ` +
        `(asked for by ${wanted.askedBy}); start one for it (bindingd serve --env ${wanted.name}, or ` +
        `bindingd run --env ${wanted.name} -- ...) and point ${ENDPOINT_ENV} at it, or ask for "${listing.env}"`,
      { env: listing.env },
    );
  }
  const { values } = await transport.unary(VarsService.getAll, {}, { deadline });
  const env: Record<string, unknown> = {};
  Object.defineProperty(env, "close", { value: () => transport.close(), enumerable: false, writable: true });
  Object.defineProperty(env, "envName", { value: listing.env, enumerable: false, writable: true });
  for (const info of [...listing.bindings].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    let value: unknown;
    if (VALUE_TYPES.has(info.type)) value = values[info.name];
    else if (info.type in BINDING_CLASSES) value = BINDING_CLASSES[info.type]!(transport, info.name);
    else value = unsupported(info.name, info.type);
    Object.defineProperty(env, info.name, { value, enumerable: true, writable: false, configurable: true });
  }
  return env as E & EnvHandle;
}

/**
 * Connect to the daemon and read its bindings: `const env = await connect<Env>()`.
 *
 * The endpoint comes from `options.endpoint`, then `BINDINGD_ENDPOINT`, then the
 * `.bindingd/endpoint` file the daemon writes beside its config (searched upwards from the
 * working directory up to the project's root); a TCP endpoint also needs the token (see
 * `resolveEndpoint` for which one goes where). Throws DaemonUnavailable when there is no daemon
 * to talk to, and its subclass WrongEnv when `options.env` (default `BINDINGD_ENV`) is given and
 * the daemon serves another env.
 */
export async function connect<E extends object = Bindings>(options: EnvConnectOptions = {}): Promise<E & EnvHandle> {
  const timeoutMs = options.timeoutMs ?? CONNECT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !(timeoutMs > 0)) {
    throw new TypeError(`timeoutMs must be a positive number of milliseconds, not ${String(timeoutMs)}`);
  }
  const wanted = wantedEnv(options.env);
  const { target, token } = resolveEndpoint(options);
  const transport = new Transport(target, token);
  try {
    return await buildEnv<E>(transport, timeoutMs, wanted);
  } catch (error) {
    transport.close();
    // Only gRPC's own deadline (no ErrorInfo): a daemon's BackendTimeout keeps its class.
    if (error instanceof BindingError && error.reason === "DEADLINE_EXCEEDED") {
      throw new DaemonUnavailable(
        `bindingd at ${target} did not answer within ${timeoutMs} ms: the process may be suspended or ` +
          `busy, or the endpoint is not a bindingd daemon; ${START_HINT}`,
        { code: error.code },
      );
    }
    throw error;
  }
}
