"""SMS through a provider with the Twilio-compatible API: signed webhooks in, the Messages API
out. A customer's texts continue their newest open conversation on the number; notices go out
from the tenant's number for the notification service (NoticeService)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable

import aiohttp
import asyncpg
import grpc
from aiohttp import web

from lianluo.common.v1 import common_pb2 as common
from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.runtime import auth, contract, outbox, quotas
from lianluo.runtime.errors import (
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Violations,
)
from lianluo.runtime.faults import is_outage
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.gateway import domain, events
from lianluo.services.gateway.replies import Outgoing
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Conversations, Inbound
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# What the sender of a consent keyword is told, in the webhook's answer.
CONSENT_REPLIES = {
    "stop": "You will get no more messages from this number. Reply START to resume.",
    "start": "You will get messages from this number again. Reply STOP to stop them.",
}


class SmsIn:
    """The provider's webhook for inbound messages."""

    def __init__(
        self,
        view: TenantConfigView,
        conversations: Conversations,
        settings: GatewaySettings,
        pool: asyncpg.Pool,
        repo: Repository,
    ) -> None:
        self._view = view
        self._conversations = conversations
        self._settings = settings
        self._pool = pool
        self._repo = repo
        self._receipts = settings.topic(contract.NOTICE_RECEIPT.name)
        self._flood = quotas.RateLimiter()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/sms/{tenant}/{channel}", self.inbound),
            web.post("/v1/sms/{tenant}/{channel}/status", self.status),
        ]

    async def _signed_form(self, request: web.Request) -> tuple[str, tpb.Channel, dict[str, str]]:
        """The tenant, the SMS channel and the form of a webhook the provider signed."""
        tenant_id, channel_id = request.match_info["tenant"], request.match_info["channel"]
        channel = self._view.get(tenant_id, "channel", channel_id)
        tenant = self._view.tenant(tenant_id)
        if (
            not isinstance(channel, tpb.Channel)
            or channel.WhichOneof("kind") != "sms"
            or not tenant
        ):
            raise web.HTTPNotFound(text="no such number")
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = self._signed_url(request)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not domain.twilio_valid(channel.sms.auth_token, url, form, signature):
            raise web.HTTPForbidden(text="the signature does not match")
        if tenant.state != tpb.TENANT_STATE_ACTIVE:
            raise web.HTTPForbidden(text="the tenant is suspended")
        return tenant_id, channel, form

    async def status(self, request: web.Request) -> web.Response:
        """The provider's status callback for a text the gateway sent: a notice's final word
        (delivered, or not) goes to the notification service as a receipt."""
        tenant_id, _, form = await self._signed_form(request)
        try:
            receipt = domain.sms_receipt(form)
        except domain.BadMessage as error:
            raise web.HTTPBadRequest(text=str(error)) from error
        if receipt is None:  # queued, sent, accepted...: not the end of it yet
            return web.Response(status=204)
        async with self._pool.acquire() as conn, conn.transaction():
            delivery_id = await self._repo.notice_of(
                conn, uuid.UUID(tenant_id), receipt.provider_message_id
            )
            if delivery_id is not None:  # else an agent's reply: nobody waits for its receipt
                receipt.delivery_id = str(delivery_id)
                envelope = contract.envelope(
                    contract.NOTICE_RECEIPT, events.SERVICE, tenant_id, receipt
                )
                await outbox.enqueue(conn, self._receipts, envelope)
        return web.Response(status=204)

    async def inbound(self, request: web.Request) -> web.Response:
        tenant_id, channel, form = await self._signed_form(request)
        try:
            sender, text, sid = domain.sms_inbound(form)
            self._flood.take(
                f"{tenant_id}/{sender}",
                "messages_per_second",
                self._settings.gateway_session_messages_per_second,
            )
        except domain.BadMessage as error:
            raise web.HTTPBadRequest(text=str(error)) from error
        except ResourceExhausted as error:
            raise web.HTTPTooManyRequests(
                text="too many messages from this number",
                headers={"Retry-After": str(max(1, round(error.retry_after)))},
            ) from error
        keyword = domain.consent_keyword(text)
        if keyword:
            await self._conversations.consent(
                tenant_id, pb.IDENTITY_KIND_PHONE, sender, keyword == "stop"
            )
            reply = (
                '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
                f"{CONSENT_REPLIES[keyword]}</Message></Response>"
            )
            return web.Response(text=reply, content_type="text/xml")
        try:
            await self._conversations.take(
                tenant_id,
                channel,
                Inbound(
                    pb.IDENTITY_KIND_PHONE,
                    sender,
                    common.CHANNEL_SMS,
                    common.MEDIA_TYPE_SMS,
                    # A provider's retry of the same message is kept once.
                    f"sms:{sid}",
                    text,
                ),
            )
        except Exception as error:
            if not isinstance(error, grpc.aio.AioRpcError) and not is_outage(error):
                raise
            log.warning("sms not taken", error=repr(error)[:200])
            # The provider retries a webhook that fails with a server error.
            raise web.HTTPServiceUnavailable(text="try again later") from error
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    def _signed_url(self, request: web.Request) -> str:
        """The URL the provider called and signed. Behind a proxy (TLS ended at an Ingress)
        it is the public one: LIANLUO_GATEWAY_PUBLIC_URL, else what the proxy forwards. Trusting
        forwarded headers costs nothing here: without the auth token no signature matches."""
        base = self._settings.gateway_public_url.rstrip("/")
        if not base:
            scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0]
            host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0]
            base = f"{scheme.strip()}://{host.strip()}"
        return base + request.path_qs


async def post_texts(
    sms: tpb.SmsChannel,
    to: str,
    text: str,
    limit: aiohttp.ClientTimeout,
    status_callback: str = "",
) -> tuple[str | None, list[str]]:
    """Text `to` from the channel's number through the provider's Messages API, cut into
    messages of at most ten segments (GSM-7 or UCS-2, whichever the text needs): what went
    wrong (None: nothing), and the provider's ids of the messages it took. With
    `status_callback`, the provider reports there what became of each."""
    url = f"{sms.api_base_url.rstrip('/')}/2010-04-01/Accounts/{sms.account_sid}/Messages.json"
    basic = aiohttp.BasicAuth(sms.account_sid, sms.auth_token)
    taken: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=limit) as http:
            for part in domain.sms_messages(text):
                form = {"From": sms.number, "To": to, "Body": part}
                if status_callback:
                    form["StatusCallback"] = status_callback
                async with http.post(url, data=form, auth=basic) as answer:
                    if answer.status >= 300:
                        return f"the provider answered {answer.status}", taken
                    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                        sid = (await answer.json()).get("sid", "")
                        if isinstance(sid, str) and sid:
                            taken.append(sid[:64])
    except (aiohttp.ClientError, TimeoutError) as error:
        return f"the provider is unreachable: {error!r}"[:300], taken
    return None, taken


class SmsSender:
    """Agents' replies, by text."""

    identity: int = pb.IDENTITY_KIND_PHONE

    def __init__(self, settings: GatewaySettings) -> None:
        self._timeout = aiohttp.ClientTimeout(total=settings.gateway_provider_timeout_seconds)

    carries_files = False
    survey_by_link = False

    async def send(self, out: Outgoing, channel: tpb.Channel) -> str | None:
        to = out.row["customer_address"]
        return (await post_texts(channel.sms, to, out.text, self._timeout))[0]

    async def sent(self, conn: asyncpg.Connection, repo: Repository, row: asyncpg.Record) -> None:
        return None


class SmsNotices:
    """Notices texted for the notification service: from the tenant's SMS channel (named, or
    its first), never to a number whose owner opted out, once per delivery id."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        settings: GatewaySettings,
        base_url: Callable[[], str],
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._timeout = aiohttp.ClientTimeout(total=settings.gateway_provider_timeout_seconds)
        self._base_url = base_url

    def _channel(self, tenant_id: str, name: str) -> tpb.Channel:
        channels = [c for c in self._view.all(tenant_id, "channel") if isinstance(c, tpb.Channel)]
        for channel in sorted(channels, key=lambda c: c.name):
            if channel.WhichOneof("kind") == "sms" and (not name or channel.name == name):
                return channel
        raise FailedPrecondition(
            "channel", f"the tenant has no SMS channel {name!r}" if name else "no SMS channel"
        )

    async def send(self, request: pb.SendNoticeRequest) -> pb.SentNotice:
        auth.require_tenant(request.tenant_id)
        v = Violations()
        named = domain.uuids(v, tenant_id=request.tenant_id, delivery_id=request.delivery_id)
        v.check(
            domain.E164.fullmatch(request.phone_number) is not None,
            "phone_number",
            "must be E.164, such as +8613800138000",
        )
        v.check(bool(request.body.strip()), "body", "must not be empty")
        v.raise_if_any()
        tid, delivery_id = named["tenant_id"], named["delivery_id"]
        channel = self._channel(request.tenant_id, request.channel)
        async with self._pool.acquire() as conn:
            parts = await self._repo.notice_parts(conn, tid, delivery_id)
            if parts is not None:
                return pb.SentNotice(parts=parts)
            if await self._repo.opted_out(conn, tid, pb.IDENTITY_KIND_PHONE, request.phone_number):
                raise FailedPrecondition("phone_number", "the number's owner opted out (STOP)")
        receipts = f"{self._base_url()}/v1/sms/{request.tenant_id}/{channel.id}/status"
        error, ids = await post_texts(
            channel.sms, request.phone_number, request.body, self._timeout, receipts
        )
        if error is not None:
            raise Unavailable(error)
        parts = len(domain.sms_messages(request.body))
        async with self._pool.acquire() as conn:
            await self._repo.add_notice(conn, tid, delivery_id, request.phone_number, parts, ids)
        log.info("notice texted", tenant_id=request.tenant_id, parts=parts)
        return pb.SentNotice(parts=parts)
