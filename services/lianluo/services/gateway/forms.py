"""Forms agents send, filled on a page the gateway serves: a channel that cannot show a form
(SMS, e-mail, WeChat, the web chat) carries a signed link to it, and the answers go back into
the interaction as the customer's filled form."""

from __future__ import annotations

import html
import uuid

import asyncpg
import grpc
from aiohttp import web

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import Links
from lianluo.services.gateway import domain
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Platform
from lianluo.services.gateway.settings import GatewaySettings

log = get_logger(__name__)
T = mpb.FormFieldType
INPUT_TYPES = {
    T.FORM_FIELD_TYPE_NUMBER: "number",
    T.FORM_FIELD_TYPE_DATE: "date",
    T.FORM_FIELD_TYPE_EMAIL: "email",
    T.FORM_FIELD_TYPE_PHONE: "tel",
}
# The page runs no script, and posts only to itself.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'>"
    "<meta name='viewport' content='width=device-width, initial-scale=1'><title>{title}</title>"
    "<style>body{{font:16px sans-serif;max-width:480px;margin:24px auto;padding:0 12px}}"
    "label{{display:block;margin:12px 0 4px}}input,select{{width:100%;padding:8px;font-size:16px}}"
    "button{{margin-top:16px;padding:10px 20px;font-size:16px}}.error{{color:#b00020}}</style>"
    "</head><body><h1>{title}</h1>{body}</body></html>"
)


class Forms:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        platform: Platform,
        links: Links,
        settings: GatewaySettings,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._platform = platform
        self._links = links
        self._settings = settings

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/forms/{tenant}/{message}", self.page),
            web.post("/v1/forms/{tenant}/{message}", self.submit),
        ]

    def path(self, tenant_id: str, message_id: str) -> str:
        return self._links.sign(
            f"/v1/forms/{tenant_id}/{message_id}", self._settings.gateway_sent_link_seconds
        )

    def url(self, tenant_id: str, message_id: str) -> str:
        seconds = self._settings.gateway_sent_link_seconds
        return self._links.url(f"/v1/forms/{tenant_id}/{message_id}", seconds)

    async def _find(self, request: web.Request) -> asyncpg.Record:
        if not self._links.admits(request.path, request.query):
            raise web.HTTPForbidden(text="this link is not valid, or has expired")
        try:
            tid, mid = (
                uuid.UUID(request.match_info["tenant"]),
                uuid.UUID(request.match_info["message"]),
            )
        except ValueError:
            raise web.HTTPNotFound(text="no such form") from None
        async with self._pool.acquire() as conn:
            row = await self._repo.form(conn, tid, mid)
        if row is None:
            raise web.HTTPNotFound(text="no such form")
        return row

    async def page(self, request: web.Request) -> web.Response:
        row = await self._find(request)
        form = mpb.Form.FromString(row["form"])
        if row["submitted_at"] is not None:
            return _page(form, "<p>Thank you: your answers were sent.</p>")
        return _page(form, _fields(form, {}, ""))

    async def submit(self, request: web.Request) -> web.Response:
        row = await self._find(request)
        form = mpb.Form.FromString(row["form"])
        answers = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            filled = domain.fill_form(form, answers)
        except domain.BadForm as error:
            return _page(form, _fields(form, answers, str(error)), status=400)
        tid, mid = row["tenant_id"], row["message_id"]
        async with self._pool.acquire() as conn:
            if not await self._repo.claim_form(conn, tid, mid, claim=True):
                return _page(form, "<p>These answers were sent already.</p>", status=409)
        try:
            await self._send(row, filled)
        except BaseException:
            async with self._pool.acquire() as conn:
                await self._repo.claim_form(conn, tid, mid, claim=False)
            raise
        return _page(form, "<p>Thank you: your answers were sent.</p>")

    async def _send(self, row: asyncpg.Record, filled: mpb.Form) -> None:
        """The filled form into the interaction, as its customer."""
        tenant_id, interaction_id = str(row["tenant_id"]), str(row["interaction_id"])
        md, me = await self._platform.as_customer_in(
            tenant_id, interaction_id, str(row["customer_id"]), row["channel"]
        )
        try:
            await self._platform.media.Send(
                mpb.SendRequest(
                    tenant_id=tenant_id,
                    interaction_id=interaction_id,
                    participant_id=me,
                    client_message_id=f"form:{filled.form_id}"[:64],
                    content=mpb.MessageContent(form=filled),
                ),
                metadata=md,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise web.HTTPConflict(text="the conversation has ended") from None
            raise


def _fields(form: mpb.Form, answers: dict[str, str], error: str) -> str:
    e = html.escape
    parts = [
        f"<p class='error' role='alert'>{e(error)}</p>" if error else "",
        "<form method='post'>",
    ]
    for f in form.fields:
        label = e(f.label or f.name)
        name, value = e(f.name), e(answers.get(f.name, ""))
        required = " required" if f.required else ""
        parts.append(f"<label for='{name}'>{label}</label>")
        if f.type == T.FORM_FIELD_TYPE_CHOICE:
            options = "".join(
                f"<option{' selected' if o == answers.get(f.name) else ''}>{e(o)}</option>"
                for o in f.options
            )
            parts.append(f"<select id='{name}' name='{name}'{required}>{options}</select>")
        else:
            kind = INPUT_TYPES.get(f.type, "text")
            parts.append(
                f"<input id='{name}' name='{name}' type='{kind}' value='{value}'{required}>"
            )
    parts.append("<button type='submit'>Send</button></form>")
    return "".join(parts)


def _page(form: mpb.Form, body: str, status: int = 200) -> web.Response:
    title = html.escape(form.title or "A form to fill")
    return web.Response(
        text=PAGE.format(title=title, body=body),
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP},
    )
