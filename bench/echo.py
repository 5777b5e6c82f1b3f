"""The floors: bare grpc.aio unary servers, each in its own process like the daemon.

python -m bench.echo SOCKET_PATH
    an echo on a unix socket: one round trip, the floor of a call to the daemon;
python -m bench.echo --tls CERT KEY PORT READY_FILE
    the same echo on loopback TCP with TLS, like the gateway;
python -m bench.echo --relay SOCKET_PATH HOST:PORT CA
    an echo on a unix socket that answers by sending the request on to HOST:PORT (over TLS,
    trusting CA) and relaying its answer: two bare hops, the floor of a call through the
    gateway, with nothing checked, looked up or logged on the way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc

METHOD = "/bench.Echo/Echo"


def _same(data: bytes) -> bytes:
    return data


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _serve(handler: object, bind: object) -> None:
    server = grpc.aio.server()
    generic = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(handler)}
    )
    server.add_generic_rpc_handlers((generic,))
    bind(server)  # type: ignore[operator]
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(1)


async def serve(socket_path: str) -> None:
    await _serve(_echo, lambda server: server.add_insecure_port(f"unix://{socket_path}"))


async def serve_tls(cert: Path, key: Path, port: int, ready: Path) -> None:
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])

    def bind(server: grpc.aio.Server) -> None:
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
        ready.write_text("ready")

    await _serve(_echo, bind)


async def serve_relay(socket_path: str, target: str, ca: Path) -> None:
    channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca.read_bytes()))
    onward = channel.unary_unary(METHOD, request_serializer=_same, response_deserializer=_same)

    async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await onward(request)  # type: ignore[no-any-return]

    await _serve(relay, lambda server: server.add_insecure_port(f"unix://{socket_path}"))


if __name__ == "__main__":
    if sys.argv[1] == "--tls":
        asyncio.run(serve_tls(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])))
    elif sys.argv[1] == "--relay":
        asyncio.run(serve_relay(sys.argv[2], sys.argv[3], Path(sys.argv[4])))
    else:
        asyncio.run(serve(sys.argv[1]))
