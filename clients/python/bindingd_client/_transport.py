"""Finding the daemon and talking to it: one interface, an asyncio and a blocking implementation.

Bindings never touch gRPC: they build a :class:`Call` (method name, request, parser) with pure
functions and hand it to a transport, so each binding API is written once and the sync flavour
is a thin wrapper. Every ``grpc.RpcError`` is translated here by :func:`error_from_rpc`.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf import descriptor_pool, message_factory

from ._version import __version__
from .errors import START_HINT, BindingError, DaemonUnavailable, error_from_rpc
from .proto import (
    bindings_pb2_grpc,
    database_pb2_grpc,
    kv_pb2_grpc,
    objects_pb2,
    objects_pb2_grpc,
    queue_pb2_grpc,
    vars_pb2_grpc,
)
from .wire import AUTHORIZATION, BEARER, HEADER_ACCEPTED, MAX_MESSAGE_BYTES, normalize_endpoint

__all__ = ["AsyncTransport", "Call", "SyncTransport", "resolve_endpoint"]

T = TypeVar("T")

ENDPOINT_ENV = "BINDINGD_ENDPOINT"
TOKEN_ENV = "BINDINGD_TOKEN"
STATE_DIR = ".bindingd"
CONFIG_FILE = "bindingd.yaml"
# A project's root holds one of these (a Workers project may have only its wrangler file).
PROJECT_FILES = (CONFIG_FILE, "wrangler.json", "wrangler.jsonc", "wrangler.toml")

_STUBS: dict[str, Callable[[Any], Any]] = {
    "Bindings": bindings_pb2_grpc.BindingsStub,
    "Database": database_pb2_grpc.DatabaseStub,
    "KV": kv_pb2_grpc.KVStub,
    "Objects": objects_pb2_grpc.ObjectsStub,
    "Queue": queue_pb2_grpc.QueueStub,
    "Vars": vars_pb2_grpc.VarsStub,
}


def _serialize(request: Any) -> bytes:
    """A request message, or one already serialized (an object's body chunk: see objects.py)."""
    return request if isinstance(request, bytes) else request.SerializeToString()


def _custom_callable(channel: Any, kind: str, name: str) -> Any:
    """Method `name` ("Service.Method") of `channel` with its own message handling: "upload" (a
    client-streaming method) takes requests as messages or as their serialized bytes; "raw" (a
    server-streaming one) yields its responses as received, for the caller to decode."""
    service, _, rpc = name.partition(".")
    found = descriptor_pool.Default().FindServiceByName(f"{objects_pb2.DESCRIPTOR.package}.{service}")
    method = found.methods_by_name[rpc]
    path = f"/{found.full_name}/{rpc}"
    if kind == "upload":
        response_class = message_factory.GetMessageClass(method.output_type)
        return channel.stream_unary(
            path,
            request_serializer=_serialize,
            response_deserializer=response_class.FromString,
            _registered_method=True,  # as the generated stubs do
        )
    request_class = message_factory.GetMessageClass(method.input_type)
    return channel.unary_stream(
        path,
        request_serializer=request_class.SerializeToString,
        response_deserializer=None,
        _registered_method=True,
    )


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One unary RPC, described without doing it: ``method`` is ``"Service.Method"``."""

    method: str
    request: Any
    parse: Callable[[Any], T]


def _untrusted(path: Path, info: os.stat_result, what: str) -> DaemonUnavailable:
    """Why `path` is not used: someone else could have written it (a planted endpoint would
    receive this project's calls, and with them its token)."""
    if info.st_uid != os.getuid():
        why = f"it belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    else:
        why = f"others may write to it (mode {stat.S_IMODE(info.st_mode):o})"
    return DaemonUnavailable(
        f"not using {path}: {why}, so it may not be your daemon's {what}; remove it, or set "
        f"{ENDPOINT_ENV}; {START_HINT}"
    )


def _trusted(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _state_dir(directory: Path) -> Path | None:
    """``directory/.bindingd`` if there is one, after checking that it is this user's own folder."""
    path = directory / STATE_DIR
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None  # a file or symlink named .bindingd is no daemon's
    if not _trusted(info):
        raise _untrusted(path, info, "state folder")
    return path


def _read_trusted(path: Path, what: str) -> str | None:
    """The stripped text of `path`, None if it is missing or not a regular file; raises when it is
    someone else's or writable by others. Opened without following a symlink, and checked on the
    open file, so it cannot be swapped between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if path.is_symlink():
            raise DaemonUnavailable(f"not using {path}: it is a symlink; {START_HINT}") from None
        raise DaemonUnavailable(f"cannot read {path}: {exc.strerror or exc}; {START_HINT}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if not _trusted(info):
            raise _untrusted(path, info, what)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)


def _project_state(start: Path) -> Path | None:
    """The nearest ``.bindingd`` folder from `start` upwards, not above the project's root (the
    folder of ``bindingd.yaml`` or a wrangler file): a folder outside the project is not this
    project's daemon."""
    for directory in (start, *start.parents):
        state = _state_dir(directory)
        if state is not None or any((directory / name).is_file() for name in PROJECT_FILES):
            return state
    return None


def _clean_token(token: str | None) -> str | None:
    """A token worth sending: a blank one never is (the daemon refuses it anyway)."""
    return (token.strip() or None) if token else None


def _project_token_for(start: Path, target: str) -> str | None:
    """The project's token, if its daemon says (in ``.bindingd/listen``) that it listens at `target`."""
    try:
        state = _project_state(start)
        if state is None:
            return None
        listen = _read_trusted(state / "listen", "TCP address")
        if not listen or normalize_endpoint(listen)[0] != target:
            return None
        return _clean_token(_read_trusted(state / "token", "token"))
    except DaemonUnavailable:
        return None  # no token of ours to send there: the daemon's refusal will say what to do


def resolve_endpoint(
    endpoint: str | None = None, token: str | None = None, cwd: str | os.PathLike[str] | None = None
) -> tuple[str, str | None]:
    """Where the daemon listens, as ``(grpc target, token or None)``.

    The endpoint is the argument, else ``BINDINGD_ENDPOINT``, else the ``.bindingd/endpoint`` the
    daemon writes beside its config, found by walking up from ``cwd`` but not past the project's
    root, and only from a folder and file of this user's that others cannot write.

    A token goes only where it belongs, and only to TCP (a unix socket is protected by its mode):
    the argument or ``BINDINGD_TOKEN`` to an endpoint given the same way (argument or
    ``BINDINGD_ENDPOINT``); the project's ``.bindingd/token`` to the endpoint in the
    ``.bindingd/endpoint`` beside it, or to the address in ``.bindingd/listen`` beside it (written
    by the daemon while it listens there).
    """
    start = Path(cwd if cwd is not None else os.getcwd()).absolute()
    raw = endpoint or os.environ.get(ENDPOINT_ENV) or None
    if raw is not None:
        target, is_tcp = normalize_endpoint(raw)
        if not is_tcp:
            return target, None
        tok = _clean_token(token) or _clean_token(os.environ.get(TOKEN_ENV))
        if tok is None:
            tok = _project_token_for(start, target)
        return target, tok
    state = _project_state(start)
    found = _read_trusted(state / "endpoint", "endpoint") if state is not None else None
    if found is None:
        where = f"in {state}" if state else f"in {start} or its parents (up to the project's root)"
        raise DaemonUnavailable(
            f"no bindingd daemon found: {ENDPOINT_ENV} is not set and there is no "
            f"{STATE_DIR}/endpoint {where}; {START_HINT}"
        )
    if not found:
        raise DaemonUnavailable(f"{state / 'endpoint'} is empty; {START_HINT}")
    target, is_tcp = normalize_endpoint(found)
    if not is_tcp:
        return target, None
    assert state is not None
    return target, _clean_token(_read_trusted(state / "token", "token"))


def _channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.primary_user_agent", f"bindingd-python/{__version__}"),
    ]


def _closed_error(target: str) -> BindingError:
    return BindingError(f"this bindingd connection ({target}) is closed", reason="CLIENT_CLOSED")


class _TransportBase:
    """What both transports share: the target, the auth metadata and the method table."""

    def __init__(self, target: str, token: str | None) -> None:
        self.target = target
        self._metadata: tuple[tuple[str, str], ...] | None = (
            ((AUTHORIZATION, f"{BEARER}{token}"),) if token else None
        )
        self._methods: dict[str, Any] = {}
        self._custom: dict[tuple[str, str], Any] = {}
        self._closed = False

    def _method(self, channel: Any, name: str) -> Any:
        method = self._methods.get(name)
        if method is None:
            service, _, rpc = name.partition(".")
            method = getattr(_STUBS[service](channel), rpc)
            self._methods[name] = method
        return method

    def _custom_method(self, channel: Any, kind: str, name: str) -> Any:
        method = self._custom.get((kind, name))
        if method is None:
            method = self._custom[kind, name] = _custom_callable(channel, kind, name)
        return method


class AsyncTransport(_TransportBase):
    """A ``grpc.aio`` channel; create it inside the event loop that will use it."""

    def __init__(self, target: str, token: str | None = None) -> None:
        super().__init__(target, token)
        self._channel = grpc.aio.insecure_channel(target, options=_channel_options())

    async def unary(self, method: str, request: Any) -> Any:
        if self._closed:
            raise _closed_error(self.target)
        try:
            return await self._method(self._channel, method)(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None

    async def call(self, call: Call[T]) -> T:
        return call.parse(await self.unary(call.method, call.request))

    async def stream(self, method: str, request: Any, *, raw: bool = False) -> AsyncIterator[Any]:
        """The responses of a server-streaming RPC, as they arrive (with `raw`, as serialized
        bytes). Stopping early cancels it."""
        if self._closed:
            raise _closed_error(self.target)
        call = (
            self._custom_method(self._channel, "raw", method) if raw else self._method(self._channel, method)
        )
        rpc = call(request, metadata=self._metadata)
        try:
            async for response in rpc:
                yield response
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None
        finally:
            rpc.cancel()

    async def upload(
        self, method: str, requests: AsyncIterable[Any] | Iterable[Any], *, header_ack: bool = False
    ) -> Any:
        """Send a client-streaming RPC's messages as `requests` yields them; return the answer.
        A request may also be given already serialized, as bytes.

        If `requests` raises, the call is cancelled (the daemon sees the stream break and keeps
        nothing) and the exception propagates. With `header_ack`, the rest of the stream waits
        until the daemon has accepted the first message (a header) by sending initial metadata
        with HEADER_ACCEPTED: a refusal then arrives as its own status rather than racing with
        the body (grpc reports a write into a call the server has ended as INTERNAL).
        """
        if self._closed:
            raise _closed_error(self.target)
        rpc = self._custom_method(self._channel, "upload", method)(metadata=self._metadata)
        try:
            waiting = header_ack
            try:
                async for request in _aiter(requests):
                    await rpc.write(request)
                    if waiting:
                        waiting = False
                        if (HEADER_ACCEPTED, "1") not in tuple(await rpc.initial_metadata() or ()):
                            return await rpc  # refused: raises its status
                await rpc.done_writing()
            except asyncio.InvalidStateError:
                pass  # the daemon answered before the stream ended: its status is the answer
            return await rpc
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None
        except BaseException:
            rpc.cancel()
            raise

    async def duplex(self, method: str, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """A bidirectional RPC: `requests` is sent in the background, responses are yielded."""
        if self._closed:
            raise _closed_error(self.target)
        rpc = self._method(self._channel, method)(requests, metadata=self._metadata)
        try:
            async for response in rpc:
                yield response
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None
        finally:
            rpc.cancel()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._channel.close()


async def _aiter(requests: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


class SyncTransport(_TransportBase):
    """A blocking gRPC channel; safe to share between threads."""

    def __init__(self, target: str, token: str | None = None) -> None:
        super().__init__(target, token)
        self._channel = grpc.insecure_channel(target, options=_channel_options())

    def unary(self, method: str, request: Any) -> Any:
        if self._closed:
            raise _closed_error(self.target)
        try:
            return self._method(self._channel, method)(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None

    def call(self, call: Call[T]) -> T:
        return call.parse(self.unary(call.method, call.request))

    def stream(self, method: str, request: Any, *, raw: bool = False) -> Iterator[Any]:
        """The responses of a server-streaming RPC, as they arrive (with `raw`, as serialized
        bytes). Stopping early cancels it."""
        if self._closed:
            raise _closed_error(self.target)
        call = (
            self._custom_method(self._channel, "raw", method) if raw else self._method(self._channel, method)
        )
        rpc = call(request, metadata=self._metadata)
        try:
            yield from rpc
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None
        finally:
            rpc.cancel()

    def duplex(self, method: str, requests: Iterator[Any], timeout: float | None = None) -> Iterator[Any]:
        """A bidirectional RPC: grpc sends `requests` from its own thread, responses are yielded.
        `timeout` ends the whole call (DEADLINE_EXCEEDED) after that many seconds."""
        if self._closed:
            raise _closed_error(self.target)
        rpc = self._method(self._channel, method)(requests, metadata=self._metadata, timeout=timeout)
        try:
            yield from rpc
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None
        finally:
            rpc.cancel()

    def upload(self, method: str, requests: Iterable[Any]) -> Any:
        """Send a client-streaming RPC's messages as `requests` yields them; return the answer.
        A request may also be given already serialized, as bytes.

        If `requests` raises, grpc cancels the call (the daemon keeps nothing) and the exception
        propagates.
        """
        if self._closed:
            raise _closed_error(self.target)
        try:
            return self._custom_method(self._channel, "upload", method)(
                iter(requests), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, endpoint=self.target) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()
