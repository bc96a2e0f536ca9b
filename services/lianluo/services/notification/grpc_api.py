"""The gRPC adapter: requests in, service calls, responses out. No rules live here."""

from __future__ import annotations

from typing import Any

from lianluo.common.v1 import common_pb2
from lianluo.notification.v1 import notification_pb2 as pb
from lianluo.notification.v1 import notification_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.services.notification.deliveries import to_message
from lianluo.services.notification.service import NotificationService


class NotificationApi(rpc.NotificationServiceServicer):
    def __init__(self, svc: NotificationService) -> None:
        self.svc = svc

    @auth.needs("notification:write", emits=True)
    async def Notify(self, request: pb.NotifyRequest, _: Any) -> pb.Delivery:
        return to_message(await self.svc.notify(request))

    @auth.needs("notification:write", emits=True)
    async def PublishBusinessEvent(
        self, request: pb.PublishBusinessEventRequest, _: Any
    ) -> pb.PublishBusinessEventResponse:
        event_id = await self.svc.publish_business_event(request)
        return pb.PublishBusinessEventResponse(event_id=event_id)

    @auth.needs("notification:read")
    async def GetDelivery(self, request: pb.GetDeliveryRequest, _: Any) -> pb.Delivery:
        return to_message(await self.svc.get_delivery(request.tenant_id, request.delivery_id))

    @auth.needs("notification:read")
    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, _: Any
    ) -> pb.ListDeliveriesResponse:
        items, token = await self.svc.list_deliveries(request)
        return pb.ListDeliveriesResponse(
            deliveries=[to_message(d) for d in items],
            page=common_pb2.PageResponse(next_page_token=token),
        )
