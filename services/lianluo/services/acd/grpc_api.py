"""The gRPC adapter: requests in, service calls, responses out. No rules live here."""

from __future__ import annotations

from typing import Any

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.services.acd.service import AcdApi


class AcdServicer(rpc.AcdServiceServicer):
    def __init__(self, api: AcdApi) -> None:
        self.api = api

    @auth.needs("routing:agent")
    async def SetPresence(self, request: acd.SetPresenceRequest, _: Any) -> acd.AgentPresence:
        return await self.api.set_presence(request)

    @auth.needs("routing:read")
    async def Recommend(self, request: acd.RecommendRequest, _: Any) -> acd.RecommendResponse:
        return await self.api.recommend(request)

    @auth.needs("routing:agent")
    async def RespondToOffer(self, request: acd.RespondToOfferRequest, _: Any) -> acd.Offer:
        return await self.api.respond_to_offer(request)

    @auth.needs("routing:read")
    async def QueueStats(self, request: acd.QueueStatsRequest, _: Any) -> acd.QueueStatsResponse:
        return await self.api.queue_stats(request)

    @auth.needs("routing:read")
    async def ListAgentPresence(
        self, request: acd.ListAgentPresenceRequest, _: Any
    ) -> acd.ListAgentPresenceResponse:
        return await self.api.list_presence(request)

    @auth.needs("routing:read")
    async def Report(self, request: acd.ReportRequest, _: Any) -> acd.ReportResponse:
        return await self.api.report(request)
