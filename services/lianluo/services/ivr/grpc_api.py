"""The gRPC adapter of IvrService: requests in, service calls, responses out."""

from __future__ import annotations

from typing import Any

from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.ivr.v1 import ivr_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.services.ivr.service import FlowTools


class IvrApi(rpc.IvrServiceServicer):
    def __init__(self, tools: FlowTools) -> None:
        self.tools = tools

    @auth.needs("config:read")
    async def ValidateFlow(
        self, request: api.ValidateFlowRequest, _: Any
    ) -> api.ValidateFlowResponse:
        return self.tools.validate(request.tenant_id, request.flow)

    @auth.needs("config:read")
    async def SimulateFlow(
        self, request: api.SimulateFlowRequest, _: Any
    ) -> api.SimulateFlowResponse:
        return await self.tools.simulate(request)
