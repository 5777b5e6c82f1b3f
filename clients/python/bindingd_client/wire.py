"""What the daemon and its clients agree on besides the ``.proto`` files: metadata names, limits,
the endpoint forms and the encoding of an object body chunk.

This module is public so that the daemon (the ``bindingd`` package) can share it: the daemon
imports only public names of ``bindingd_client``. The Node client's ``src/wire.ts`` holds the
same values; its tests compare the two.
"""

from __future__ import annotations

from .proto import objects_pb2

__all__ = [
    "AUTHORIZATION",
    "BEARER",
    "CHUNK_BYTES",
    "CHUNK_FIELD",
    "CHUNK_HEAD_BYTES",
    "ERROR_DOMAIN",
    "ERROR_INFO_TYPE",
    "HEADER_ACCEPTED",
    "HTTP_FIELDS",
    "MAX_MESSAGE_BYTES",
    "STATUS_DETAILS_KEY",
    "chunk_head",
    "chunk_message",
    "chunk_view",
    "normalize_endpoint",
]

# --- metadata ------------------------------------------------------------------------------------

# Initial metadata by which the daemon accepts the header of a client stream (an object put or
# part upload), before the client sends the body: a refusal then arrives as its own status.
HEADER_ACCEPTED = "x-bindingd-header-accepted"
# A TCP listener wants `authorization: Bearer <token>`; a unix socket is guarded by its mode.
AUTHORIZATION = "authorization"
BEARER = "Bearer "
# Every failure carries a google.rpc.ErrorInfo of this domain in the standard status trailer.
ERROR_DOMAIN = "bindingd"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"

# --- limits --------------------------------------------------------------------------------------

# Both ends set gRPC's message limits to this: KV values are <= 25 MiB; leave room for the envelope.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# An object body travels in chunks of at most this many bytes, both ways.
CHUNK_BYTES = 1024 * 1024

# --- objects -------------------------------------------------------------------------------------

# The fields of ObjectHttpMetadata (the R2 http metadata), in the order R2 lists them.
HTTP_FIELDS = (
    "content_type",
    "content_language",
    "content_disposition",
    "content_encoding",
    "cache_control",
    "cache_expiry",
)

# A put, upload-part or get message holding a body chunk and nothing else is, serialized, one tag
# (field `chunk`, the same number in all three, length-delimited), the chunk's length as a varint,
# then the chunk. Building or cutting out those bytes directly costs one copy of the chunk, where
# a message and its serialization (or parsing and reading the field) cost two.
CHUNK_FIELD = objects_pb2.ObjectsPutRequest.DESCRIPTOR.fields_by_name["chunk"].number
_CHUNK_TAG = CHUNK_FIELD << 3 | 2
CHUNK_HEAD_BYTES = 4  # room for the tag and a varint up to 2**21 - 1 > CHUNK_BYTES


def chunk_head(length: int) -> bytes:
    """The bytes before a chunk of `length` bytes in its message: the tag and the varint length."""
    head = bytearray([_CHUNK_TAG])
    while length >= 0x80:
        head.append(length & 0x7F | 0x80)
        length >>= 7
    head.append(length)
    return bytes(head)


def chunk_message(chunk: bytes | bytearray | memoryview) -> bytes:
    """A put or upload-part request, or a get response, holding `chunk` (at most CHUNK_BYTES),
    serialized."""
    return b"".join((chunk_head(len(chunk)), chunk))


def chunk_view(raw: bytes) -> memoryview | None:
    """The chunk of a serialized message that holds the chunk field alone, as a view into `raw`;
    None for any other message (decode that one as usual). The view equals what decoding the
    message and reading its chunk would give."""
    if not raw or raw[0] != _CHUNK_TAG:
        return None
    length = shift = 0
    for pos in range(1, min(len(raw), 11)):  # a varint is at most 10 bytes
        byte = raw[pos]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return memoryview(raw)[pos + 1 :] if pos + 1 + length == len(raw) else None
        shift += 7
    return None


# --- endpoints -----------------------------------------------------------------------------------


def normalize_endpoint(endpoint: str) -> tuple[str, bool]:
    """The gRPC target for an endpoint as the daemon writes it (``.bindingd/endpoint``,
    ``BINDINGD_ENDPOINT``) or a user gives it, and whether it is TCP (which needs the token)."""
    from .errors import DaemonUnavailable  # here: errors imports this module's error constants

    endpoint = endpoint.strip()
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
        return f"unix://{path}", False
    if endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
        return (f"unix://{path}" if path.startswith("/") else endpoint), False
    if endpoint.startswith("/"):
        return f"unix://{endpoint}", False
    if endpoint.startswith("unix-abstract:"):
        return endpoint, False
    for scheme in ("tcp://", "grpc://", "http://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :].rstrip("/")
            break
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DaemonUnavailable(
            f"bindingd endpoint {endpoint!r} is not valid: expected unix:///abs/path, /abs/path or host:port"
        )
    return endpoint, True
