/**
 * @bindingd/client: Workers binding types (KVNamespace, R2Bucket, D1Database, Queue) served by a
 * local bindingd daemon, so a Worker's data-access code runs unchanged in Node.
 */
export { connect, type Bindings, type EnvConnectOptions, type EnvHandle } from "./env.js";
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
  NotLoggedIn,
  PermissionDenied,
  PolicyDenied,
  PreconditionFailed,
  SessionExpired,
  SqlError,
  TokenRevoked,
  WrongBindingType,
  WrongEnv,
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
export {
  D1Database,
  D1DatabaseSession,
  type D1ExecResult,
  type D1Meta,
  D1PreparedStatement,
  type D1Response,
  type D1Result,
  type D1SessionBookmark,
  type D1SessionConstraint,
} from "./sql.js";
export {
  consume,
  Message,
  MessageBatch,
  type MessageBatchMetadata,
  type MessageSendRequest,
  Queue,
  type QueueConsumeOptions,
  type QueueConsumerOptions,
  type QueueContentType,
  type QueueHandler,
  type QueueMetrics,
  type QueueRetryOptions,
  type QueueSendBatchOptions,
  type QueueSendBatchResponse,
  type QueueSendOptions,
  type QueueSendResponse,
} from "./queue.js";
export {
  R2Bucket,
  R2Checksums,
  R2MultipartUpload,
  R2Object,
  R2ObjectBody,
  type R2Conditional,
  type R2GetOptions,
  type R2HTTPMetadata,
  type R2ListOptions,
  type R2MultipartOptions,
  type R2Objects,
  type R2PutOptions,
  type R2PutValue,
  type R2Range,
  type R2StringChecksums,
  type R2UploadedPart,
  type R2UploadPartOptions,
} from "./objects.js";
