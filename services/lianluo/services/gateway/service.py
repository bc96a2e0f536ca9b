"""The gateway's logic: the web chat session, the platform client it works through, and the
customer store."""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import asyncpg
import grpc
from aiohttp import WSCloseCode, WSMsgType, web

from lianluo.common.v1 import common_pb2 as common
from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.runtime import auth, quotas
from lianluo.runtime.errors import NotFound, PermissionDenied, ResourceExhausted, Violations
from lianluo.runtime.faults import is_outage
from lianluo.runtime.grpc_server import platform_channel
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.gateway import domain
from lianluo.services.gateway.attachments import Attachments
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.tenants.v1 import tenants_pb2 as tpb
from lianluo.tenants.v1 import tenants_pb2_grpc as tenants_rpc

if TYPE_CHECKING:
    from lianluo.services.gateway.survey import Surveys

log = get_logger(__name__)
R = mpb.ParticipantRole
# The widget: one script a page embeds, built by `make` from web/ (pinned npm packages) and
# served by the gateway itself, never from a CDN.
WIDGET = Path(__file__).parent / "web" / "dist" / "widget.js"
# Customers' session tokens kept at once (a few hundred bytes each).
SESSIONS_KEPT = 10_000
# How many earlier contacts a new interaction carries for the agent.
HISTORY_ON_START = 10
# How long the upload path a chat is given stays valid; a reconnect gives a new one.
UPLOAD_SECONDS = 4 * 3600


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Platform:
    """The platform's APIs, as the gateway uses them: it mints each customer's session token
    (with the cell's admin key, which never leaves the gateway), and everything else it does
    for a customer runs with that token, so the customer can reach nothing but their own."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._tenants = platform_channel(settings.gateway_tenants_address, settings)
        self._media = platform_channel(settings.gateway_media_address, settings)
        self._admin = bearer(settings.admin_key.get_secret_value())
        self.media = media_rpc.MediaServiceStub(self._media)
        self._sessions: dict[tuple[str, str, int], tuple[str, float]] = {}

    async def customer_session(self, tenant_id: str, customer_id: str, channel: int) -> str:
        """A session token for the customer on the channel, minted by the tenants service and
        kept until a minute before it expires: a chat's uploads, an SMS conversation's texts
        need not mint one each."""
        key = (tenant_id, customer_id, channel)
        now = time.monotonic()
        kept = self._sessions.get(key)
        if kept is not None and kept[1] > now:
            return kept[0]
        request = tpb.CreateCustomerSessionRequest(tenant_id=tenant_id, customer_id=customer_id)
        request.channel = channel  # type: ignore[assignment]
        session: tpb.CustomerSession = await tenants_rpc.AuthServiceStub(
            self._tenants
        ).CreateCustomerSession(request, metadata=self._admin)
        lifetime = session.expire_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
        if len(self._sessions) >= SESSIONS_KEPT:
            self._sessions.pop(next(iter(self._sessions)))  # the oldest kept
        self._sessions[key] = (session.token, now + lifetime.total_seconds() - 60)
        return session.token

    async def start(
        self,
        channel: tpb.Channel,
        tenant_id: str,
        customer: mpb.Customer,
        on: int,
        media: int,
        md: Any,
        collected: dict[str, str] | None = None,
    ) -> mpb.StartInteractionResponse:
        """A customer's new interaction on a channel, at the channel's entry."""
        request = mpb.StartInteractionRequest(
            tenant_id=tenant_id, customer=customer, collected_data=collected or {}
        )
        request.channel, request.media = on, media  # type: ignore[assignment]
        if channel.WhichOneof("entry") == "flow":
            request.flow = channel.flow
        else:
            request.queue = channel.queue
        started: mpb.StartInteractionResponse = await self.media.StartInteraction(
            request, metadata=md
        )
        return started

    async def as_customer_in(
        self, tenant_id: str, interaction_id: str, customer_id: str, channel: int
    ) -> tuple[Any, str]:
        """The credentials of an interaction's customer, and their participant id in it."""
        md = bearer(await self.customer_session(tenant_id, customer_id, channel))
        it = await self.media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=tenant_id, interaction_id=interaction_id),
            metadata=md,
        )
        me = next((p.id for p in it.participants if p.role == R.PARTICIPANT_ROLE_CUSTOMER), "")
        return md, me

    async def may_read(self, tenant_id: str, interaction_id: str, metadata: Any) -> None:
        """Whether the caller (by the credentials it called with) may read an interaction."""
        md = tuple((k, v) for k, v in metadata or () if k == "authorization")
        try:
            await self.media.GetInteraction(
                mpb.GetInteractionRequest(tenant_id=tenant_id, interaction_id=interaction_id),
                metadata=md,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied("the interaction is not yours") from None
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound("interaction", interaction_id) from None
            raise

    async def close(self) -> None:
        await self._tenants.close()
        await self._media.close()


class Customers:
    """The customer store: identities seen on the channels, resolved to one customer."""

    def __init__(self, pool: asyncpg.Pool, repo: Repository, platform: Platform) -> None:
        self._pool = pool
        self._repo = repo
        self._platform = platform

    async def resolve(self, tenant_id: str, kind: int, value: str, name: str = "") -> str:
        async with self._pool.acquire() as conn:
            found = await self._repo.resolve(conn, uuid.UUID(tenant_id), kind, value, name)
        return str(found)

    async def get(self, tenant_id: str, customer_id: str) -> pb.Customer:
        auth.require_tenant(tenant_id)
        tid, cid = _uuid(tenant_id), _uuid(customer_id)
        async with self._pool.acquire() as conn:
            found = None if tid is None or cid is None else await self._repo.get(conn, tid, cid)
        if found is None:
            raise NotFound("customer", customer_id)
        return found

    async def find(self, tenant_id: str, kind: int, value: str) -> pb.Customer:
        auth.require_tenant(tenant_id)
        tid = _uuid(tenant_id)
        async with self._pool.acquire() as conn:
            found = None if tid is None else await self._repo.find(conn, tid, kind, value)
        if found is None:
            raise NotFound("customer", value)
        return found

    async def resolve_for(self, tenant_id: str, kind: int, value: str, name: str) -> pb.Customer:
        """The customer an identity resolves to, made now if new (for a channel adapter)."""
        auth.require_tenant(tenant_id)
        v = Violations()
        v.check(
            kind != pb.IDENTITY_KIND_UNSPECIFIED and kind in pb.IdentityKind.values(),
            "kind",
            "one of the identity kinds",
        )
        v.check(0 < len(value) <= 254, "value", "1 to 254 characters")
        v.check(len(name) <= 200, "display_name", "at most 200 characters")
        tid = _uuid(tenant_id)
        v.check(tid is not None, "tenant_id", "must be a tenant id")
        v.raise_if_any()
        assert tid is not None
        async with self._pool.acquire() as conn:
            cid = await self._repo.resolve(
                conn, tid, kind, domain.identity_value(kind, value), name
            )
            found = await self._repo.get(conn, tid, cid)
        assert found is not None
        return found

    async def link(self, tenant_id: str, customer_id: str, kind: int, value: str) -> pb.Customer:
        auth.require_tenant(tenant_id)
        v = Violations()
        v.check(kind != pb.IDENTITY_KIND_UNSPECIFIED, "kind", "must be set")
        v.check(0 < len(value) <= 254, "value", "1 to 254 characters")
        v.raise_if_any()
        tid, cid = _uuid(tenant_id), _uuid(customer_id)
        async with self._pool.acquire() as conn, conn.transaction():
            if tid is None or cid is None or not await self._repo.live(conn, tid, cid):
                raise NotFound("customer", customer_id)
            await self._repo.link(conn, tid, cid, kind, domain.identity_value(kind, value))
            found = await self._repo.get(conn, tid, cid)
        assert found is not None
        return found

    async def conversations(self, tenant_id: str, customer_id: str) -> list[pb.Conversation]:
        auth.require_tenant(tenant_id)
        tid, cid = _uuid(tenant_id), _uuid(customer_id)
        async with self._pool.acquire() as conn:
            found = None if tid is None or cid is None else await self._repo.get(conn, tid, cid)
            if found is None or tid is None:
                raise NotFound("customer", customer_id)
            rows = await self._repo.conversations(conn, tid, uuid.UUID(found.id))
        out = []
        for r in rows:
            c = pb.Conversation(interaction_id=str(r["interaction_id"]), channel=r["channel"])
            c.start_time.FromDatetime(r["started_at"])
            out.append(c)
        return out

    async def back_on_web(self, tenant_id: str, interaction_id: uuid.UUID) -> None:
        async with self._pool.acquire() as conn:
            await self._repo.unfollow(conn, uuid.UUID(tenant_id), interaction_id)

    async def start(
        self,
        channel: tpb.Channel,
        tenant_id: str,
        customer: mpb.Customer,
        on: int,
        media: int,
        md: Any,
        collected: dict[str, str] | None = None,
    ) -> mpb.StartInteractionResponse:
        """The customer's new interaction, with their earlier ones (on every channel, merged
        customers' too) for whoever takes it, and remembered in their history."""
        async with self._pool.acquire() as conn:
            earlier = await self._repo.conversations(
                conn, uuid.UUID(tenant_id), uuid.UUID(customer.id), HISTORY_ON_START
            )
        for row in earlier:
            contact = customer.history.add(
                interaction_id=str(row["interaction_id"]), channel=row["channel"]
            )
            contact.start_time.FromDatetime(row["started_at"])
        started = await self._platform.start(channel, tenant_id, customer, on, media, md, collected)
        async with self._pool.acquire() as conn:
            await self._repo.remember_interaction(
                conn,
                uuid.UUID(tenant_id),
                uuid.UUID(customer.id),
                uuid.UUID(started.interaction.id),
                on,
            )
        return started


@dataclass(frozen=True)
class Inbound:
    """One message from a customer's address on a channel without threads (SMS, WeChat)."""

    kind: int  # the identity kind of the address
    address: str
    on: int  # the channel (common.Channel)
    media: int
    # The channel's own id of the message: a retry of it is kept once.
    client_id: str
    text: str


class Conversations:
    """Messages of the channels without threads: each continues the address's newest
    conversation on the channel while it is open, and starts one otherwise."""

    def __init__(
        self,
        platform: Platform,
        customers: Customers,
        pool: asyncpg.Pool,
        repo: Repository,
        surveys: Surveys,
    ) -> None:
        self._platform = platform
        self._customers = customers
        self._pool = pool
        self._repo = repo
        self._surveys = surveys

    async def consent(self, tenant_id: str, kind: int, address: str, stop: bool) -> None:
        """Record an opt-out (STOP) or an opt-in again (START) of the address's owner."""
        await self._customers.resolve(tenant_id, kind, address)
        async with self._pool.acquire() as conn:
            await self._repo.set_opt_out(conn, uuid.UUID(tenant_id), kind, address, stop)

    async def take(self, tenant_id: str, channel: tpb.Channel, message: Inbound) -> None:
        tid, cid = uuid.UUID(tenant_id), uuid.UUID(channel.id)
        customer = await self._customers.resolve(tenant_id, message.kind, message.address)
        md = bearer(await self._platform.customer_session(tenant_id, customer, message.on))
        async with self._pool.acquire() as conn:
            latest = await self._repo.latest_conversation(conn, tid, cid, message.address)
        said = mpb.SendRequest(
            tenant_id=tenant_id,
            client_message_id=message.client_id,
            content=mpb.MessageContent(text=message.text),
        )
        if latest is not None:
            said.interaction_id = str(latest["interaction_id"])
            said.participant_id = latest["customer_participant"]
            try:
                await self._platform.media.Send(said, metadata=md)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
            # That conversation has ended: a digit may answer its satisfaction survey;
            # anything else starts another.
            if await self._surveys.answer(tenant_id, latest, message.text):
                return
        if await self._continue_elsewhere(tid, cid, customer, message, said):
            return
        started = await self._customers.start(
            channel,
            tenant_id,
            mpb.Customer(id=customer, address=message.address),
            message.on,
            message.media,
            md,
        )
        async with self._pool.acquire() as conn:
            await self._repo.add_conversation(
                conn,
                tid,
                uuid.UUID(started.interaction.id),
                cid,
                message.address,
                started.customer_participant_id,
                language=domain.guess_language(message.text),
            )
        said.interaction_id = started.interaction.id
        said.participant_id = started.customer_participant_id
        await self._platform.media.Send(said, metadata=md)

    async def _continue_elsewhere(
        self,
        tid: uuid.UUID,
        channel_id: uuid.UUID,
        customer: str,
        message: Inbound,
        said: mpb.SendRequest,
    ) -> bool:
        """A customer who moves channels mid-conversation (a web chat, then a text) stays in
        their open interaction: the message joins it, and the agent's replies follow them to
        this channel from then on. Whether they are one customer is the customer store's to
        say (a verified identity, linked)."""
        async with self._pool.acquire() as conn:
            newest = await self._repo.newest_interaction(conn, tid, uuid.UUID(customer))
        if newest is None or newest["channel"] == message.on:
            return False
        tenant_id, interaction = str(tid), str(newest["interaction_id"])
        try:
            md, me = await self._platform.as_customer_in(
                tenant_id, interaction, str(newest["customer_id"]), newest["channel"]
            )
            said.interaction_id, said.participant_id = interaction, me
            await self._platform.media.Send(said, metadata=md)
        except grpc.aio.AioRpcError as error:
            if error.code() not in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                raise
            return False  # it has ended: this message starts another
        async with self._pool.acquire() as conn:
            await self._repo.follow(
                conn, tid, uuid.UUID(interaction), channel_id, message.address, me
            )
        log.info("a customer continued on another channel", channel=message.on)
        return True


async def _refuse(ws: web.WebSocketResponse, error: Exception) -> None:
    """Close a browser's socket with the WebSocket convention's code for why."""
    if isinstance(error, domain.BadMessage):
        await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=str(error)[:120].encode())
    elif isinstance(error, ResourceExhausted):
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many messages")
    else:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no hello in time")


@dataclass(frozen=True)
class Where:
    """A web chat session's tenant, channel and customer."""

    tenant_id: str
    channel_id: str
    customer_id: str
    title: str


async def _body(request: web.Request, limit: int) -> bytes:
    """The request's body, refused past `limit` bytes however it was sent (chunked too)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            raise domain.BadAttachment(f"larger than {limit} bytes", too_large=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class WebChat:
    """The web and H5 chat: the widget's script, a page that hosts it, and its WebSocket."""

    def __init__(
        self,
        view: TenantConfigView,
        platform: Platform,
        customers: Customers,
        attachments: Attachments,
        form_path: Callable[[str, str], str],
        settings: GatewaySettings,
    ) -> None:
        self._view = view
        self._platform = platform
        self._customers = customers
        self._attachments = attachments
        self._form_path = form_path
        self._settings = settings
        self._flood = quotas.RateLimiter()

    def routes(self) -> list[web.RouteDef]:
        upload = "/v1/web/{tenant}/{channel}/upload/{interaction}/{participant}/{customer}"
        rate = "/v1/web/{tenant}/{channel}/rate/{interaction}/{participant}/{customer}"
        return [
            web.post(rate, self.rate),
            web.options(rate, self.upload_preflight),
            web.get("/v1/web/{tenant}/{channel}/widget.js", self.widget),
            web.get("/v1/web/{tenant}/{channel}/", self.page),
            web.get("/v1/web/{tenant}/{channel}/ws", self.socket),
            web.post(upload, self.upload),
            web.options(upload, self.upload_preflight),
        ]

    def _origin(self, request: web.Request, channel: tpb.Channel) -> str:
        origin = request.headers.get("Origin", "")
        if not domain.origin_allowed(origin, list(channel.web.allowed_origins)):
            raise web.HTTPForbidden(text="this page's origin may not open the chat")
        return origin

    async def upload_preflight(self, request: web.Request) -> web.Response:
        """CORS: the widget runs on the tenant's pages, and uploads to the gateway."""
        _, channel = self._channel(request)
        origin = self._origin(request, channel)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type, X-Filename, X-Message-Id",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    def _signed(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """The tenant of a path `welcome` signed for this customer in this interaction, called
        from an allowed page, and the CORS headers of the answer."""
        tenant_id, channel = self._channel(request)
        cors = {"Access-Control-Allow-Origin": self._origin(request, channel), "Vary": "Origin"}
        if not self._attachments.links.admits(request.path, request.query):
            raise web.HTTPForbidden(text="this link is not valid, or has expired", headers=cors)
        return tenant_id, cors

    async def rate(self, request: web.Request) -> web.Response:
        """The customer's rating once the chat is over (CSAT), on the path `welcome` signed."""
        tenant_id, cors = self._signed(request)
        try:
            score, comment = domain.parse_rating(await request.read())
        except domain.BadMessage as error:
            raise web.HTTPBadRequest(text=str(error), headers=cors) from None
        m = request.match_info
        token = await self._platform.customer_session(tenant_id, m["customer"], common.CHANNEL_WEB)
        try:
            await self._platform.media.Rate(
                mpb.RateRequest(
                    tenant_id=tenant_id,
                    interaction_id=m["interaction"],
                    participant_id=m["participant"],
                    rating=mpb.Rating(score=score, comment=comment),
                ),
                metadata=bearer(token),
            )
        except grpc.aio.AioRpcError as error:
            status = 409 if error.code() == grpc.StatusCode.FAILED_PRECONDITION else 403
            return web.Response(status=status, text=error.code().name, headers=cors)
        return web.json_response({"score": score}, headers=cors)

    async def upload(self, request: web.Request) -> web.Response:
        """A file or an image from the chat: kept, then sent into the interaction as the
        customer. The path comes signed in `welcome`, for this customer in this interaction."""
        tenant_id, cors = self._signed(request)
        interaction = request.match_info["interaction"]
        client_id = request.headers.get("X-Message-Id", "")
        if not domain.CLIENT_ID.fullmatch(client_id):
            raise web.HTTPBadRequest(text="X-Message-Id: 1 to 64 of A-Z a-z 0-9 _ . : -")
        limit = self._settings.gateway_attachment_max_bytes
        length = request.content_length or 0
        if length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
        try:
            self._flood.take(
                f"{tenant_id}/{interaction}",
                "messages_per_second",
                self._settings.gateway_session_messages_per_second,
            )
            data = await _body(request, limit)
            kept = await self._attachments.keep(
                tenant_id,
                interaction,
                unquote(request.headers.get("X-Filename", "")),
                request.headers.get("Content-Type", ""),
                data,
            )
        except ResourceExhausted:
            raise web.HTTPTooManyRequests(text="too many messages", headers=cors) from None
        except domain.BadAttachment as error:
            if error.too_large:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1) from None
            raise web.HTTPUnsupportedMediaType(text=str(error), headers=cors) from None
        token = await self._platform.customer_session(
            tenant_id, request.match_info["customer"], common.CHANNEL_WEB
        )
        said = mpb.SendRequest(
            tenant_id=tenant_id,
            interaction_id=interaction,
            participant_id=request.match_info["participant"],
            client_message_id=client_id,
        )

        async def send(content: mpb.MessageContent) -> Any:
            said.content.CopyFrom(content)
            return await self._platform.media.Send(said, metadata=bearer(token))

        try:
            message = await self._attachments.deliver(tenant_id, kept, send)
        except grpc.aio.AioRpcError as error:
            status = {
                grpc.StatusCode.FAILED_PRECONDITION: 409,
                grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                grpc.StatusCode.PERMISSION_DENIED: 403,
                grpc.StatusCode.NOT_FOUND: 404,
            }.get(error.code(), 503)
            return web.Response(status=status, text=error.code().name, headers=cors)
        what = message.content.WhichOneof("content")
        a = message.content.image if what == "image" else message.content.file
        return web.json_response(
            {
                "id": a.uri.partition(":")[2],
                "name": a.name,
                "sha256": a.sha256,
                "size": a.size_bytes,
            },
            status=201,
            headers=cors,
        )

    def _channel(self, request: web.Request) -> tuple[str, tpb.Channel]:
        tenant_id, channel_id = request.match_info["tenant"], request.match_info["channel"]
        found = self._view.get(tenant_id, "channel", channel_id)
        tenant = self._view.tenant(tenant_id)
        if not isinstance(found, tpb.Channel) or found.WhichOneof("kind") != "web" or not tenant:
            raise web.HTTPNotFound(text="no such chat")
        if tenant.state != tpb.TENANT_STATE_ACTIVE:
            raise web.HTTPForbidden(text="the tenant is suspended")
        return tenant_id, found

    async def widget(self, request: web.Request) -> web.Response:
        self._channel(request)
        if not WIDGET.exists():
            raise web.HTTPServiceUnavailable(text="the widget is not built: run make")
        return web.Response(
            body=WIDGET.read_bytes(),
            content_type="application/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    async def page(self, request: web.Request) -> web.Response:
        """A page that only hosts the widget: what `make run` opens, and a way to try it."""
        _, channel = self._channel(request)
        title = html.escape(channel.web.title or "Chat with us", quote=True)
        # ?prechat=name,order_number asks those fields first, as data-prechat does on a page.
        fields = [f for f in request.query.get("prechat", "").split(",") if f][:20]
        if not all(domain.FORM_FIELD.fullmatch(f) for f in fields):
            raise web.HTTPBadRequest(text="prechat: field names of a-z, 0-9 and _")
        prechat = ",".join(fields)
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>Lianluo chat</title></head><body>"
            f"<script src='widget.js' data-title='{title}' data-prechat='{prechat}'></script>"
            "</body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def socket(self, request: web.Request) -> web.StreamResponse:
        tenant_id, channel = self._channel(request)
        self._origin(request, channel)
        ws = web.WebSocketResponse(
            heartbeat=30, max_msg_size=self._settings.gateway_max_frame_bytes
        )
        await ws.prepare(request)
        session = f"{tenant_id}/{secrets.token_hex(8)}"
        try:
            await self._serve(ws, tenant_id, channel, session)
        except (domain.BadMessage, ResourceExhausted, TimeoutError) as error:
            await _refuse(ws, error)
        except Exception as error:
            if not isinstance(error, grpc.aio.AioRpcError) and not is_outage(error):
                raise
            # The platform refused (a quota, an unknown interaction) or is away for a moment.
            log.warning("web chat closed by the platform", error=repr(error)[:200])
            reason = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "UNAVAILABLE"
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=reason.encode())
        finally:
            self._flood.forget(session)
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, tenant_id: str, channel: tpb.Channel, session: str
    ) -> None:
        first = await asyncio.wait_for(ws.receive(), self._settings.gateway_hello_seconds)
        if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        hello = domain.parse_hello(first.data)
        visitor = hello.visitor or f"v-{uuid.uuid4().hex}"
        customer = await self._customers.resolve(
            tenant_id, pb.IDENTITY_KIND_WEB_VISITOR, visitor, hello.name
        )
        token = await self._platform.customer_session(tenant_id, customer, common.CHANNEL_WEB)
        md = bearer(token)
        interaction, after = hello.interaction, hello.after
        if interaction and (iid := _uuid(interaction)) is not None:
            # Back on the web: replies stop following the customer to another channel.
            await self._customers.back_on_web(tenant_id, iid)
        if not interaction:
            started = await self._customers.start(
                channel,
                tenant_id,
                mpb.Customer(id=customer, display_name=hello.name),
                common.CHANNEL_WEB,
                common.MEDIA_TYPE_CHAT,
                md,
                hello.form,
            )
            interaction = started.interaction.id
        frames: asyncio.Queue[mpb.ClientFrame | None] = asyncio.Queue()
        frames.put_nowait(
            mpb.ClientFrame(
                join=mpb.Join(
                    tenant_id=tenant_id,
                    interaction_id=interaction,
                    role=R.PARTICIPANT_ROLE_CUSTOMER,
                    subject_id=customer,
                    display_name=hello.name,
                    last_seen_sequence=after,
                )
            )
        )

        async def outgoing() -> AsyncIterator[mpb.ClientFrame]:
            while (frame := await frames.get()) is not None:
                yield frame

        call = self._platform.media.Connect(outgoing(), metadata=md)
        where = Where(tenant_id, channel.id, customer, channel.web.title)
        relay = asyncio.create_task(self._to_browser(ws, call, visitor, where))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                try:
                    said = domain.parse_said(message.data)
                    self._flood.take(
                        session,
                        "messages_per_second",
                        self._settings.gateway_session_messages_per_second,
                    )
                except (domain.BadMessage, ResourceExhausted) as error:
                    # Closed here, before the relay ends and closes it normally.
                    await _refuse(ws, error)
                    break
                if said.kind == "message":
                    frames.put_nowait(
                        mpb.ClientFrame(
                            send=mpb.SendMessage(
                                client_message_id=said.client_id,
                                content=mpb.MessageContent(text=said.text),
                            )
                        )
                    )
                elif said.kind == "read":
                    frames.put_nowait(mpb.ClientFrame(ack=mpb.Ack(sequence=said.seq)))
                elif said.kind == "typing":
                    frames.put_nowait(mpb.ClientFrame(typing=mpb.Typing(active=said.active)))
                else:
                    frames.put_nowait(mpb.ClientFrame(leave=mpb.Leave(reason="left the chat")))
                if relay.done():
                    break
        finally:
            # The stream to media ends; the interaction does not: a browser that went away
            # without `leave` may come back and resume it.
            frames.put_nowait(None)
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(relay), 5)
            call.cancel()
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    async def _to_browser(
        self, ws: web.WebSocketResponse, call: Any, visitor: str, where: Where
    ) -> None:
        """Relay the interaction's timeline to the browser, then close the socket."""
        me = ""
        code, reason = WSCloseCode.OK, b""
        links = self._attachments

        def link(attachment_id: str) -> str:
            return links.path(where.tenant_id, attachment_id, self._settings.gateway_link_seconds)

        try:
            async for frame in call:
                if frame.WhichOneof("frame") == "joined":
                    me = frame.joined.participant_id
                    upload = (
                        f"/v1/web/{where.tenant_id}/{where.channel_id}/upload/"
                        f"{frame.interaction_id}/{me}/{where.customer_id}"
                    )
                    welcome = {
                        "type": "welcome",
                        "title": where.title,
                        "visitor": visitor,
                        "interaction": frame.interaction_id,
                        "upload": links.links.sign(upload, UPLOAD_SECONDS),
                        "rate": links.links.sign(
                            upload.replace("/upload/", "/rate/", 1), UPLOAD_SECONDS
                        ),
                    }
                    await ws.send_json(welcome)
                    continue
                shown = domain.shown(frame, me, link, lambda m: self._form_path(where.tenant_id, m))
                if shown is not None:
                    await ws.send_json(shown)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                # Resuming an interaction that is not the visitor's, say: PERMISSION_DENIED.
                code, reason = WSCloseCode.POLICY_VIOLATION, error.code().name.encode()
        except ConnectionResetError:
            return
        await ws.close(code=code, message=reason)
