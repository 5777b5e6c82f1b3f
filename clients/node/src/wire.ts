/**
 * What the daemon and its clients agree on besides the .proto files: metadata names, limits and
 * the error trailer. The same values as the Python client's `bindingd_client.wire`, which the
 * daemon uses; test/error-table.test.mjs compares the two.
 */

/** Initial metadata by which the daemon accepts the header of a client stream (a put or part
 * upload) before the body is sent: a refusal then arrives as its own status. */
export const HEADER_ACCEPTED = "x-bindingd-header-accepted";
/** A TCP listener wants `authorization: Bearer <token>`; a unix socket is guarded by its mode. */
export const AUTHORIZATION = "authorization";
export const BEARER = "Bearer ";
/** Every failure carries a google.rpc.ErrorInfo of this domain in the standard status trailer. */
export const ERROR_DOMAIN = "bindingd";
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
export const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";
/** Both ends set gRPC's message limits to this: KV values are <= 25 MiB; leave room for the envelope. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** An object body travels in chunks of at most this many bytes, both ways. */
export const CHUNK_BYTES = 1024 * 1024;
