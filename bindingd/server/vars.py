"""VarsService: var and secret bindings as plain strings, as Workers puts them on `env`."""

from __future__ import annotations

import grpc
from bindingd_client.proto import vars_pb2, vars_pb2_grpc

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
        return vars_pb2.VarGetAllResponse(values=values)
