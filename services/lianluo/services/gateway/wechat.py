"""WeChat Official Accounts: the server URL's check and the pushed messages in, the
customer-service message API out. A follower's messages continue their newest open
conversation with the account."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import grpc
from aiohttp import web

from lianluo.common.v1 import common_pb2 as common
from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.runtime import quotas
from lianluo.runtime.errors import ResourceExhausted
from lianluo.runtime.faults import is_outage
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.gateway import domain
from lianluo.services.gateway.replies import Outgoing
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Conversations, Inbound
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
# The protocol's answer to a push that needs no passive reply (the agent answers later,
# through the customer-service API): the account shows nothing and does not retry.
ACCEPTED = "success"
# An access token is renewed this long before WeChat says it expires.
TOKEN_MARGIN_SECONDS = 300


class WechatIn:
    def __init__(
        self, view: TenantConfigView, conversations: Conversations, settings: GatewaySettings
    ) -> None:
        self._view = view
        self._conversations = conversations
        self._settings = settings
        self._flood = quotas.RateLimiter()

    def routes(self) -> list[web.RouteDef]:
        path = "/v1/wechat/{tenant}/{channel}"
        return [web.get(path, self.check), web.post(path, self.push)]

    def _signed(self, request: web.Request) -> tuple[str, tpb.Channel]:
        """The account the URL names, once the query's signature proves WeChat sent it."""
        tenant_id, channel_id = request.match_info["tenant"], request.match_info["channel"]
        channel = self._view.get(tenant_id, "channel", channel_id)
        tenant = self._view.tenant(tenant_id)
        if not isinstance(channel, tpb.Channel) or channel.WhichOneof("kind") != "wechat":
            raise web.HTTPNotFound(text="no such account")
        q = request.query
        if not domain.wechat_valid(
            channel.wechat.token, q.get("timestamp", ""), q.get("nonce", ""), q.get("signature", "")
        ):
            raise web.HTTPForbidden(text="the signature does not match")
        if tenant is None or tenant.state != tpb.TENANT_STATE_ACTIVE:
            raise web.HTTPForbidden(text="the tenant is suspended")
        return tenant_id, channel

    async def check(self, request: web.Request) -> web.Response:
        """The server URL check: echo `echostr` when the signature is right."""
        self._signed(request)
        return web.Response(text=request.query.get("echostr", ""))

    async def push(self, request: web.Request) -> web.Response:
        tenant_id, channel = self._signed(request)
        try:
            message = domain.wechat_message(await request.read())
            if message is None:
                return web.Response(text=ACCEPTED)
            if message.consent:
                # A follow opts the follower in again; an unfollow opts them out of replies.
                await self._conversations.consent(
                    tenant_id,
                    pb.IDENTITY_KIND_WECHAT_OPENID,
                    message.openid,
                    stop=message.consent == "stop",
                )
                if not message.text:
                    return web.Response(text=ACCEPTED)
            self._flood.take(
                f"{tenant_id}/{message.openid}",
                "messages_per_second",
                self._settings.gateway_session_messages_per_second,
            )
        except domain.BadMessage as error:
            raise web.HTTPBadRequest(text=str(error)) from error
        except ResourceExhausted as error:
            raise web.HTTPTooManyRequests(text="too many messages from this follower") from error
        try:
            # WeChat waits five seconds for the answer before it retries the push.
            await asyncio.wait_for(
                self._conversations.take(
                    tenant_id,
                    channel,
                    Inbound(
                        pb.IDENTITY_KIND_WECHAT_OPENID,
                        message.openid,
                        common.CHANNEL_WECHAT,
                        common.MEDIA_TYPE_CHAT,
                        # WeChat pushes a message again when the answer was late: kept once.
                        f"wechat:{message.msg_id}",
                        message.text,
                    ),
                ),
                4.5,
            )
        except Exception as error:
            if not isinstance(error, grpc.aio.AioRpcError | TimeoutError) and not is_outage(error):
                raise
            log.warning("wechat push not taken", error=repr(error)[:200])
            raise web.HTTPServiceUnavailable(text="try again later") from error
        return web.Response(text=ACCEPTED)


class WechatSender:
    """Replies through the customer-service message API, with the account's access token
    (fetched with the app secret, kept until shortly before it expires)."""

    identity: int = pb.IDENTITY_KIND_WECHAT_OPENID

    def __init__(self, settings: GatewaySettings) -> None:
        self._timeout = aiohttp.ClientTimeout(total=settings.gateway_provider_timeout_seconds)
        # app id -> (access token, when to renew it)
        self._tokens: dict[str, tuple[str, float]] = {}

    async def _access_token(self, http: aiohttp.ClientSession, w: tpb.WechatChannel) -> str:
        kept = self._tokens.get(w.app_id)
        if kept is not None and kept[1] > time.monotonic():
            return kept[0]
        async with http.get(
            f"{w.api_base_url.rstrip('/')}/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": w.app_id, "secret": w.app_secret},
        ) as answer:
            found = await answer.json(content_type=None)
        token = found.get("access_token") if isinstance(found, dict) else None
        if not isinstance(token, str) or not token:
            raise RuntimeError(f"no access token: {str(found)[:200]}")
        lifetime = int(found.get("expires_in", 7200))
        self._tokens[w.app_id] = (token, time.monotonic() + lifetime - TOKEN_MARGIN_SECONDS)
        return token

    carries_files = False
    survey_by_link = False

    async def send(self, out: Outgoing, channel: tpb.Channel) -> str | None:
        w = channel.wechat
        body = {
            "touser": out.row["customer_address"],
            "msgtype": "text",
            "text": {"content": out.text},
        }
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as http:
                token = await self._access_token(http, w)
                async with http.post(
                    f"{w.api_base_url.rstrip('/')}/cgi-bin/message/custom/send",
                    params={"access_token": token},
                    json=body,
                ) as answer:
                    found = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as error:
            return f"WeChat is unreachable: {error!r}"[:300]
        code = found.get("errcode", 0) if isinstance(found, dict) else -1
        if code in (40001, 40014, 42001):  # the access token is invalid or expired
            self._tokens.pop(w.app_id, None)
        return None if code == 0 else f"WeChat answered {str(found)[:200]}"

    async def sent(self, conn: asyncpg.Connection, repo: Repository, row: asyncpg.Record) -> None:
        return None
