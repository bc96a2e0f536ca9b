"""The console's backend-for-frontend: it signs people in, keeps their tokens in a sealed,
HTTP-only cookie (renewed with the refresh token before they expire), and turns the pages'
JSON requests into calls of the cell's services with the person's own token. The services
decide what the person may do; the console only carries it.

Live updates are server-sent events: an agent's desk (offers) and the conversations the page
follows, relayed from media's streams, and the supervisor wall's queue figures. A page that
reconnects names the last sequence it saw of each conversation, and gets what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.ivr.v1 import ivr_pb2 as ivr_pb
from lianluo.ivr.v1 import ivr_pb2_grpc as ivr_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.runtime.grpc_server import platform_channel
from lianluo.runtime.logs import get_logger
from lianluo.services.console import domain
from lianluo.services.console.domain import BadInput, Session
from lianluo.services.console.settings import ConsoleSettings
from lianluo.tenants.v1 import knowledge_pb2 as kpb
from lianluo.tenants.v1 import knowledge_pb2_grpc as knowledge_rpc
from lianluo.tenants.v1 import tenants_pb2 as tpb
from lianluo.tenants.v1 import tenants_pb2_grpc as tenants_rpc
from lianluo.voice.v1 import voice_pb2 as vpb
from lianluo.voice.v1 import voice_pb2_grpc as voice_rpc

log = get_logger(__name__)
# The pages, built by `make` from web/ (pinned npm packages); never loaded from a CDN.
DIST = Path(__file__).parent / "web" / "dist"
R = mpb.ParticipantRole
HTTP_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


# The live event that tells the page its person's session ended (signed out elsewhere,
# disabled, or their tenant suspended): the platform ended the streams it was serving them.
SIGNED_OUT = "signed_out"


def _ended(error: grpc.aio.AioRpcError, interaction_id: str) -> tuple[str, dict[str, Any]]:
    """The live event for a stream the platform ended."""
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return SIGNED_OUT, {}
    return "closed", {"interaction": interaction_id, "error": error.code().name.lower()}


def _refusal(error: grpc.aio.AioRpcError) -> web.Response:
    """A service's refusal as the page shows it: the status, and each field beside its input."""
    fields: dict[str, str] = {}
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                fields |= {v.field: v.description for v in bad.field_violations}
    code = HTTP_OF.get(error.code(), 503)
    body = {"error": error.code().name.lower(), "message": error.details() or "", "fields": fields}
    return web.json_response(body, status=code)


class Platform:
    """The cell's services, called with the person's token."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self._channels = {
            name: platform_channel(address, settings)
            for name, address in (
                ("tenants", settings.console_tenants_address),
                ("media", settings.console_media_address),
                ("ivr", settings.console_ivr_address),
                ("acd", settings.console_acd_address),
                ("gateway", settings.console_gateway_address),
                ("voice", settings.console_voice_address),
            )
        }
        self.auth = tenants_rpc.AuthServiceStub(self._channels["tenants"])
        self.media = media_rpc.MediaServiceStub(self._channels["media"])
        self.acd = acd_rpc.AcdServiceStub(self._channels["acd"])
        self.customers = gateway_rpc.CustomerServiceStub(self._channels["gateway"])
        tenants = self._channels["tenants"]
        self.tenants = tenants_rpc.TenantServiceStub(tenants)
        self.queues = tenants_rpc.QueueServiceStub(tenants)
        self.agents = tenants_rpc.AgentServiceStub(tenants)
        self.users = tenants_rpc.UserServiceStub(tenants)
        self.flows = tenants_rpc.FlowServiceStub(tenants)
        self.channels = tenants_rpc.ChannelServiceStub(tenants)
        self.notifications = tenants_rpc.NotificationConfigServiceStub(tenants)
        self.knowledge = knowledge_rpc.KnowledgeServiceStub(tenants)
        self.ivr = ivr_rpc.IvrServiceStub(self._channels["ivr"])
        self.attachments = gateway_rpc.AttachmentServiceStub(self._channels["gateway"])
        self.web_phones = voice_rpc.WebPhoneServiceStub(self._channels["voice"])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class Console:
    def __init__(self, platform: Platform, settings: ConsoleSettings) -> None:
        self._platform = platform
        self._settings = settings
        self._key = domain.cookie_key(settings.admin_key.get_secret_value())

    def routes(self) -> list[web.AbstractRouteDef]:
        api = [
            web.post("/api/login", self.login),
            web.post("/api/logout", self._authed(self.logout)),
            web.get("/api/me", self._authed(self.me)),
            web.post("/api/presence", self._authed(self.presence)),
            web.post("/api/phone", self._authed(self.open_phone)),
            web.post("/api/phone/close", self._authed(self.close_phone)),
            web.post("/api/offers/{offer}", self._authed(self.respond)),
            web.get("/api/conversations/{interaction}", self._authed(self.conversation)),
            web.post("/api/conversations/{interaction}/messages", self._authed(self.send)),
            web.post("/api/conversations/{interaction}/end", self._authed(self.end)),
            web.post("/api/conversations/{interaction}/files", self._authed(self.attach)),
            web.post("/api/conversations/{interaction}/transfer", self._authed(self.transfer)),
            web.post("/api/conversations/{interaction}/take-over", self._authed(self.take_over)),
            web.post("/api/conversations/{interaction}/callback", self._authed(self.call_back)),
            web.get("/api/customers/{customer}/conversations", self._authed(self.history)),
            web.get("/api/attachments/{attachment}", self._authed(self.attachment)),
            web.get("/api/queues", self._authed(self.queues)),
            web.get("/api/directory", self._authed(self.directory)),
            web.get("/api/knowledge", self._authed(self.search_knowledge)),
            web.get("/api/knowledge/{article}", self._authed(self.article)),
            web.get("/api/canned", self._authed(self.canned)),
            web.post("/api/agents/{agent}/presence", self._authed(self.agent_presence)),
            web.get("/api/reports", self._authed(self.report)),
            web.get("/api/reports.csv", self._authed(self.report_csv)),
            web.get("/api/live", self._authed(self.live)),
            web.get("/api/admin/tenant", self._authed(self.tenant)),
            web.post("/api/admin/tenant", self._authed(self.change_tenant)),
            web.post("/api/admin/flows/check", self._authed(self.check_flow)),
            web.post("/api/admin/flows/publish", self._authed(self.publish_flow)),
            web.get("/api/admin/{kind}", self._authed(self.listed)),
            web.post("/api/admin/{kind}", self._authed(self.create)),
        ]
        return [*api, web.get("/", self.index), web.static("/assets", DIST, append_version=False)]

    # ------------------------------------------------------------------ sessions

    def _cookie(self, response: web.StreamResponse, session: Session | None) -> None:
        if session is None:
            response.del_cookie(domain.COOKIE, path="/")
            return
        response.set_cookie(
            domain.COOKIE,
            domain.seal(session, self._key),
            path="/",
            httponly=True,
            secure=self._settings.console_secure_cookies,
            samesite="Strict",
            max_age=12 * 3600,
        )

    async def _session(self, request: web.Request) -> Session | None:
        """The signed-in person, with an access token renewed when it is due."""
        found = domain.unseal(request.cookies.get(domain.COOKIE, ""), self._key)
        if found is None or not found.due(domain.now()):
            return found
        try:
            tokens = await self._platform.auth.Refresh(
                tpb.RefreshRequest(refresh_token=found.refresh)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return None  # ended, expired or revoked: sign in again
            raise
        renewed = domain.session_from(tokens)
        request["renewed"] = renewed
        return renewed

    def _authed(self, handler: Endpoint) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.method != "GET" and request.headers.get("X-Requested-With") != "lianluo":
                # Pages send this header; a form posted from another site cannot.
                return web.json_response({"error": "csrf"}, status=403)
            try:
                session = await self._session(request)
                if session is None:
                    out = web.json_response({"error": "signed_out"}, status=401)
                    self._cookie(out, None)
                    return out
                response = await handler(request, session)
            except BadInput as error:
                return web.json_response(
                    {"error": "invalid_argument", "fields": error.fields}, status=400
                )
            except grpc.aio.AioRpcError as error:
                refused = _refusal(error)
                if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._cookie(refused, None)
                return refused
            renewed = request.get("renewed")
            if renewed is not None and not response.prepared:
                self._cookie(response, renewed)
            return response

        return wrapped

    @staticmethod
    def _md(session: Session) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {session.access}"),)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if (request.content_length or 0) > self._settings.console_max_body_bytes:
            raise BadInput({"body": "too large"})
        try:
            found = await request.json()
        except ValueError:
            raise BadInput({"body": "not JSON"}) from None
        if not isinstance(found, dict):
            raise BadInput({"body": "not a JSON object"})
        return found

    # ------------------------------------------------------------------ pages and sign-in

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = DIST / "index.html"
        if not page.exists():
            raise web.HTTPServiceUnavailable(text="the console is not built: run make")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def login(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Requested-With") != "lianluo":
            return web.json_response({"error": "csrf"}, status=403)
        try:
            tenant, name, password = domain.login_fields(await self._body(request))
            tokens = await self._platform.auth.Login(
                tpb.LoginRequest(tenant=tenant, name=name, password=password)
            )
        except BadInput as error:
            return web.json_response(
                {"error": "invalid_argument", "fields": error.fields}, status=400
            )
        except grpc.aio.AioRpcError as error:
            return _refusal(error)
        session = domain.session_from(tokens)
        response = web.json_response(self._me(session))
        self._cookie(response, session)
        return response

    async def logout(self, request: web.Request, session: Session) -> web.Response:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._platform.auth.Logout(tpb.LogoutRequest(refresh_token=session.refresh))
        response = web.json_response({})
        self._cookie(response, None)
        return response

    @staticmethod
    def _me(session: Session) -> dict[str, Any]:
        return session.user | {"pages": list(domain.pages(session.role))}

    async def me(self, request: web.Request, session: Session) -> web.Response:
        return web.json_response(self._me(session))

    # ------------------------------------------------------------------ the agent desk

    async def presence(self, request: web.Request, session: Session) -> web.Response:
        name, value = domain.presence(await self._body(request))
        await self._platform.acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=session.tenant_id, agent_id=session.agent_id, presence=value
            ),
            metadata=self._md(session),
        )
        return web.json_response({"presence": name})

    async def open_phone(self, request: web.Request, session: Session) -> web.Response:
        """The agent's phone in the browser: the page's WebRTC offer in, the answer out."""
        offer = (await self._body(request)).get("sdp")
        if not isinstance(offer, str) or not offer:
            raise BadInput({"sdp": "the page's WebRTC offer"})
        opened = await self._platform.web_phones.OpenWebPhone(
            vpb.OpenWebPhoneRequest(
                tenant_id=session.tenant_id, agent_id=session.agent_id, sdp=offer
            ),
            metadata=self._md(session),
        )
        return web.json_response({"sdp": opened.sdp})

    async def close_phone(self, request: web.Request, session: Session) -> web.Response:
        closed = await self._platform.web_phones.CloseWebPhone(
            vpb.CloseWebPhoneRequest(tenant_id=session.tenant_id, agent_id=session.agent_id),
            metadata=self._md(session),
        )
        return web.json_response({"closed": closed.closed})

    async def respond(self, request: web.Request, session: Session) -> web.Response:
        body = await self._body(request)
        accept = body.get("accept")
        if not isinstance(accept, bool):
            raise BadInput({"accept": "true or false"})
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 200:
            raise BadInput({"reason": "at most 200 characters"})
        offer = await self._platform.acd.RespondToOffer(
            apb.RespondToOfferRequest(
                tenant_id=session.tenant_id,
                offer_id=request.match_info["offer"],
                agent_id=session.agent_id,
                accept=accept,
                decline_reason=reason,
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(offer))

    async def conversation(self, request: web.Request, session: Session) -> web.Response:
        it = await self._platform.media.GetInteraction(
            mpb.GetInteractionRequest(
                tenant_id=session.tenant_id, interaction_id=request.match_info["interaction"]
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(it))

    async def send(self, request: web.Request, session: Session) -> web.Response:
        body = await self._body(request)
        content, client_id = domain.message_content(body)
        participant = domain.participant(body)
        whisper = body.get("whisper", False)
        if not isinstance(whisper, bool):
            raise BadInput({"whisper": "true or false"})
        message = await self._platform.media.Send(
            mpb.SendRequest(
                tenant_id=session.tenant_id,
                interaction_id=request.match_info["interaction"],
                participant_id=participant,
                client_message_id=client_id,
                content=content,
                whisper=whisper,
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(message))

    async def attach(self, request: web.Request, session: Session) -> web.Response:
        """A file or an image from the desk: kept by the gateway (which checks it), then sent
        into the conversation as the agent."""
        participant = domain.participant({"participant": request.headers.get("X-Participant")})
        client_id = request.headers.get("X-Message-Id", "")
        domain.message_text({"text": "file", "id": client_id})  # the id's rules
        if (request.content_length or 0) > domain.MAX_FILE_BYTES:
            raise BadInput({"file": f"at most {domain.MAX_FILE_BYTES:,} bytes"})
        data = await request.content.read(domain.MAX_FILE_BYTES + 1)
        if len(data) > domain.MAX_FILE_BYTES:
            raise BadInput({"file": f"at most {domain.MAX_FILE_BYTES:,} bytes"})
        iid = request.match_info["interaction"]
        kept = await self._platform.attachments.UploadAttachment(
            gpb.UploadAttachmentRequest(
                tenant_id=session.tenant_id,
                interaction_id=iid,
                name=unquote(request.headers.get("X-Filename", "")),
                content_type=request.headers.get("Content-Type", ""),
                content=data,
            ),
            metadata=self._md(session),
        )
        message = await self._platform.media.Send(
            mpb.SendRequest(
                tenant_id=session.tenant_id,
                interaction_id=iid,
                participant_id=participant,
                client_message_id=client_id,
                content=kept.content,
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(message), status=201)

    async def end(self, request: web.Request, session: Session) -> web.Response:
        """End the conversation (wrap-up begins), or close the wrap-up with its disposition."""
        body = await self._body(request)
        participant = domain.participant(body)
        resolution = mpb.Resolution()
        if body.get("disposition") is not None:
            code, note = domain.wrap_up(body)
            resolution = mpb.Resolution(code=code, note=note)
        it = await self._platform.media.End(
            mpb.EndRequest(
                tenant_id=session.tenant_id,
                interaction_id=request.match_info["interaction"],
                participant_id=participant,
                resolution=resolution,
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(it))

    async def transfer(self, request: web.Request, session: Session) -> web.Response:
        """Hand the conversation to a queue, an agent or an expert, with a note for them."""
        body = await self._body(request)
        participant = domain.participant(body)
        handover = domain.transfer(body)
        handover.participant_id = participant
        it = await self._platform.media.Transfer(
            mpb.TransferRequest(
                tenant_id=session.tenant_id,
                interaction_id=request.match_info["interaction"],
                transfer=handover,
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(it))

    async def call_back(self, request: web.Request, session: Session) -> web.Response:
        """Schedule the call back the agent promised; it is offered to them when due."""
        body = await self._body(request)
        participant = domain.participant(body)
        number, due, note = domain.callback(body)
        it = await self._platform.media.ScheduleCallback(
            mpb.ScheduleCallbackRequest(
                tenant_id=session.tenant_id,
                interaction_id=request.match_info["interaction"],
                participant_id=participant,
                callback_number=number,
                due_time=due,
                note=note,
                request_id=f"{participant}:{due.ToJsonString()}",
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(it), status=201)

    # ------------------------------------------------------------------ help at the desk

    async def directory(self, request: web.Request, session: Session) -> web.Response:
        """Colleagues a conversation may go to, by name, skill or expertise."""
        found = await self._platform.agents.SearchDirectory(
            tpb.SearchDirectoryRequest(
                tenant_id=session.tenant_id,
                query=domain.search_text(request.query.get("q", "")),
                page=common_pb2.PageRequest(page_size=20),
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(found))

    async def search_knowledge(self, request: web.Request, session: Session) -> web.Response:
        found = await self._platform.knowledge.SearchArticles(
            kpb.SearchArticlesRequest(
                tenant_id=session.tenant_id,
                query=domain.search_text(request.query.get("q", ""), 200),
                page=common_pb2.PageRequest(page_size=10),
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(found))

    async def article(self, request: web.Request, session: Session) -> web.Response:
        found = await self._platform.knowledge.GetArticle(
            kpb.GetArticleRequest(
                tenant_id=session.tenant_id, article_id=request.match_info["article"]
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(found))

    async def canned(self, request: web.Request, session: Session) -> web.Response:
        """The canned responses for a conversation's queue (and those for every queue)."""
        found = await self._platform.knowledge.ListCannedResponses(
            kpb.ListCannedResponsesRequest(
                tenant_id=session.tenant_id,
                queue=request.query.get("queue", "")[:63],
                page=common_pb2.PageRequest(page_size=100),
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(found))

    async def take_over(self, request: web.Request, session: Session) -> web.Response:
        """A supervisor who joined carries on alone; media refuses anyone else."""
        participant = domain.participant(await self._body(request))
        it = await self._platform.media.TakeOver(
            mpb.TakeOverRequest(
                tenant_id=session.tenant_id,
                interaction_id=request.match_info["interaction"],
                participant_id=participant,
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(it))

    async def history(self, request: web.Request, session: Session) -> web.Response:
        found = await self._platform.customers.ListConversations(
            gpb.ListConversationsRequest(
                tenant_id=session.tenant_id, customer_id=request.match_info["customer"]
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(found))

    async def attachment(self, request: web.Request, session: Session) -> web.Response:
        link = await self._platform.attachments.GetDownloadLink(
            gpb.GetDownloadLinkRequest(
                tenant_id=session.tenant_id, attachment_id=request.match_info["attachment"]
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(link))

    # ------------------------------------------------------------------ the supervisor wall

    async def _figures(self, session: Session) -> apb.QueueStatsResponse:
        stats: apb.QueueStatsResponse = await self._platform.acd.QueueStats(
            apb.QueueStatsRequest(tenant_id=session.tenant_id, queues=session.user["queues"]),
            metadata=self._md(session),
        )
        return stats

    async def _names(self, session: Session, names: dict[str, str], ids: list[str]) -> None:
        """Learn agents' names, only when an id is new: names change rarely."""
        if all(i in names for i in ids):
            return
        agents = await self._platform.agents.ListAgents(
            tpb.ListAgentsRequest(tenant_id=session.tenant_id), metadata=self._md(session)
        )
        names.update({a.id: a.display_name or a.name for a in agents.agents})

    async def _agents(self, session: Session, names: dict[str, str]) -> dict[str, Any]:
        """The watched queues' agents: presence and load, with their names."""
        presence = await self._platform.acd.ListAgentPresence(
            apb.ListAgentPresenceRequest(tenant_id=session.tenant_id), metadata=self._md(session)
        )
        await self._names(session, names, [p.agent_id for p in presence.agents])
        return {
            "agents": [
                domain.as_json(p) | {"name": names.get(p.agent_id, p.agent_id)}
                for p in presence.agents
            ]
        }

    async def agent_presence(self, request: web.Request, session: Session) -> web.Response:
        """A supervisor sets the presence of one of their queues' agents."""
        _, value = domain.presence(await self._body(request))
        found = await self._platform.acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=session.tenant_id,
                agent_id=request.match_info["agent"],
                presence=value,
                reason=f"set by {session.user['display_name']}",
            ),
            metadata=self._md(session),
        )
        return web.json_response(domain.as_json(found))

    async def queues(self, request: web.Request, session: Session) -> web.Response:
        return web.json_response(domain.as_json(await self._figures(session)))

    async def _report(self, request: web.Request, session: Session) -> apb.ReportResponse:
        ask = domain.report_request(session.tenant_id, request.query)
        found: apb.ReportResponse = await self._platform.acd.Report(ask, metadata=self._md(session))
        if ask.group_by == apb.REPORT_GROUPING_AGENT:
            # People read agents by name; the ACD reports them by id.
            names: dict[str, str] = {}
            await self._names(session, names, [row.key for row in found.rows])
            for row in found.rows:
                row.key = names.get(row.key, row.key)
        return found

    async def report(self, request: web.Request, session: Session) -> web.Response:
        return web.json_response(domain.as_json(await self._report(request, session)))

    async def report_csv(self, request: web.Request, session: Session) -> web.Response:
        found = await self._report(request, session)
        q = request.query
        name = f"lianluo-{q.get('group_by', 'queue')}-{q.get('from')}-{q.get('to')}.csv"
        return web.Response(
            text=domain.report_csv(found),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # ------------------------------------------------------------------ administration

    def _kind(self, request: web.Request) -> domain.Kind:
        kind = domain.ADMIN_KINDS.get(request.match_info["kind"])
        if kind is None:
            raise web.HTTPNotFound(text="no such kind")
        return kind

    async def listed(self, request: web.Request, session: Session) -> web.Response:
        kind = self._kind(request)
        stub = getattr(self._platform, kind.stub)
        found = await getattr(stub, f"List{kind.plural}")(
            kind.list_request(tenant_id=session.tenant_id), metadata=self._md(session)
        )
        return web.json_response(domain.as_json(found))

    async def create(self, request: web.Request, session: Session) -> web.Response:
        """A queue, an agent or a person, as the page describes it; the tenants service checks
        it and names what it refuses, field by field."""
        kind = self._kind(request)
        if not kind.creatable:
            raise web.HTTPMethodNotAllowed("POST", ["GET"])
        body = await self._body(request)
        create = domain.creation(kind, session.tenant_id, body)
        stub = getattr(self._platform, kind.stub)
        made = await getattr(stub, f"{kind.verb}{kind.singular}")(
            create, metadata=self._md(session)
        )
        return web.json_response(domain.as_json(made), status=201)

    async def tenant(self, request: web.Request, session: Session) -> web.Response:
        found = await self._platform.tenants.GetTenant(
            tpb.GetTenantRequest(tenant_id=session.tenant_id), metadata=self._md(session)
        )
        shown = domain.as_json(found)
        return web.json_response({k: shown.get(k, {}) for k in ("name", *domain.TENANT_SETTINGS)})

    async def change_tenant(self, request: web.Request, session: Session) -> web.Response:
        """Business hours and the routing policy; the tenants service checks both with the
        rules the IVR and the ACD use, and names the field it refuses."""
        update = domain.tenant_settings(session.tenant_id, await self._body(request))
        changed = await self._platform.tenants.UpdateTenant(update, metadata=self._md(session))
        shown = domain.as_json(changed)
        return web.json_response({k: shown.get(k, {}) for k in domain.TENANT_SETTINGS})

    async def check_flow(self, request: web.Request, session: Session) -> web.Response:
        """What the IVR says of a flow before it is published: its problems, and what happens
        to a customer who answers as the page scripts."""
        body = await self._body(request)
        flow = domain.flow(body)
        inputs = domain.simulated_inputs(body)
        md = self._md(session)
        problems = await self._platform.ivr.ValidateFlow(
            ivr_pb.ValidateFlowRequest(tenant_id=session.tenant_id, flow=flow), metadata=md
        )
        run = await self._platform.ivr.SimulateFlow(
            ivr_pb.SimulateFlowRequest(tenant_id=session.tenant_id, flow=flow, inputs=inputs),
            metadata=md,
        )
        return web.json_response(
            {"validation": domain.as_json(problems), "simulation": domain.as_json(run)}
        )

    async def publish_flow(self, request: web.Request, session: Session) -> web.Response:
        """Store a new version of a flow, only when the IVR finds no error in it."""
        flow = domain.flow(await self._body(request))
        md = self._md(session)
        problems = await self._platform.ivr.ValidateFlow(
            ivr_pb.ValidateFlowRequest(tenant_id=session.tenant_id, flow=flow), metadata=md
        )
        if not problems.valid:
            return web.json_response(
                {"error": "invalid_argument", "validation": domain.as_json(problems)}, status=400
            )
        stored = await self._platform.flows.PutFlow(
            tpb.PutFlowRequest(tenant_id=session.tenant_id, flow=flow), metadata=md
        )
        return web.json_response(domain.as_json(stored), status=201)

    # ------------------------------------------------------------------ live events

    async def live(self, request: web.Request, session: Session) -> web.StreamResponse:
        """Server-sent events until the page goes: `frame` (desk and conversations) for an
        agent, `queues` for those who watch queues."""
        follows = domain.followed(request.query.get("follow", ""))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        renewed = request.get("renewed")
        if renewed is not None:
            self._cookie(response, renewed)
        await response.prepare(request)
        out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)
        tasks = []
        if session.role == tpb.ROLE_AGENT:
            desk = mpb.Join(
                tenant_id=session.tenant_id,
                role=R.PARTICIPANT_ROLE_AGENT,
                subject_id=session.agent_id,
            )
            tasks.append(asyncio.create_task(self._relay(session, desk, out)))
        agent = session.role == tpb.ROLE_AGENT
        for iid, (seq, monitor) in follows.items():
            join = mpb.Join(
                tenant_id=session.tenant_id,
                interaction_id=iid,
                role=R.PARTICIPANT_ROLE_AGENT if agent else R.PARTICIPANT_ROLE_SUPERVISOR,
                subject_id=session.agent_id if agent else session.user["id"],
                display_name=session.user["display_name"],
                last_seen_sequence=seq,
                monitor=monitor and not agent,
            )
            tasks.append(asyncio.create_task(self._relay(session, join, out)))
        if session.role in (tpb.ROLE_SUPERVISOR, tpb.ROLE_TENANT_ADMIN):
            tasks.append(asyncio.create_task(self._watch(session, out)))
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    kind, data = await asyncio.wait_for(out.get(), 15)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                if kind == SIGNED_OUT:
                    break  # the page asks the person to sign in, then opens its events again
        except ConnectionResetError:
            log.debug("a page left its live events")  # the page went away: nothing to do
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return response

    async def _relay(
        self, session: Session, join: mpb.Join, out: asyncio.Queue[tuple[str, dict[str, Any]]]
    ) -> None:
        async def frames() -> AsyncIterator[mpb.ClientFrame]:
            yield mpb.ClientFrame(join=join)
            await asyncio.Event().wait()  # held open: the page sends through the JSON API

        call = self._platform.media.Connect(frames(), metadata=self._md(session))
        try:
            async for frame in call:
                await out.put(
                    ("frame", {"interaction": join.interaction_id, "frame": domain.as_json(frame)})
                )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                await out.put(_ended(error, join.interaction_id))
        finally:
            call.cancel()

    async def _watch(
        self, session: Session, out: asyncio.Queue[tuple[str, dict[str, Any]]]
    ) -> None:
        """The watched queues' figures and their live conversations, sent when they change."""
        last: dict[str, Any] = {}
        names: dict[str, str] = {}
        while True:
            try:
                stats = domain.as_json(await self._figures(session))
                stats.pop("compute_time", None)
                live = await self._platform.media.ListInteractions(
                    mpb.ListInteractionsRequest(tenant_id=session.tenant_id),
                    metadata=self._md(session),
                )
                talks = {"conversations": [domain.summary(it) for it in live.interactions]}
                people = await self._agents(session, names)
                for kind, now in (
                    ("queues", stats),
                    ("conversations", talks),
                    ("agents", people),
                ):
                    if now != last.get(kind):
                        await out.put((kind, now))
                        last[kind] = now
            except grpc.aio.AioRpcError as error:
                await out.put(_ended(error, ""))
                return
            await asyncio.sleep(self._settings.console_live_seconds)
