"""The HTTP listeners: `http.sock` beside the gRPC socket, and loopback TCP beside `--listen`.

Routing: `/objects/...` to the object endpoint, everything else to the Connect handler (whose
routes are the proto methods). On TCP every request needs the bearer token, checked before its
body is read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from aiohttp import web
from bindingd_client.proto import objects_pb2
from bindingd_client.wire import MAX_MESSAGE_BYTES

from bindingd.server.http import ConnectHandler, HttpContext, abort_of, error_response, token_error, token_ok
from bindingd.server.http_objects import PREFIX, ObjectsHandler
from bindingd.server.objects import ObjectsService

HTTP_SOCKET = "http.sock"
GRPC_SOCKET = "bindingd.sock"
# An idle keep-alive connection is closed after this long (a client reconnects).
KEEPALIVE_S = 75.0


def http_socket_path(grpc_socket: Path) -> Path:
    """`.bindingd/http.sock` beside `.bindingd/bindingd.sock`; beside any other socket
    `<name>.http.sock` (clients derive it the same way from the gRPC endpoint)."""
    if grpc_socket.name == GRPC_SOCKET:
        return grpc_socket.with_name(HTTP_SOCKET)
    return grpc_socket.with_name(grpc_socket.name.removesuffix(".sock") + "." + HTTP_SOCKET)


def http_listen_of(listen: str) -> str:
    """The HTTP address for `--listen HOST:PORT`: the same host, the port after it."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}"


class HttpListeners:
    def __init__(
        self,
        services: list[tuple[object, Any]],
        token: str | None,
        grace_s: float = 10.0,
        forwarder: Any = None,
    ) -> None:
        self._grace_s = grace_s
        self._connect = ConnectHandler(services, forwarder)
        objects_service = next(
            s
            for s, d in services
            if d.full_name == objects_pb2.DESCRIPTOR.services_by_name["Objects"].full_name
        )
        assert isinstance(objects_service, ObjectsService)
        self._objects = ObjectsHandler(objects_service, forwarder)
        self._token = token
        self._runners: list[web.AppRunner] = []
        self._socket: Path | None = None

    def _app(self, token: str | None, listen: str) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not token_ok(request, token):
                context = HttpContext(request)
                return error_response(
                    abort_of(token_error(request, listen), context.request_id), context.request_id
                )
            if request.path.startswith(PREFIX):
                return await self._objects(request)
            return await self._connect(request)

        app = web.Application(client_max_size=MAX_MESSAGE_BYTES, handler_args={"auto_decompress": False})
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    async def _runner(self, app: web.Application) -> web.AppRunner:
        # No access log: a line per call would be a disk write per KV get (the services log
        # at debug, as over gRPC).
        runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=KEEPALIVE_S,
            handle_signals=False,
            shutdown_timeout=self._grace_s,
        )
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def start(self, socket_path: Path, listen: str | None) -> None:
        runner = await self._runner(self._app(None, str(socket_path)))
        await web.UnixSite(runner, str(socket_path)).start()
        self._socket = socket_path
        if listen is not None:
            from bindingd.server.app import ServeError, parse_listen  # app imports this module

            host, port = parse_listen(listen)
            runner = await self._runner(self._app(self._token, listen))
            try:
                await web.TCPSite(runner, host, port, reuse_address=True).start()
            except OSError as e:
                raise ServeError(
                    f"cannot listen for HTTP on {listen} (--listen's port + 1): {e.strerror}"
                ) from e

    async def stop(self, grace_s: float = 0.0) -> None:
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.shutdown()
                await runner.cleanup()
        self._runners.clear()
        if self._socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self._socket.unlink()
            self._socket = None
