"""E-mail: customers' mail in over SMTP, one interaction per thread, and agents' replies out
through the relay with the thread's headers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib
import asyncpg
import grpc
from aiosmtpd.smtp import SMTP, Envelope, Session

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import interaction_pb2
from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.kafka import Envelope as EventEnvelope
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import Change, TenantConfigView
from lianluo.services.gateway import domain
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.service import Customers, Platform, bearer
from lianluo.services.gateway.settings import GatewaySettings
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
# aiosmtpd logs every command of every session at INFO, addresses included: customers' data
# stays out of the logs.
logging.getLogger("mail.log").setLevel(logging.WARNING)
R = mpb.ParticipantRole
STAFF = frozenset({R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT})


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
        pool: asyncpg.Pool,
        repo: Repository,
    ) -> None:
        self._mailboxes = mailboxes
        self._platform = platform
        self._customers = customers
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
        return "250 OK"

    async def _receive(self, tenant_id: str, channel: tpb.Channel, message: EmailMessage) -> None:
        mid = domain.message_id(message)
        address, name = domain.sender(message)
        text = domain.mail_text(message)
        tid = uuid.UUID(tenant_id)
        customer = await self._customers.resolve(tenant_id, pb.IDENTITY_KIND_EMAIL, address, name)
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
                await self._send(tenant_id, interaction, participant, client_id, text, md)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                interaction = ""  # its interaction has ended: this mail starts another
        if not interaction:
            started = await self._start(tenant_id, channel, customer, address, name, md)
            interaction = started.interaction.id
            participant = started.customer_participant_id
            subject = str(message.get("Subject", ""))[:200]
            async with self._pool.acquire() as conn:
                await self._repo.add_mail_interaction(
                    conn,
                    tid,
                    uuid.UUID(interaction),
                    uuid.UUID(channel.id),
                    address,
                    participant,
                    subject,
                )
            await self._send(tenant_id, interaction, participant, client_id, text, md)
        async with self._pool.acquire() as conn:
            await self._repo.add_mail_message(conn, tid, mid, uuid.UUID(interaction))

    async def _start(
        self,
        tenant_id: str,
        channel: tpb.Channel,
        customer: str,
        address: str,
        name: str,
        md: Any,
    ) -> mpb.StartInteractionResponse:
        request = mpb.StartInteractionRequest(
            tenant_id=tenant_id,
            channel=common.CHANNEL_EMAIL,
            media=common.MEDIA_TYPE_EMAIL,
            customer=mpb.Customer(id=customer, display_name=name, address=address),
        )
        if channel.WhichOneof("entry") == "flow":
            request.flow = channel.flow
        else:
            request.queue = channel.queue
        started: mpb.StartInteractionResponse = await self._platform.media.StartInteraction(
            request, metadata=md
        )
        return started

    async def _send(
        self, tenant_id: str, interaction: str, participant: str, client_id: str, text: str, md: Any
    ) -> None:
        await self._platform.media.Send(
            mpb.SendRequest(
                tenant_id=tenant_id,
                interaction_id=interaction,
                participant_id=participant,
                client_message_id=client_id,
                content=mpb.MessageContent(text=text),
            ),
            metadata=md,
        )


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


class MailOut:
    """Sends agents' replies through the relay: each one queued in the transaction that saw
    it, sent with the thread's headers, retried with backoff until the relay takes it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        settings: GatewaySettings,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._settings = settings
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    async def queue_reply(
        self,
        conn: asyncpg.Connection,
        envelope: EventEnvelope,
        event: interaction_pb2.InteractionEvent,
    ) -> None:
        """On interaction.message: a reply by staff in an e-mail interaction goes out."""
        sent = event.message
        if sent.sender_role not in STAFF or not sent.content.text:
            return
        tid, iid = uuid.UUID(envelope.tenant_id), uuid.UUID(event.interaction_id)
        if await self._repo.mail_interaction(conn, tid, iid) is None:
            return
        await self._repo.queue_mail(conn, tid, uuid.UUID(sent.id), iid, sent.content.text)
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            sent = await self._send_due()
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

    async def _send_due(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await self._repo.due_mail(conn, 20)
            for row in rows:
                error = await self._send(row)
                if error is None:
                    await self._repo.sent_mail(conn, row["tenant_id"], row["id"])
                    await self._repo.add_mail_message(
                        conn, row["tenant_id"], self._message_id(row), row["interaction_id"]
                    )
                else:
                    delay = min(5.0 * 2 ** row["attempts"], 900.0)
                    log.warning("reply not sent", error=error, retry_in=delay)
                    await self._repo.retry_mail(conn, row["tenant_id"], row["id"], delay, error)
        return len(rows)

    def _message_id(self, row: asyncpg.Record) -> str:
        return f"<{row['id']}@{self._settings.gateway_mail_domain}>"

    async def _send(self, row: asyncpg.Record) -> str | None:
        channel = self._view.get(str(row["tenant_id"]), "channel", str(row["channel_id"]))
        if not isinstance(channel, tpb.Channel) or channel.WhichOneof("kind") != "email":
            return "the e-mail channel is gone"
        mail = EmailMessage()
        mail["From"] = formataddr((channel.email.display_name, channel.email.address))
        mail["To"] = row["customer_address"]
        mail["Subject"] = domain.reply_subject(row["subject"])
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = self._message_id(row)
        thread = list(row["thread"])
        if thread:
            mail["In-Reply-To"] = thread[-1]
            mail["References"] = " ".join(thread)
        mail["X-Lianluo-Interaction"] = str(row["interaction_id"])
        mail.set_content(row["body"])
        s = self._settings
        try:
            await aiosmtplib.send(
                mail,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username or None,
                password=s.smtp_password.get_secret_value() or None,
                start_tls=s.smtp_starttls,
                timeout=s.smtp_timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            return repr(error)[:300]
        return None
