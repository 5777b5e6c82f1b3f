"""VarsService: var and secret bindings as plain strings, as Workers puts them on `env`."""

from __future__ import annotations

import grpc
from bindingd_client.proto import vars_pb2, vars_pb2_grpc

from bindingd.providers.gateway.session import GatewaySession, gateway_failure
from bindingd.providers.gateway.target import CALL_TIMEOUT_S
from bindingd.runtime import Runtime
from bindingd.server.calls import rpc


class VarsService(vars_pb2_grpc.VarsServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @rpc
    async def Get(
        self, request: vars_pb2.VarGetRequest, context: grpc.aio.ServicerContext
    ) -> vars_pb2.VarGetResponse:
        served = self.runtime.lookup(request.binding, "var", "secret")
        return vars_pb2.VarGetResponse(value=served.binding.value or "")

    @rpc
    async def GetAll(
        self, request: vars_pb2.VarGetAllRequest, context: grpc.aio.ServicerContext
    ) -> vars_pb2.VarGetAllResponse:
        values = {
            s.binding.name: s.binding.value or ""
            for s in self.runtime.served()
            if s.binding.type in ("var", "secret")
        }
        session = self.runtime.gateway
        if session is not None:
            remote = await session.discovered()
            if any(b.type in ("var", "secret") for b in remote.values()):
                values = {**await remote_values(session, request), **values}  # a local one wins
        return vars_pb2.VarGetAllResponse(values=values)


async def remote_values(session: GatewaySession, request: vars_pb2.VarGetAllRequest) -> dict[str, str]:
    """The vars and secrets the gateway serves this user in the env (only those granted)."""
    get_all = session.channel.unary_unary(
        "/bindingd.v1.Vars/GetAll",
        request_serializer=vars_pb2.VarGetAllRequest.SerializeToString,
        response_deserializer=vars_pb2.VarGetAllResponse.FromString,
    )
    token = await session.token()
    try:
        answer = await get_all(request, metadata=session.metadata(token, None), timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        raise await gateway_failure(session.target, e) from None
    return dict(answer.values)
