"""The satisfaction survey on the customer's own channel (docs/channels.md, "Satisfaction
survey"). Once a conversation a person handled has closed, its customer is asked for a rating
where they wrote, once: a text on SMS and WeChat, which a digit answers; a mail whose links open
a page of the gateway, whose buttons answer. Either way the score goes to media's `Rate`, as the
customer, and the ACD's reports count it as they count the web chat's."""

from __future__ import annotations

import html
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import grpc
from aiohttp import web

from lianluo.events.v1 import interaction_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.kafka import Envelope
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import Links
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.gateway import domain
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Platform
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
# The page runs no script, and posts only to itself.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'>"
    "<meta name='viewport' content='width=device-width, initial-scale=1'><title>{title}</title>"
    "<style>body{{font:16px sans-serif;max-width:480px;margin:24px auto;padding:0 12px}}"
    "form{{display:inline}}button{{margin:4px;padding:12px 18px;font-size:20px}}"
    "button.chosen{{font-weight:bold;outline:3px solid #1a73e8}}</style>"
    "</head><body><h1>{title}</h1>{body}</body></html>"
)
# The page's words, by language (English when unknown).
WORDS = {
    "en": {
        "title": "How did we do?",
        "ask": "Choose a rating from 1 (poor) to 5 (great), then it is sent.",
        "rated": "This conversation has been rated already. Thank you!",
    },
    # Chinese punctuation is full-width.
    "zh": {
        "title": "我们的服务如何？",  # noqa: RUF001
        "ask": "请选择 1（很差）到 5（很好），点击即提交。",  # noqa: RUF001
        "rated": "您已评价过这次服务，谢谢！",  # noqa: RUF001
    },
}


def _words(language: str) -> dict[str, str]:
    return WORDS["zh" if language.lower().startswith("zh") else "en"]


def message_id(interaction_id: uuid.UUID, what: str) -> uuid.UUID:
    """The id of the gateway's own message in a conversation ("survey", "thanks"): one each,
    however often the event that makes it comes."""
    return uuid.uuid5(interaction_id, what)


class SurveyLinks:
    """The signed links of an e-mail survey: one per score, each to a page of the gateway."""

    PATH = "/v1/survey/{tenant}/{interaction}/{score}"

    def __init__(self, links: Links, settings: GatewaySettings) -> None:
        self._links = links
        self._seconds = settings.gateway_sent_link_seconds

    def path(self, tenant_id: str, interaction_id: str, score: int) -> str:
        path = self.PATH.format(tenant=tenant_id, interaction=interaction_id, score=score)
        return self._links.sign(path, self._seconds)

    def urls(self, tenant_id: str, interaction_id: str) -> list[str]:
        """The links for the scores 1 to 5, in order."""
        return [
            self._links.url(
                self.PATH.format(tenant=tenant_id, interaction=interaction_id, score=n),
                self._seconds,
            )
            for n in range(1, 6)
        ]

    def admits(self, request: web.Request) -> bool:
        return self._links.admits(request.path, request.query)


class Surveys:
    """Asking (on `interaction.ended`) and taking the answers (a text, or a click on a page)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        platform: Platform,
        links: SurveyLinks,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._platform = platform
        self._links = links
        # Tells the reply sender something is due.
        self._wake = wake

    async def ask(
        self, conn: asyncpg.Connection, envelope: Envelope, event: interaction_pb2.InteractionEvent
    ) -> None:
        """On interaction.ended: the customer of a closed conversation a person handled, on a
        channel that answers later, is asked once, through the replies' path (so retries,
        opt-outs and the channel's signature apply as to any reply)."""
        ended = event.ended
        tid, iid = uuid.UUID(envelope.tenant_id), uuid.UUID(event.interaction_id)
        row = await self._repo.conversation(conn, tid, iid)
        if row is None:
            return  # not a conversation of a channel that answers later
        channel = self._view.get(envelope.tenant_id, "channel", str(row["channel_id"]))
        kind = channel.WhichOneof("kind") if isinstance(channel, tpb.Channel) else None
        if not domain.asks_survey(ended.final_state, ended.resolution.code, kind):
            return
        if not await self._repo.add_survey(conn, tid, iid):
            return  # asked already: the event came again
        await self._repo.queue_text(conn, tid, message_id(iid, "survey"), iid, "", survey=True)
        log.info("a satisfaction survey queued", channel=kind)
        self._wake()

    async def answer(self, tenant_id: str, latest: asyncpg.Record, text: str) -> bool:
        """Whether a text to an ended conversation answered its survey (and was taken: the
        score is rated, the customer thanked). False: the text starts a new conversation."""
        score = domain.survey_score(text)
        if score is None:
            return False
        tid, iid = uuid.UUID(tenant_id), latest["interaction_id"]
        async with self._pool.acquire() as conn:
            survey = await self._repo.survey(conn, tid, iid)
        now = datetime.now(UTC)
        if survey is None or not domain.survey_answerable(
            survey["asked_at"], survey["rated_at"] is not None, now
        ):
            return False
        if not await self._rate(tid, iid, score):
            return False
        async with self._pool.acquire() as conn:
            thanks = domain.survey_thanks(latest["language"])
            await self._repo.queue_text(conn, tid, message_id(iid, "thanks"), iid, thanks)
        self._wake()
        return True

    async def _rate(self, tid: uuid.UUID, iid: uuid.UUID, score: int) -> bool:
        """Rate the interaction as its customer; False when it was rated already (here, on
        another of its channels, or in the widget)."""
        async with self._pool.acquire() as conn:
            if not await self._repo.claim_survey(conn, tid, iid, claim=True):
                return False
            started = await self._repo.started(conn, tid, iid)
        if started is None:  # not an interaction the gateway started: no customer to rate as
            await self._unclaim(tid, iid)
            return False
        tenant_id, interaction_id = str(tid), str(iid)
        try:
            md, me = await self._platform.as_customer_in(
                tenant_id, interaction_id, str(started["customer_id"]), started["channel"]
            )
            await self._platform.media.Rate(
                mpb.RateRequest(
                    tenant_id=tenant_id,
                    interaction_id=interaction_id,
                    participant_id=me,
                    rating=mpb.Rating(score=score),
                ),
                metadata=md,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return False  # rated already, elsewhere
            await self._unclaim(tid, iid)
            raise
        except BaseException:
            await self._unclaim(tid, iid)
            raise
        log.info("a satisfaction survey answered", score=score)
        return True

    async def _unclaim(self, tid: uuid.UUID, iid: uuid.UUID) -> None:
        async with self._pool.acquire() as conn:
            await self._repo.claim_survey(conn, tid, iid, claim=False)

    # ------------------------------------------------------------------ the e-mail's page

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(SurveyLinks.PATH, self.page),
            web.post(SurveyLinks.PATH, self.submit),
        ]

    async def _find(self, request: web.Request) -> tuple[uuid.UUID, uuid.UUID, int, str, bool]:
        """The survey a signed link names: tenant, interaction, score, the language, and
        whether it is answered."""
        if not self._links.admits(request):
            raise web.HTTPForbidden(text="this link is not valid, or has expired")
        m = request.match_info
        try:
            tid, iid, score = uuid.UUID(m["tenant"]), uuid.UUID(m["interaction"]), int(m["score"])
        except ValueError:
            raise web.HTTPNotFound(text="no such survey") from None
        async with self._pool.acquire() as conn:
            survey = await self._repo.survey(conn, tid, iid)
            conversation = await self._repo.conversation(conn, tid, iid)
        if survey is None or not 1 <= score <= 5:
            raise web.HTTPNotFound(text="no such survey")
        language = conversation["language"] if conversation else ""
        return tid, iid, score, language, survey["rated_at"] is not None

    async def page(self, request: web.Request) -> web.Response:
        """The five scores as buttons, the one the link named first in focus. Opening a link
        rates nothing: mail scanners open links, and only a person presses a button."""
        tid, iid, score, language, rated = await self._find(request)
        words = _words(language)
        if rated:
            return _page(words["title"], f"<p>{html.escape(words['rated'])}</p>")
        buttons = []
        for n in range(1, 6):
            action = request.path_qs if n == score else self._links.path(str(tid), str(iid), n)
            chosen = " class='chosen' autofocus" if n == score else ""
            buttons.append(
                f"<form method='post' action='{html.escape(action, quote=True)}'>"
                f"<button type='submit'{chosen}>{n}</button></form>"
            )
        return _page(words["title"], f"<p>{html.escape(words['ask'])}</p>{''.join(buttons)}")

    async def submit(self, request: web.Request) -> web.Response:
        """A button pressed: the score its signed path names is rated, once."""
        tid, iid, score, language, _ = await self._find(request)
        words = _words(language)
        if not await self._rate(tid, iid, score):
            return _page(words["title"], f"<p>{html.escape(words['rated'])}</p>", status=409)
        thanks = html.escape(domain.survey_thanks(language))
        return _page(words["title"], f"<p role='status'>{thanks}</p>")


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP},
    )
