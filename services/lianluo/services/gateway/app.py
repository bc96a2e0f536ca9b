"""Composition root of the channel gateway: wire the parts together and serve."""

from __future__ import annotations

from pathlib import Path

from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.gateway.v1 import gateway_pb2_grpc as rpc
from lianluo.runtime.http import HttpServer
from lianluo.runtime.objects import Links, Objects
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.gateway import events
from lianluo.services.gateway.attachments import Attachments
from lianluo.services.gateway.forms import Forms
from lianluo.services.gateway.grpc_api import AttachmentApi, CustomerApi, NoticeApi
from lianluo.services.gateway.inbox import Inbox
from lianluo.services.gateway.mail import (
    Mailboxes,
    MailConsent,
    MailIn,
    MailSender,
    SmtpServer,
)
from lianluo.services.gateway.replies import Replies, Sender
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Conversations, Customers, Platform, WebChat
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.services.gateway.sms import SmsIn, SmsNotices, SmsSender
from lianluo.services.gateway.survey import SurveyLinks, Surveys
from lianluo.services.gateway.wechat import WechatIn, WechatSender

SPEC = ServiceSpec(
    name="gateway",
    settings=GatewaySettings,
    migrations=Path(__file__).parent / "migrations",
)


async def build(settings: GatewaySettings) -> Service:
    service = Service(SPEC, settings)
    await service.start_storage()
    view = await service.follow_tenant_config()
    repo = Repository()
    platform = Platform(settings)
    customers = Customers(service.pool, repo, platform)
    http = HttpServer(settings.gateway_http_host, settings.gateway_http_port)

    def base_url() -> str:
        return settings.gateway_public_url.rstrip("/") or http.url

    links = Links(settings.admin_key.get_secret_value(), base_url)
    attachments = Attachments(service.pool, repo, Objects(settings), links, settings)
    forms = Forms(service.pool, repo, platform, links, settings)
    web_chat = WebChat(view, platform, customers, attachments, forms.path, settings)
    consent = MailConsent(service.pool, repo, links, settings)
    senders: dict[str, Sender] = {
        "email": MailSender(settings, consent),
        "sms": SmsSender(settings),
        "wechat": WechatSender(settings),
    }
    survey_links = SurveyLinks(links, settings)
    replies = Replies(service.pool, repo, view, senders, attachments, forms, survey_links)
    surveys = Surveys(service.pool, repo, view, platform, survey_links, replies.wake)
    conversations = Conversations(platform, customers, service.pool, repo, surveys)
    await service.add_consumer(events.handlers(replies, surveys))
    service.add_background(replies, "reply sender")
    mail_in = MailIn(Mailboxes(view), platform, customers, attachments, service.pool, repo)
    service.add_background(SmtpServer(mail_in, settings), "smtp server")
    http.add_routes(
        [
            *web_chat.routes(),
            *attachments.routes(),
            *forms.routes(),
            *surveys.routes(),
            *consent.routes(),
            *SmsIn(view, conversations, settings, service.pool, repo).routes(),
            *WechatIn(view, conversations, settings).routes(),
        ],
        settings.gateway_max_frame_bytes,
    )
    service.add_background(http, "http server")
    service.add_grpc(
        rpc.add_CustomerServiceServicer_to_server,
        CustomerApi(customers),
        pb.DESCRIPTOR.services_by_name["CustomerService"].full_name,
    )
    service.add_grpc(
        rpc.add_AttachmentServiceServicer_to_server,
        AttachmentApi(attachments, platform),
        pb.DESCRIPTOR.services_by_name["AttachmentService"].full_name,
    )
    service.add_grpc(
        rpc.add_NoticeServiceServicer_to_server,
        NoticeApi(SmsNotices(service.pool, repo, view, settings, base_url), Inbox(service.pool)),
        pb.DESCRIPTOR.services_by_name["NoticeService"].full_name,
    )
    return service


async def serve(settings: GatewaySettings) -> None:
    await (await build(settings)).serve()
