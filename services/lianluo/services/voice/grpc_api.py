"""The gRPC adapter of WebPhoneService: the agents' phones in the browser."""

from __future__ import annotations

from typing import Any

from lianluo.runtime import auth
from lianluo.runtime.errors import FieldViolation, InvalidArgument, NotFound
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.voice.phones import Phones
from lianluo.services.voice.webphone import BadOffer
from lianluo.voice.v1 import voice_pb2 as pb
from lianluo.voice.v1 import voice_pb2_grpc as rpc


class WebPhoneApi(rpc.WebPhoneServiceServicer):
    def __init__(self, phones: Phones, view: TenantConfigView) -> None:
        self.phones = phones
        self.view = view

    def _agent(self, tenant_id: str, agent_id: str) -> None:
        """Allow the agent themselves, or the tenant's key or admin, for an agent it has."""
        auth.require_tenant(tenant_id)
        auth.require_agent(agent_id)
        if self.view.get(tenant_id, "agent", agent_id) is None:
            raise NotFound("agent", agent_id)

    @auth.needs("interaction:write")
    async def OpenWebPhone(
        self, request: pb.OpenWebPhoneRequest, _: Any
    ) -> pb.OpenWebPhoneResponse:
        self._agent(request.tenant_id, request.agent_id)
        if "m=audio" not in request.sdp:
            raise InvalidArgument([FieldViolation("sdp", "an SDP offer with audio")])
        try:
            answer = await self.phones.open_web(request.tenant_id, request.agent_id, request.sdp)
        except BadOffer as error:
            raise InvalidArgument([FieldViolation("sdp", str(error))]) from None
        return pb.OpenWebPhoneResponse(sdp=answer)

    @auth.needs("interaction:write")
    async def CloseWebPhone(
        self, request: pb.CloseWebPhoneRequest, _: Any
    ) -> pb.CloseWebPhoneResponse:
        self._agent(request.tenant_id, request.agent_id)
        closed = await self.phones.close_web(request.tenant_id, request.agent_id)
        return pb.CloseWebPhoneResponse(closed=closed)
