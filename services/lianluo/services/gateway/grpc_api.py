"""The gRPC adapter of the gateway: the customer store, and links to attachments."""

from __future__ import annotations

from typing import Any

from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.gateway.v1 import gateway_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.runtime.errors import FieldViolation, InvalidArgument
from lianluo.services.gateway import domain
from lianluo.services.gateway.attachments import Attachments
from lianluo.services.gateway.inbox import Inbox
from lianluo.services.gateway.service import Customers, Platform
from lianluo.services.gateway.sms import SmsNotices


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
    async def ResolveCustomer(self, request: pb.ResolveCustomerRequest, _: Any) -> pb.Customer:
        return await self.customers.resolve_for(
            request.tenant_id, request.kind, request.value, request.display_name
        )

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


class NoticeApi(rpc.NoticeServiceServicer):
    def __init__(self, notices: SmsNotices, inbox: Inbox) -> None:
        self.notices = notices
        self.inbox = inbox

    @auth.needs("notification:write")
    async def SendNotice(self, request: pb.SendNoticeRequest, _: Any) -> pb.SentNotice:
        return await self.notices.send(request)

    @auth.needs("notification:write")
    async def PostToInbox(self, request: pb.PostToInboxRequest, _: Any) -> pb.InboxNotice:
        return await self.inbox.post(request)

    @auth.needs("customers:read")
    async def ListInbox(self, request: pb.ListInboxRequest, _: Any) -> pb.ListInboxResponse:
        return await self.inbox.list(request)

    @auth.needs("customers:write")
    async def MarkInboxRead(self, request: pb.MarkInboxReadRequest, _: Any) -> pb.InboxNotice:
        return await self.inbox.mark_read(request)


class AttachmentApi(rpc.AttachmentServiceServicer):
    def __init__(self, attachments: Attachments, platform: Platform) -> None:
        self.attachments = attachments
        self.platform = platform

    @auth.needs("interaction:read")
    async def GetDownloadLink(
        self, request: pb.GetDownloadLinkRequest, context: Any
    ) -> pb.DownloadLink:
        auth.require_tenant(request.tenant_id)
        row = await self.attachments.find(request.tenant_id, request.attachment_id)
        # Whoever may read the attachment's interaction may open it: the media service
        # decides, asked with the caller's own credentials (an agent: only their own).
        await self.platform.may_read(
            request.tenant_id, str(row["interaction_id"]), context.invocation_metadata()
        )
        url, expires = self.attachments.url(
            request.tenant_id, request.attachment_id, self.attachments.link_seconds
        )
        link = pb.DownloadLink(
            url=url,
            name=row["name"],
            content_type=row["content_type"],
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            interaction_id=str(row["interaction_id"]),
        )
        link.expire_time.FromDatetime(expires)
        return link

    @auth.needs("interaction:write")
    async def UploadAttachment(
        self, request: pb.UploadAttachmentRequest, context: Any
    ) -> pb.UploadedAttachment:
        auth.require_tenant(request.tenant_id)
        await self.platform.may_read(
            request.tenant_id, request.interaction_id, context.invocation_metadata()
        )
        try:
            kept = await self.attachments.keep(
                request.tenant_id,
                request.interaction_id,
                request.name,
                request.content_type,
                request.content,
            )
        except domain.BadAttachment as error:
            field = "content" if error.too_large or "content" in str(error) else "content_type"
            raise InvalidArgument([FieldViolation(field, str(error))]) from None
        return pb.UploadedAttachment(attachment_id=kept.id, content=kept.content)
