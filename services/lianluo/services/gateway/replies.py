"""Agents' replies on the customer's own channel, for the channels that answer later (e-mail,
SMS, WeChat): each one queued in the transaction that saw it on `interaction.message`, fitted to
the channel when it goes out (a location as a map link, an image as an attachment or a link, a
form as a link to its page), sent by the channel's sender, and retried with backoff until the
far side takes it. The gateway's own messages (the satisfaction survey, its thanks) take the
same path. A crash between the far side's acceptance and the commit can send a reply twice
(with the same id)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from lianluo.events.v1 import interaction_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.errors import NotFound
from lianluo.runtime.faults import is_outage
from lianluo.runtime.kafka import Envelope
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import CorruptObject
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.gateway import domain
from lianluo.services.gateway.attachments import Attachments
from lianluo.services.gateway.forms import Forms
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.survey import SurveyLinks
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
R = mpb.ParticipantRole
STAFF = frozenset({R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT})
BATCH = 20
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 5.0, 900.0


@dataclass(frozen=True)
class File:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Outgoing:
    """One reply as its channel takes it: the queued row (address, thread), the text, and a
    file for a channel that carries files."""

    row: asyncpg.Record
    text: str
    file: File | None = None


class Sender(Protocol):
    # The kind of identity the channel's addresses are (gateway_pb2.IdentityKind): a reply to
    # one whose owner opted out is not sent.
    identity: int
    # Whether the channel carries files (e-mail): an image or a file goes with the reply
    # instead of as a link.
    carries_files: bool
    # Whether the satisfaction survey asks for a click on a link (e-mail) rather than for a
    # digit in answer (a text).
    survey_by_link: bool

    async def send(self, out: Outgoing, channel: tpb.Channel) -> str | None:
        """Send one reply; what went wrong, or None."""

    async def sent(self, conn: asyncpg.Connection, repo: Repository, row: asyncpg.Record) -> None:
        """What the channel keeps of a reply that went out."""


class Replies:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        senders: dict[str, Sender],
        attachments: Attachments,
        forms: Forms,
        survey_links: SurveyLinks,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._senders = senders
        self._attachments = attachments
        self._forms = forms
        self._survey_links = survey_links
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    async def queue(
        self, conn: asyncpg.Connection, envelope: Envelope, event: interaction_pb2.InteractionEvent
    ) -> None:
        """On interaction.message: staff's messages in a conversation go out on its channel;
        a form in any interaction the gateway started can be filled on its page."""
        said = event.message
        if said.sender_role not in STAFF or said.content.WhichOneof("content") is None:
            return
        tid, iid = uuid.UUID(envelope.tenant_id), uuid.UUID(event.interaction_id)
        if said.content.HasField("form") and await self._repo.started(conn, tid, iid):
            form = said.content.form.SerializeToString()
            await self._repo.add_form(conn, tid, uuid.UUID(said.id), iid, form)
        if await self._repo.conversation(conn, tid, iid) is None:
            return  # not a channel that answers later: a web chat, an app, a call
        content = said.content.SerializeToString()
        await self._repo.queue_reply(conn, tid, uuid.UUID(said.id), iid, content)
        self._wake.set()

    async def _fit(self, row: asyncpg.Record, sender: Sender) -> Outgoing:
        """The reply fitted to its channel (domain.render)."""
        tenant = str(row["tenant_id"])
        if row["survey"]:
            links = None
            if sender.survey_by_link:
                links = self._survey_links.urls(tenant, str(row["interaction_id"]))
            return Outgoing(row, domain.survey_text(row["language"], links))
        if row["content"] is None:
            return Outgoing(row, row["body"])
        content = mpb.MessageContent.FromString(row["content"])

        def link(attachment_id: str) -> str:
            seconds = self._attachments.sent_link_seconds
            return self._attachments.url(tenant, attachment_id, seconds)[0]

        def form_link(_: mpb.Form) -> str:
            return self._forms.url(tenant, str(row["id"]))

        fitted = domain.render(content, sender.carries_files, link, form_link)
        if not fitted.attachment_id:
            return Outgoing(row, fitted.text)
        try:
            found = await self._attachments.find(tenant, fitted.attachment_id)
            data = await self._attachments.read(found)
        except (NotFound, CorruptObject, FileNotFoundError):
            # Not a file the gateway has whole: the customer gets what a link gives.
            fitted = domain.render(content, False, link, form_link)
            return Outgoing(row, fitted.text)
        return Outgoing(row, fitted.text, File(found["name"], found["content_type"], data))

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                sent = await self._send_due()
                failures = 0
            except Exception as error:
                if not is_outage(error):
                    raise
                # Postgres is away (a restart, a failover): what was claimed is claimed again.
                failures += 1
                log.warning("replies wait for the database", error=repr(error)[:200])
                await self._pause(min(30.0, 0.5 * 2.0**failures))
                continue
            if sent:
                continue
            self._wake.clear()
            waits = [
                asyncio.create_task(self._wake.wait()),
                asyncio.create_task(self._stopping.wait()),
            ]
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()

    def stop(self) -> None:
        self._stopping.set()

    def wake(self) -> None:
        """Something was queued: send it now rather than at the next poll."""
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _send_due(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await self._repo.due_replies(conn, BATCH)
            for row in rows:
                channel = self._view.get(str(row["tenant_id"]), "channel", str(row["channel_id"]))
                kind = channel.WhichOneof("kind") if isinstance(channel, tpb.Channel) else None
                sender = self._senders.get(kind or "")
                error = "the channel is gone" if sender is None else None
                if sender is not None and await self._repo.opted_out(
                    conn, row["tenant_id"], sender.identity, row["customer_address"]
                ):
                    log.info("a reply not sent: the customer opted out", channel=kind)
                    await self._repo.sent_reply(conn, row["tenant_id"], row["id"])
                    if row["survey"]:
                        # Not asked, so a digit they text later is not taken as an answer.
                        await self._repo.drop_survey(conn, row["tenant_id"], row["interaction_id"])
                    continue
                if sender is not None and isinstance(channel, tpb.Channel):
                    error = await sender.send(await self._fit(row, sender), channel)
                if error is None and sender is not None:
                    await self._repo.sent_reply(conn, row["tenant_id"], row["id"])
                    await sender.sent(conn, self._repo, row)
                else:
                    delay = min(FIRST_RETRY_SECONDS * 2 ** row["attempts"], LAST_RETRY_SECONDS)
                    log.warning("a reply was not sent", error=error, retry_in=delay)
                    await self._repo.retry_reply(
                        conn, row["tenant_id"], row["id"], delay, error or ""
                    )
        return len(rows)
