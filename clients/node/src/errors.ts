/**
 * Errors thrown by the client: one class per daemon error reason, all under BindingError.
 *
 * The daemon attaches a google.rpc.ErrorInfo (domain "bindingd") to every failure; its reason
 * picks the class, so worker code catches `BackendUnavailable` rather than inspecting gRPC
 * codes. The class names are the Python client's. No gRPC error leaves the public API.
 */
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { RpcErrorInfo, RpcStatus } from "./gen/bindingd/v1/rpc_status.js";
import { ERROR_DOMAIN, ERROR_INFO_TYPE, STATUS_DETAILS_KEY } from "./wire.js";

export const START_HINT = 'start it with "bindingd serve" or run your command under "bindingd run -- ..."';

export interface BindingErrorOptions {
  reason?: string;
  binding?: string | null;
  env?: string | null;
  backend?: string | null;
  requestId?: string | null;
  /** The gRPC status code name (e.g. "NOT_FOUND"); null for client-side errors. */
  code?: string | null;
}

/** Base of every client error; `message` is the daemon's message. */
export class BindingError extends Error {
  static readonly defaultReason: string = "UNKNOWN";
  readonly reason: string;
  readonly binding: string | null;
  readonly env: string | null;
  readonly backend: string | null;
  readonly requestId: string | null;
  readonly code: string | null;

  constructor(message = "", options: BindingErrorOptions = {}) {
    super(message);
    const own = new.target as unknown as typeof BindingError;
    this.name = new.target.name;
    this.reason = options.reason ?? own.defaultReason;
    this.binding = options.binding ?? null;
    this.env = options.env ?? null;
    this.backend = options.backend ?? null;
    this.requestId = options.requestId ?? null;
    this.code = options.code ?? null;
  }
}

export class BindingNotFound extends BindingError {
  static override readonly defaultReason: string = "BINDING_NOT_FOUND";
}
export class WrongBindingType extends BindingError {
  static override readonly defaultReason: string = "WRONG_BINDING_TYPE";
}
export class AuthenticationFailed extends BindingError {
  static override readonly defaultReason: string = "AUTH_FAILED";
}
export class PermissionDenied extends BindingError {
  static override readonly defaultReason: string = "PERMISSION_DENIED";
}
export class BackendUnavailable extends BindingError {
  static override readonly defaultReason: string = "BACKEND_UNAVAILABLE";
}
export class BackendTimeout extends BindingError {
  static override readonly defaultReason: string = "BACKEND_TIMEOUT";
}
export class PreconditionFailed extends BindingError {
  static override readonly defaultReason: string = "PRECONDITION_FAILED";
}
export class InvalidArgument extends BindingError {
  static override readonly defaultReason: string = "INVALID_ARGUMENT";
}
export class SqlError extends BindingError {
  static override readonly defaultReason: string = "SQL_ERROR";
}
/** The env is served through a gateway and this machine has no session there. */
export class NotLoggedIn extends BindingError {
  static override readonly defaultReason: string = "NOT_LOGGED_IN";
}
/** The gateway session expired and could not be refreshed (the daemon retries once first). */
export class SessionExpired extends BindingError {
  static override readonly defaultReason: string = "SESSION_EXPIRED";
}
export class TokenRevoked extends BindingError {
  static override readonly defaultReason: string = "TOKEN_REVOKED";
}
/** The gateway's policy does not grant the action; a PermissionDenied too. */
export class PolicyDenied extends PermissionDenied {
  static override readonly defaultReason: string = "POLICY_DENIED";
}
export class InternalError extends BindingError {
  static override readonly defaultReason: string = "INTERNAL";
}
/** No daemon was found or it cannot be reached (as opposed to a backend behind it). */
export class DaemonUnavailable extends BindingError {
  static override readonly defaultReason: string = "DAEMON_UNAVAILABLE";
}

/**
 * The daemon found serves another env than the one asked for (`connect({ env })` or
 * `BINDINGD_ENV`). Thrown by the client, never sent by the daemon; a DaemonUnavailable, since
 * no daemon serving the env asked for could be reached.
 */
export class WrongEnv extends DaemonUnavailable {
  static override readonly defaultReason: string = "WRONG_ENV";
}

type ErrorClass = typeof BindingError;

export const REASONS: ReadonlyMap<string, ErrorClass> = new Map(
  [
    BindingNotFound,
    WrongBindingType,
    AuthenticationFailed,
    PermissionDenied,
    BackendUnavailable,
    BackendTimeout,
    PreconditionFailed,
    InvalidArgument,
    SqlError,
    NotLoggedIn,
    SessionExpired,
    TokenRevoked,
    PolicyDenied,
    InternalError,
    DaemonUnavailable,
  ].map((cls) => [cls.defaultReason, cls as ErrorClass]),
);

// Statuses without an ErrorInfo come from gRPC itself (or a proxy), not from a bindingd service.
const BY_CODE: ReadonlyMap<number, ErrorClass> = new Map<number, ErrorClass>([
  [status.UNAVAILABLE, DaemonUnavailable],
  [status.CANCELLED, DaemonUnavailable], // the daemon stopping (or overloaded) cancelled the call
  [status.RESOURCE_EXHAUSTED, InvalidArgument], // a message over the channel's size limit
  [status.UNAUTHENTICATED, AuthenticationFailed],
]);

function codeName(code: number | undefined): string {
  if (code === undefined) return "UNKNOWN";
  return (status as unknown as Record<number, string>)[code] ?? String(code);
}

/** The error for a daemon that cannot be reached, saying how to start one. */
export function daemonUnavailable(endpoint: string | null, detail?: string): DaemonUnavailable {
  const where = endpoint ? ` at ${endpoint}` : "";
  const why = detail ? ` (${detail})` : "";
  return new DaemonUnavailable(`cannot connect to bindingd${where}${why}; ${START_HINT}`, {
    code: "UNAVAILABLE",
  });
}

function errorInfo(metadata: Metadata | undefined): RpcErrorInfo | null {
  const values = metadata?.get(STATUS_DETAILS_KEY) ?? [];
  for (const value of values) {
    let decoded: RpcStatus;
    try {
      decoded = RpcStatus.decode(typeof value === "string" ? Buffer.from(value, "latin1") : value);
    } catch {
      return null;
    }
    for (const detail of decoded.details) {
      if (detail.typeUrl !== ERROR_INFO_TYPE) continue;
      try {
        const info = RpcErrorInfo.decode(detail.value);
        if ((info.domain === ERROR_DOMAIN || info.domain === "") && info.reason) return info;
      } catch {
        continue;
      }
    }
  }
  return null;
}

/** Translate a failed gRPC call; `endpoint` only improves the message when no daemon answers. */
export function errorFromRpc(error: Partial<ServiceError>, endpoint: string | null): BindingError {
  const name = codeName(error.code);
  const message = error.details ?? "";
  const info = errorInfo(error.metadata);
  if (info !== null) {
    const cls = REASONS.get(info.reason) ?? BindingError;
    const meta = info.metadata;
    return new cls(message || `${info.reason} (${name})`, {
      reason: info.reason,
      binding: meta["binding"] || null,
      env: meta["env"] || null,
      backend: meta["backend"] || null,
      requestId: meta["request_id"] || null,
      code: name,
    });
  }
  const cls = error.code === undefined ? undefined : BY_CODE.get(error.code);
  if (error.code === status.CANCELLED) {
    // The daemon answered: it is there, so "cannot connect ... start it" would mislead.
    const where = endpoint ? ` at ${endpoint}` : "";
    return new DaemonUnavailable(
      `bindingd${where} cancelled the call before answering (it is stopping, or has too many calls ` +
        `in flight); retry it, and if the daemon stopped, ${START_HINT}`,
      { code: name },
    );
  }
  if (cls === DaemonUnavailable) return daemonUnavailable(endpoint, message || undefined);
  if (cls === undefined) return new BindingError(message || name, { reason: name, code: name });
  const text =
    cls === AuthenticationFailed && !message
      ? "the daemon refused the token; check BINDINGD_TOKEN or .bindingd/token"
      : message || name;
  return new cls(text, { code: name });
}
