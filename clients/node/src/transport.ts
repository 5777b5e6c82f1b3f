/**
 * Finding the daemon and talking to it. Bindings never touch gRPC directly: they pass a method
 * definition from the generated code (path, serializer, deserializer) and a request to one of
 * the four call shapes here, and every gRPC failure is translated by `errorFromRpc`.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
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

export const ENDPOINT_ENV = "BINDINGD_ENDPOINT";
export const TOKEN_ENV = "BINDINGD_TOKEN";
const STATE_DIR = ".bindingd";
/** Initial metadata by which the daemon accepts the header of a client stream (see `upload`). */
export const HEADER_ACCEPTED = "x-bindingd-header-accepted";
/** KV values are <= 25 MiB; leave room for the envelope. Same as the Python client. */
const MAX_MESSAGE = 64 * 1024 * 1024;
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
  /** The bearer token for a TCP endpoint; default `BINDINGD_TOKEN`, then `.bindingd/token`. */
  token?: string;
  /** Where to start looking for `.bindingd/endpoint`; default the working directory. */
  cwd?: string;
}

function findUp(start: string, name: string): string | null {
  let directory = resolve(start);
  for (;;) {
    const candidate = join(directory, STATE_DIR, name);
    if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
    const parent = dirname(directory);
    if (parent === directory) return null;
    directory = parent;
  }
}

function readTrimmed(path: string): string {
  try {
    return readFileSync(path, "utf8").trim();
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new DaemonUnavailable(`cannot read ${path}: ${why}; ${START_HINT}`);
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
 * Where the daemon listens, as a gRPC target and the token (only for TCP: a unix socket is
 * protected by its mode). Order: the options, then the environment variables, then the
 * `.bindingd/endpoint` (and `.bindingd/token`) the daemon writes, found by walking up.
 */
export function resolveEndpoint(options: ConnectOptions = {}): { target: string; token: string | null } {
  const start = resolve(options.cwd ?? process.cwd());
  let endpointDir: string | null = null;
  let raw = options.endpoint || process.env[ENDPOINT_ENV] || null;
  if (raw === null) {
    const found = findUp(start, "endpoint");
    if (found === null) {
      throw new DaemonUnavailable(
        `no bindingd daemon found: ${ENDPOINT_ENV} is not set and there is no ` +
          `${STATE_DIR}/endpoint in ${start} or its parents; ${START_HINT}`,
      );
    }
    raw = readTrimmed(found);
    if (!raw) throw new DaemonUnavailable(`${found} is empty; ${START_HINT}`);
    endpointDir = dirname(found);
  }
  const { target, tcp } = normalizeEndpoint(raw);
  if (!tcp) return { target, token: null };
  let token = options.token || process.env[TOKEN_ENV] || null;
  if (token === null) {
    // Prefer the token beside the endpoint file that named this daemon.
    let tokenFile = endpointDir !== null ? join(endpointDir, "token") : null;
    if (tokenFile === null || !existsSync(tokenFile)) tokenFile = findUp(start, "token");
    if (tokenFile !== null) token = readTrimmed(tokenFile) || null;
  }
  return { target, token };
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
      "grpc.max_send_message_length": MAX_MESSAGE,
      "grpc.max_receive_message_length": MAX_MESSAGE,
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
    if (this.token !== null) metadata.set("authorization", `Bearer ${this.token}`);
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
