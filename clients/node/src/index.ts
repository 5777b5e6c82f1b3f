/**
 * @bindingd/client: Workers binding types (KVNamespace, R2Bucket, D1Database, Queue) served by a
 * local bindingd daemon, so a Worker's data-access code runs unchanged in Node.
 */
export { connect, type Bindings, type EnvHandle } from "./env.js";
export { type ConnectOptions } from "./transport.js";
export {
  AuthenticationFailed,
  BackendTimeout,
  BackendUnavailable,
  BindingError,
  type BindingErrorOptions,
  BindingNotFound,
  DaemonUnavailable,
  InternalError,
  InvalidArgument,
  PermissionDenied,
  PreconditionFailed,
  SqlError,
  WrongBindingType,
} from "./errors.js";
export {
  KVNamespace,
  type KVNamespaceGetOptions,
  type KVNamespaceGetWithMetadataResult,
  type KVNamespaceListKey,
  type KVNamespaceListOptions,
  type KVNamespaceListResult,
  type KVNamespacePutOptions,
  type KVValueType,
} from "./kv.js";
