"""The gRPC adapter of the gateway: the customer store's reads."""

from __future__ import annotations

from typing import Any

from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.gateway.v1 import gateway_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.services.gateway.service import Customers


class CustomerApi(rpc.CustomerServiceServicer):
    def __init__(self, customers: Customers) -> None:
        self.customers = customers

    @auth.needs("customers:read")
    async def GetCustomer(self, request: pb.GetCustomerRequest, _: Any) -> pb.Customer:
        return await self.customers.get(request.tenant_id, request.customer_id)

    @auth.needs("customers:read")
    async def FindCustomer(self, request: pb.FindCustomerRequest, _: Any) -> pb.Customer:
        return await self.customers.find(request.tenant_id, request.kind, request.value)

    @auth.needs("customers:write")
    async def LinkIdentity(self, request: pb.LinkIdentityRequest, _: Any) -> pb.Customer:
        return await self.customers.link(
            request.tenant_id, request.customer_id, request.kind, request.value
        )

    @auth.needs("customers:read")
    async def ListConversations(
        self, request: pb.ListConversationsRequest, _: Any
    ) -> pb.ListConversationsResponse:
        found = await self.customers.conversations(request.tenant_id, request.customer_id)
        return pb.ListConversationsResponse(conversations=found)
