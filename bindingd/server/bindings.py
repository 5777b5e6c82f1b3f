"""BindingsService: what the daemon serves in its env. Never a secret's value or a credential."""

from __future__ import annotations

import grpc
from bindingd_client.proto import bindings_pb2, bindings_pb2_grpc

from bindingd.runtime import Runtime, Served
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
        return bindings_pb2.ListBindingsResponse(
            env=self.runtime.env,
            writes_refused=self.runtime.writes_refused,
            bindings=[binding_info(s) for s in self.runtime.served()],
        )

    @rpc
    async def Describe(
        self, request: bindings_pb2.DescribeBindingRequest, context: grpc.aio.ServicerContext
    ) -> bindings_pb2.BindingInfo:
        return binding_info(self.runtime.get(request.binding))
