"""E-mail: customers' mail in over SMTP, one interaction per thread, and agents' replies out
through the relay with the thread's headers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, formatdate
from typing import Any
from urllib.parse import quote

import aiosmtplib
import asyncpg
import grpc
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from lianluo.common.v1 import common_pb2 as common
from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.faults import is_outage
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import Links
from lianluo.runtime.tenant_config import Change, TenantConfigView
from lianluo.services.gateway import domain
from lianluo.services.gateway.attachments import Attachments
from lianluo.services.gateway.replies import Outgoing
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Customers, Platform, bearer
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
# aiosmtpd logs every command of every session at INFO, addresses included: customers' data
# stays out of the logs.
logging.getLogger("mail.log").setLevel(logging.WARNING)
R = mpb.ParticipantRole


class Mailboxes:
    """The e-mail channels by address, kept current from `tenant.config`."""

    def __init__(self, view: TenantConfigView) -> None:
        self._view = view
        self._by_address: dict[str, tuple[str, str]] = {}
        for tenant_id in view.tenant_ids():
            for channel in view.all(tenant_id, "channel"):
                self._learn(tenant_id, channel)
        view.subscribe(self._changed)

    def _learn(self, tenant_id: str, channel: tpb.Channel) -> None:
        for address, (tid, cid) in list(self._by_address.items()):
            if (tid, cid) == (tenant_id, channel.id):
                del self._by_address[address]
        if channel.WhichOneof("kind") == "email":
            self._by_address[channel.email.address.lower()] = (tenant_id, channel.id)

    def _changed(self, tenant_id: str, change: Change) -> None:
        if change.kind == "channel":
            self._learn(
                tenant_id,
                change.channel if not change.deleted else tpb.Channel(id=change.resource_id),
            )

    def find(self, address: str) -> tuple[str, tpb.Channel] | None:
        found = self._by_address.get(address.lower())
        if found is None:
            return None
        channel = self._view.get(found[0], "channel", found[1])
        tenant = self._view.tenant(found[0])
        if not isinstance(channel, tpb.Channel) or tenant is None:
            return None
        if tenant.state != tpb.TENANT_STATE_ACTIVE:
            return None
        return found[0], channel


class MailIn:
    """The aiosmtpd handler: RCPT for known mailboxes only; DATA becomes a message of the
    customer's interaction for that thread (a new one for a new thread)."""

    def __init__(
        self,
        mailboxes: Mailboxes,
        platform: Platform,
        customers: Customers,
        attachments: Attachments,
        pool: asyncpg.Pool,
        repo: Repository,
    ) -> None:
        self._mailboxes = mailboxes
        self._platform = platform
        self._customers = customers
        self._attachments = attachments
        self._pool = pool
        self._repo = repo

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self._mailboxes.find(address) is None:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        try:
            message = BytesParser(policy=policy.default).parsebytes(
                raw if isinstance(raw, bytes) else str(raw).encode()
            )
            assert isinstance(message, EmailMessage)
            if domain.is_automatic(message):
                log.info("automatic mail dropped", to=envelope.rcpt_tos)
                return "250 OK: automatic mail, not answered"
            for address in envelope.rcpt_tos:
                found = self._mailboxes.find(address)
                if found is not None:
                    await self._receive(found[0], found[1], message)
        except domain.BadMail as error:
            return f"550 5.6.0 {error}"
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return "452 4.3.1 the mailbox is over its quota; try again later"
            log.warning("mail not taken", code=error.code().name)
            return "451 4.3.0 try again later"
        except Exception as error:
            if not is_outage(error):
                raise
            log.warning("mail not taken: a dependency is away", error=repr(error)[:200])
            return "451 4.3.0 try again later"
        return "250 OK"

    async def _receive(self, tenant_id: str, channel: tpb.Channel, message: EmailMessage) -> None:
        mid = domain.message_id(message)
        address, name = domain.sender(message)
        files = domain.mail_files(message)
        text = domain.mail_text(message, bool(files))
        tid = uuid.UUID(tenant_id)
        customer = await self._customers.resolve(tenant_id, pb.IDENTITY_KIND_EMAIL, address, name)
        async with self._pool.acquire() as conn:
            # Writing again asks for an answer: an earlier unsubscribe no longer holds.
            await self._repo.set_opt_out(conn, tid, pb.IDENTITY_KIND_EMAIL, address, False)
        md = bearer(
            await self._platform.customer_session(tenant_id, customer, common.CHANNEL_EMAIL)
        )
        async with self._pool.acquire() as conn:
            thread = await self._repo.thread_of(conn, tid, [mid, *domain.thread_ids(message)])
        interaction, participant = "", ""
        if thread is not None and thread["customer_address"] == address:
            interaction = str(thread["interaction_id"])
            participant = thread["customer_participant"]
        # The same message again (a server's retry) is kept once: media dedupes by this id.
        client_id = "mail:" + hashlib.sha256(mid.encode()).hexdigest()[:40]
        if interaction:
            try:
                await self._post(tenant_id, interaction, participant, client_id, text, files, md)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                interaction = ""  # its interaction has ended: this mail starts another
        if not interaction:
            started = await self._customers.start(
                channel,
                tenant_id,
                mpb.Customer(id=customer, display_name=name, address=address),
                common.CHANNEL_EMAIL,
                common.MEDIA_TYPE_EMAIL,
                md,
            )
            interaction = started.interaction.id
            participant = started.customer_participant_id
            subject = str(message.get("Subject", ""))[:200]
            async with self._pool.acquire() as conn:
                await self._repo.add_conversation(
                    conn,
                    tid,
                    uuid.UUID(interaction),
                    uuid.UUID(channel.id),
                    address,
                    participant,
                    subject,
                    domain.guess_language(f"{subject}\n{text}"),
                )
            await self._post(tenant_id, interaction, participant, client_id, text, files, md)
        async with self._pool.acquire() as conn:
            await self._repo.add_mail_message(conn, tid, mid, uuid.UUID(interaction))

    async def _send(
        self,
        tenant_id: str,
        interaction: str,
        participant: str,
        client_id: str,
        content: mpb.MessageContent,
        md: Any,
    ) -> mpb.Message:
        sent: mpb.Message = await self._platform.media.Send(
            mpb.SendRequest(
                tenant_id=tenant_id,
                interaction_id=interaction,
                participant_id=participant,
                client_message_id=client_id,
                content=content,
            ),
            metadata=md,
        )
        return sent

    async def _post(
        self,
        tenant_id: str,
        interaction: str,
        participant: str,
        client_id: str,
        text: str,
        files: list[domain.MailFile],
        md: Any,
    ) -> None:
        """The mail into its interaction: its text (a mail of attachments alone has none), then
        each attachment kept and sent as a message; a file the gateway does not take is named
        in a note instead."""

        def send(n: int) -> Callable[[mpb.MessageContent], Awaitable[mpb.Message]]:
            return lambda content: self._send(
                tenant_id, interaction, participant, f"{client_id}:{n}", content, md
            )

        if text:
            await self._send(
                tenant_id, interaction, participant, client_id, mpb.MessageContent(text=text), md
            )
        for n, f in enumerate(files, 1):
            try:
                kept = await self._attachments.keep(
                    tenant_id, interaction, f.name, f.content_type, f.data
                )
            except domain.BadAttachment as error:
                note = f"[{domain.attachment_name(f.name)} was not kept: {error}]"
                await send(n)(mpb.MessageContent(text=note))
                continue
            # The same mail again (a server's retry) keeps its first copy's file.
            await self._attachments.deliver(tenant_id, kept, send(n))


class SmtpServer:
    """The gateway's SMTP server, run beside its gRPC server until shutdown."""

    def __init__(self, handler: MailIn, settings: GatewaySettings) -> None:
        self._handler = handler
        self._settings = settings
        self.port = settings.gateway_smtp_port
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                self._handler,
                data_size_limit=s.gateway_mail_max_bytes,
                hostname=s.gateway_mail_domain,
                ident="Lianluo gateway",
            ),
            host=s.gateway_smtp_host,
            port=self.port,
        )
        self.port = server.sockets[0].getsockname()[1]
        log.info("smtp serving", host=s.gateway_smtp_host, port=self.port)
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await server.wait_closed()

    def stop(self) -> None:
        self._stopping.set()


class MailConsent:
    """One-click unsubscribe from replies (RFC 8058): every reply names a signed link; a POST
    to it opts the address out, and the customer's next mail opts it in again. A GET shows a
    button, never unsubscribes: mail scanners open links."""

    PATH = "/v1/mail/unsubscribe/{tenant}/{address}"

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        links: Links,
        settings: GatewaySettings,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._links = links
        self._settings = settings

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.PATH, self.page), web.post(self.PATH, self.unsubscribe)]

    def url(self, tenant_id: str, address: str) -> str:
        # Signed over the path as the server reads it (decoded): clients re-quote paths.
        path = self.PATH.format(tenant=tenant_id, address=address)
        signed = self._links.url(path, self._settings.gateway_sent_link_seconds)
        quoted = self.PATH.format(tenant=tenant_id, address=quote(address, safe="@"))
        return signed.replace(path, quoted, 1)

    def _address(self, request: web.Request) -> tuple[uuid.UUID, str]:
        if not self._links.admits(request.path, request.query):
            raise web.HTTPForbidden(text="this link is not valid, or has expired")
        # A signed path names a tenant id this gateway wrote.
        return uuid.UUID(request.match_info["tenant"]), request.match_info["address"]

    async def page(self, request: web.Request) -> web.Response:
        self._address(request)
        return web.Response(
            text="<!doctype html><meta charset='utf-8'><title>Unsubscribe</title>"
            "<form method='post'><p>Stop replies to this address?</p>"
            "<button type='submit'>Unsubscribe</button></form>",
            content_type="text/html",
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        tid, address = self._address(request)
        async with self._pool.acquire() as conn:
            await self._repo.set_opt_out(conn, tid, pb.IDENTITY_KIND_EMAIL, address, True)
        return web.Response(
            text="You will get no more replies at this address until you write again.",
        )


class MailSender:
    """Replies in e-mail conversations, through the relay, with the thread's headers."""

    identity: int = pb.IDENTITY_KIND_EMAIL
    carries_files = True
    survey_by_link = True

    def __init__(self, settings: GatewaySettings, consent: MailConsent) -> None:
        self._settings = settings
        self._consent = consent

    def message_id(self, row: asyncpg.Record) -> str:
        return f"<{row['id']}@{self._settings.gateway_mail_domain}>"

    async def send(self, out: Outgoing, channel: tpb.Channel) -> str | None:
        row = out.row
        mail = EmailMessage()
        mail["From"] = formataddr((channel.email.display_name, channel.email.address))
        mail["To"] = row["customer_address"]
        mail["Subject"] = domain.reply_subject(row["subject"])
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = self.message_id(row)
        thread = list(row["thread"])
        if thread:
            mail["In-Reply-To"] = thread[-1]
            mail["References"] = " ".join(thread)
        mail["X-Lianluo-Interaction"] = str(row["interaction_id"])
        unsubscribe = self._consent.url(str(row["tenant_id"]), row["customer_address"])
        mail["List-Unsubscribe"] = f"<{unsubscribe}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(out.text)
        if out.file is not None:
            main, _, sub = out.file.content_type.partition("/")
            mail.add_attachment(out.file.data, maintype=main, subtype=sub, filename=out.file.name)
        try:
            await self._settings.relay(mail)
        except (aiosmtplib.SMTPException, OSError) as error:
            return repr(error)[:300]
        return None

    async def sent(self, conn: asyncpg.Connection, repo: Repository, row: asyncpg.Record) -> None:
        """The customer's answer to this reply names its Message-ID: it joins the thread."""
        await repo.add_mail_message(
            conn, row["tenant_id"], self.message_id(row), row["interaction_id"]
        )
