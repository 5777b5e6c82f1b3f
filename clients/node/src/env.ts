/**
 * `connect()`: the bindings of the daemon's current environment as properties of a plain
 * object, like a Worker's `env`. Vars and secrets are strings; every other binding is the
 * Workers type for its kind.
 */
import { BindingsService, type ListBindingsResponse } from "./gen/bindingd/v1/bindings.js";
import { VarsService } from "./gen/bindingd/v1/vars.js";
import { D1Database } from "./d1.js";
import { KVNamespace } from "./kv.js";
import { Queue } from "./queue.js";
import { R2Bucket } from "./r2.js";
import { type ConnectOptions, Transport, resolveEndpoint } from "./transport.js";

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

async function buildEnv<E extends object>(transport: Transport): Promise<E & EnvHandle> {
  const listing: ListBindingsResponse = await transport.unary(BindingsService.list, {});
  const { values } = await transport.unary(VarsService.getAll, {});
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
 * working directory); a TCP endpoint also needs the token (`BINDINGD_TOKEN` or
 * `.bindingd/token`). Throws DaemonUnavailable when there is no daemon to talk to.
 */
export async function connect<E extends object = Bindings>(options: ConnectOptions = {}): Promise<E & EnvHandle> {
  const { target, token } = resolveEndpoint(options);
  const transport = new Transport(target, token);
  try {
    return await buildEnv<E>(transport);
  } catch (error) {
    transport.close();
    throw error;
  }
}
