"""BindingsService: what the daemon serves in its env. Never a secret's value or a credential."""

from __future__ import annotations

import grpc
from bindingd_client.proto import bindings_pb2, bindings_pb2_grpc

from bindingd.errors import BindingdError, Reason
from bindingd.providers.gateway.session import GatewaySession, State
from bindingd.runtime import NOT_SERVING, SERVING, Runtime, Served
from bindingd.server.calls import rpc


def binding_info(served: Served) -> bindings_pb2.BindingInfo:
    b = served.binding
    return bindings_pb2.BindingInfo(
        name=b.name,
        type=b.type,
        env=b.env,
        backend=b.backend,
        backend_kind=b.backend_kind,
        access=b.access,
        health=served.health,
        health_detail=served.health_detail,
    )


class BindingsService(bindings_pb2_grpc.BindingsServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @rpc
    async def List(
        self, request: bindings_pb2.ListBindingsRequest, context: grpc.aio.ServicerContext
    ) -> bindings_pb2.ListBindingsResponse:
        infos = [binding_info(s) for s in self.runtime.served()]
        session = self.runtime.gateway
        if session is not None:
            await session.discovered()  # a worker starting with the daemon sees them
            infos += [remote_info(session, name) for name in sorted(session.names())]
        return bindings_pb2.ListBindingsResponse(
            env=self.runtime.env, writes_refused=self.runtime.writes_refused, bindings=infos
        )

    @rpc
    async def Describe(
        self, request: bindings_pb2.DescribeBindingRequest, context: grpc.aio.ServicerContext
    ) -> bindings_pb2.BindingInfo:
        session = self.runtime.gateway
        if session is not None and not self.runtime.is_local(request.binding):
            if request.binding in session.names():
                return remote_info(session, request.binding)
            raise (
                session.error()
                if session.state is not State.READY
                else self._not_granted(session, request.binding)
            )
        return binding_info(self.runtime.get(request.binding))

    def _not_granted(self, session: GatewaySession, name: str) -> BindingdError:
        granted = ", ".join(sorted(session.names())) or "none"
        return BindingdError(
            Reason.BINDING_NOT_FOUND,
            f'binding "{name}" is not served in env "{session.env}": gateway {session.url} grants '
            f"{session.user} no binding of that name (granted: {granted})",
            binding=name,
            env=session.env,
        )


def remote_info(session: GatewaySession, name: str) -> bindings_pb2.BindingInfo:
    """A binding served through the gateway: its actions as its access, the session's state as
    its health (never the token)."""
    binding_type, detail, actions = session.describe(name)
    ready = session.state is State.READY and name in session.bindings
    return bindings_pb2.BindingInfo(
        name=name,
        type=binding_type,
        env=session.env,
        backend=f"gateway {session.url}",
        backend_kind="gateway",
        access=actions or "none",
        health=SERVING if ready else NOT_SERVING,
        health_detail=detail,
    )
