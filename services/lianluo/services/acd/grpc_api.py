"""The gRPC adapter: requests in, service calls, responses out. No rules live here."""

from __future__ import annotations

from typing import Any

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as rpc
from lianluo.services.acd.service import AcdApi


class AcdServicer(rpc.AcdServiceServicer):
    def __init__(self, api: AcdApi) -> None:
        self.api = api

    async def SetPresence(self, request: acd.SetPresenceRequest, _: Any) -> acd.AgentPresence:
        return await self.api.set_presence(request)

    async def Recommend(self, request: acd.RecommendRequest, _: Any) -> acd.RecommendResponse:
        return await self.api.recommend(request)

    async def RespondToOffer(self, request: acd.RespondToOfferRequest, _: Any) -> acd.Offer:
        return await self.api.respond_to_offer(request)

    async def QueueStats(self, request: acd.QueueStatsRequest, _: Any) -> acd.QueueStatsResponse:
        return await self.api.queue_stats(request)
