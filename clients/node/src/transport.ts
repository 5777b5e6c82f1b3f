/**
 * Finding the daemon and talking to it. Bindings never touch gRPC directly: they pass a method
 * definition from the generated code (path, serializer, deserializer) and a request to one of
 * the four call shapes here, and every gRPC failure is translated by `errorFromRpc`.
 */
import {
  type Stats,
  closeSync,
  constants as fsConstants,
  fstatSync,
  lstatSync,
  openSync,
  readFileSync,
  statSync,
} from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import {
  type CallOptions,
  Client,
  type ClientDuplexStream,
  credentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import { BindingError, DaemonUnavailable, START_HINT, errorFromRpc } from "./errors.js";
import { AUTHORIZATION, BEARER, HEADER_ACCEPTED, MAX_MESSAGE_BYTES } from "./wire.js";

export const ENDPOINT_ENV = "BINDINGD_ENDPOINT";
export const TOKEN_ENV = "BINDINGD_TOKEN";
const STATE_DIR = ".bindingd";
const CONFIG_FILE = "bindingd.yaml";
// A project's root holds one of these (a Workers project may have only its wrangler file).
const PROJECT_FILES = [CONFIG_FILE, "wrangler.json", "wrangler.jsonc", "wrangler.toml"];
const VERSION = "0.1.0";

/** One RPC of the generated service definitions: all a transport needs to make the call. */
export interface MethodDefinition<Req, Res> {
  readonly path: string;
  readonly requestSerialize: (value: Req) => Buffer;
  readonly responseDeserialize: (value: Buffer) => Res;
}

export interface ConnectOptions {
  /** `unix:///abs/path`, `/abs/path` or `host:port`; default `BINDINGD_ENDPOINT`, then `.bindingd/endpoint`. */
  endpoint?: string;
  /** The bearer token for a TCP endpoint given by `endpoint` or `BINDINGD_ENDPOINT`; default
   * `BINDINGD_TOKEN`, then the project's `.bindingd/token` if its daemon listens there. */
  token?: string;
  /** Where to start looking for `.bindingd/endpoint` (up to the project's root); default the working directory. */
  cwd?: string;
}

/** Whether a file or folder is this user's own and others cannot write it. */
function trusted(info: Stats): boolean {
  return info.uid === process.getuid!() && (info.mode & 0o022) === 0;
}

/** Why `path` is not used: someone else could have written it (a planted endpoint would
 * receive this project's calls, and with them its token). */
function untrusted(path: string, info: Stats, what: string): DaemonUnavailable {
  const why =
    info.uid !== process.getuid!()
      ? `it belongs to uid ${info.uid}, not to you (uid ${process.getuid!()})`
      : `others may write to it (mode ${(info.mode & 0o7777).toString(8)})`;
  return new DaemonUnavailable(
    `not using ${path}: ${why}, so it may not be your daemon's ${what}; remove it, or set ${ENDPOINT_ENV}; ${START_HINT}`,
  );
}

/** `directory/.bindingd` if there is one, after checking that it is this user's own folder. */
function stateDir(directory: string): string | null {
  const path = join(directory, STATE_DIR);
  let info: Stats;
  try {
    info = lstatSync(path);
  } catch {
    return null;
  }
  if (!info.isDirectory()) return null; // a file or symlink named .bindingd is no daemon's
  if (!trusted(info)) throw untrusted(path, info, "state folder");
  return path;
}

/**
 * The trimmed text of `path`, null if it is missing or not a regular file; throws when it is
 * someone else's or writable by others. Opened without following a symlink and checked on the
 * open file, so it cannot be swapped between the check and the read.
 */
function readTrusted(path: string, what: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    if (code === "ELOOP") throw new DaemonUnavailable(`not using ${path}: it is a symlink; ${START_HINT}`);
    throw new DaemonUnavailable(`cannot read ${path}: ${code ?? String(error)}; ${START_HINT}`);
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) return null;
    if (!trusted(info)) throw untrusted(path, info, what);
    return readFileSync(fd, "utf8").trim();
  } finally {
    closeSync(fd);
  }
}

/**
 * The nearest `.bindingd` folder from `start` upwards, not above the project's root (the folder
 * of `bindingd.yaml` or a wrangler file): a folder outside the project is not this project's daemon.
 */
function projectState(start: string): string | null {
  let directory = resolve(start);
  for (;;) {
    const state = stateDir(directory);
    if (state !== null || PROJECT_FILES.some((name) => isFile(join(directory, name)))) return state;
    const parent = dirname(directory);
    if (parent === directory) return null;
    directory = parent;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** A token worth sending: a blank one never is (the daemon refuses it anyway). */
function cleanToken(token: string | null | undefined): string | null {
  return token?.trim() || null;
}

/** The project's token, if its daemon says (in `.bindingd/listen`) that it listens at `target`. */
function projectTokenFor(start: string, target: string): string | null {
  try {
    const state = projectState(start);
    if (state === null) return null;
    const listen = readTrusted(join(state, "listen"), "TCP address");
    if (!listen || normalizeEndpoint(listen).target !== target) return null;
    return cleanToken(readTrusted(join(state, "token"), "token"));
  } catch (error) {
    if (error instanceof DaemonUnavailable) return null; // the daemon's refusal will say what to do
    throw error;
  }
}

/** The gRPC target for an endpoint, and whether it is TCP (which needs the token). */
export function normalizeEndpoint(raw: string): { target: string; tcp: boolean } {
  let endpoint = raw.trim();
  if (endpoint.startsWith("unix://")) return { target: endpoint, tcp: false };
  if (endpoint.startsWith("unix:")) {
    const path = endpoint.slice("unix:".length);
    return { target: isAbsolute(path) ? `unix://${path}` : endpoint, tcp: false };
  }
  if (endpoint.startsWith("/")) return { target: `unix://${endpoint}`, tcp: false };
  if (endpoint.startsWith("unix-abstract:")) return { target: endpoint, tcp: false };
  for (const scheme of ["tcp://", "grpc://", "http://"]) {
    if (endpoint.startsWith(scheme)) {
      endpoint = endpoint.slice(scheme.length).replace(/\/+$/, "");
      break;
    }
  }
  const colon = endpoint.lastIndexOf(":");
  const host = endpoint.slice(0, colon);
  const port = endpoint.slice(colon + 1);
  if (colon < 0 || !host || !/^\d+$/.test(port)) {
    throw new DaemonUnavailable(
      `bindingd endpoint ${JSON.stringify(endpoint)} is not valid: expected unix:///abs/path, /abs/path or host:port`,
    );
  }
  return { target: endpoint, tcp: true };
}

/**
 * Where the daemon listens, as a gRPC target and the token. The endpoint is `options.endpoint`,
 * else `BINDINGD_ENDPOINT`, else the `.bindingd/endpoint` the daemon writes beside its config,
 * found by walking up but not past the project's root, and only from a folder and file of this
 * user's that others cannot write.
 *
 * A token goes only where it belongs, and only to TCP (a unix socket is protected by its mode):
 * `options.token` or `BINDINGD_TOKEN` to an endpoint given the same way; the project's
 * `.bindingd/token` to the endpoint in the `.bindingd/endpoint` beside it, or to the address in
 * `.bindingd/listen` beside it (written by the daemon while it listens there).
 */
export function resolveEndpoint(options: ConnectOptions = {}): { target: string; token: string | null } {
  const start = resolve(options.cwd ?? process.cwd());
  const raw = options.endpoint || process.env[ENDPOINT_ENV] || null;
  if (raw !== null) {
    const { target, tcp } = normalizeEndpoint(raw);
    if (!tcp) return { target, token: null };
    const token = cleanToken(options.token) ?? cleanToken(process.env[TOKEN_ENV]) ?? projectTokenFor(start, target);
    return { target, token };
  }
  const state = projectState(start);
  const found = state !== null ? readTrusted(join(state, "endpoint"), "endpoint") : null;
  if (found === null) {
    const where = state !== null ? `in ${state}` : `in ${start} or its parents (up to the project's root)`;
    throw new DaemonUnavailable(
      `no bindingd daemon found: ${ENDPOINT_ENV} is not set and there is no ${STATE_DIR}/endpoint ${where}; ${START_HINT}`,
    );
  }
  if (!found) throw new DaemonUnavailable(`${join(state!, "endpoint")} is empty; ${START_HINT}`);
  const { target, tcp } = normalizeEndpoint(found);
  if (!tcp) return { target, token: null };
  return { target, token: cleanToken(readTrusted(join(state!, "token"), "token")) };
}

/** A gRPC channel to the daemon with the four call shapes the bindings use. */
export class Transport {
  readonly target: string;
  private readonly client: Client;
  private readonly token: string | null;
  private closed = false;
  /** Streaming calls still open, so that `close()` can end them (a process would not exit). */
  private readonly open = new Set<{ cancel(): void }>();

  constructor(target: string, token: string | null) {
    this.target = target;
    this.token = token;
    this.client = new Client(target, credentials.createInsecure(), {
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.primary_user_agent": `bindingd-node/${VERSION}`,
      // Channelz (gRPC's introspection service, which this client never serves) otherwise
      // records counters and a trace for every call: about 3-5% of the client's CPU per small call.
      "grpc.enable_channelz": 0,
      // The daemon is always local (a unix socket or loopback TCP): an http(s)_proxy or
      // grpc_proxy from the environment must not route it, or see its bearer token.
      "grpc.enable_http_proxy": 0,
    });
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== null) metadata.set(AUTHORIZATION, `${BEARER}${this.token}`);
    return metadata;
  }

  private closedError(): BindingError {
    return new BindingError(`this bindingd connection (${this.target}) is closed`, { reason: "CLIENT_CLOSED" });
  }

  private checkOpen(): void {
    if (this.closed) throw this.closedError();
  }

  /** Remember a streaming call until it ends. */
  private track<C extends { cancel(): void; once(event: "status", listener: () => void): unknown }>(call: C): C {
    this.open.add(call);
    call.once("status", () => this.open.delete(call));
    return call;
  }

  private translate(error: unknown): unknown {
    if (error instanceof BindingError) return error;
    if (this.closed) return this.closedError(); // cancelled by close(), not lost by the daemon
    if (error !== null && typeof error === "object" && "code" in error) {
      return errorFromRpc(error as ServiceError, this.target);
    }
    return error;
  }

  /** One request, one response. */
  unary<Req, Res>(method: MethodDefinition<Req, Res>, request: Req, options: CallOptions = {}): Promise<Res> {
    this.checkOpen();
    return new Promise<Res>((resolvePromise, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        this.metadata(),
        options,
        (error, response) => {
          if (error) reject(this.translate(error));
          else resolvePromise(response as Res);
        },
      );
    });
  }

  /** The responses of a server-streaming RPC as they arrive; leaving the loop early cancels it. */
  async *stream<Req, Res>(method: MethodDefinition<Req, Res>, request: Req): AsyncGenerator<Res, void, undefined> {
    this.checkOpen();
    const call = this.track(
      this.client.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        this.metadata(),
      ),
    );
    yield* responses<Res>(call, (error) => this.translate(error));
  }

  /**
   * Send a client-streaming RPC's messages as `requests` yields them; return the answer.
   *
   * If `requests` throws, the call is cancelled (the daemon sees the stream break and keeps
   * nothing) and the error propagates. With `headerAck`, the rest of the stream waits until the
   * daemon has accepted the first message (a header) by sending HEADER_ACCEPTED in its initial
   * metadata, so a refusal arrives as its own status instead of racing with the body.
   */
  upload<Req, Res>(
    method: MethodDefinition<Req, Res>,
    requests: AsyncIterable<Req> | Iterable<Req>,
    options: { headerAck?: boolean } = {},
  ): Promise<Res> {
    this.checkOpen();
    let settle: { resolve: (value: Res) => void; reject: (error: unknown) => void };
    const answer = new Promise<Res>((resolvePromise, reject) => {
      settle = { resolve: resolvePromise, reject };
    });
    let answered = false;
    const call = this.track(
      this.client.makeClientStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        this.metadata(),
        {},
        (error, response) => {
          answered = true;
          if (error) settle.reject(this.translate(error));
          else settle.resolve(response as Res);
        },
      ),
    );
    const accepted = options.headerAck
      ? new Promise<boolean>((resolveAccepted) => {
          call.once("metadata", (metadata: Metadata) => {
            resolveAccepted(metadata.get(HEADER_ACCEPTED).includes("1"));
          });
          void answer.then(
            () => resolveAccepted(false),
            () => resolveAccepted(false),
          );
        })
      : null;
    // Backpressure: wait for the socket to take the buffered messages (or for the answer).
    const drainedOrAnswered = (): Promise<void> =>
      new Promise<void>((resolveDrain) => {
        const done = (): void => {
          call.off("drain", done);
          resolveDrain();
        };
        call.once("drain", done);
        answer.then(done, done);
      });
    const send = async (): Promise<void> => {
      let first = true;
      for await (const request of requests) {
        if (answered) return; // the daemon has answered (a refusal): its status is the answer
        const flushed = call.write(request);
        if (first && accepted !== null) {
          first = false;
          if (!(await accepted)) return;
        } else if (!flushed) {
          await drainedOrAnswered();
        }
      }
      if (!answered) call.end();
    };
    return send().then(
      () => answer,
      (error: unknown) => {
        call.cancel();
        // The cancel settles `answer` too; the caller sees the producer's error.
        answer.catch(() => undefined);
        throw error;
      },
    );
  }

  /** A bidirectional RPC: the caller writes requests, responses are read as they arrive. */
  duplex<Req, Res>(method: MethodDefinition<Req, Res>): DuplexCall<Req, Res> {
    this.checkOpen();
    const call = this.track(
      this.client.makeBidiStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        this.metadata(),
      ),
    );
    return new DuplexCall<Req, Res>(call, (error) => this.translate(error));
  }

  /** Close the channel, ending every call still open (their readers get CLIENT_CLOSED). */
  close(): void {
    if (!this.closed) {
      this.closed = true;
      for (const call of this.open) call.cancel();
      this.open.clear();
      this.client.close();
    }
  }
}

/** A bidirectional call: `write` requests, iterate responses, `end` or `cancel` when done. */
export class DuplexCall<Req, Res> implements AsyncIterable<Res> {
  constructor(
    private readonly call: ClientDuplexStream<Req, Res>,
    private readonly translate: (error: unknown) => unknown,
  ) {}

  write(request: Req): void {
    this.call.write(request);
  }

  end(): void {
    this.call.end();
  }

  cancel(): void {
    this.call.cancel();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Res, void, undefined> {
    return responses<Res>(this.call, this.translate);
  }
}

/**
 * The responses of a streaming call as they arrive, failures translated; a reader that stops
 * early (break, return, an exception in its loop) cancels the call.
 */
async function* responses<Res>(
  call: AsyncIterable<unknown> & { cancel(): void },
  translate: (error: unknown) => unknown,
): AsyncGenerator<Res, void, undefined> {
  let finished = false;
  try {
    for await (const response of call) yield response as Res;
    finished = true;
  } catch (error) {
    finished = true;
    throw translate(error);
  } finally {
    if (!finished) call.cancel();
  }
}
