"""E-mail through the channel gateway, in SMTP both ways: a customer's mail becomes an
interaction, the agent's reply reaches the customer's mail server with the thread's headers,
and the customer's answer to it continues the same interaction."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiosmtplib
import grpc
import pytest
from aiosmtpd.controller import Controller
from cell_support import AgentAtWork
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue, user

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
P = mpb.ParticipantRole
MEI = "mei@example.com"


class CustomersMailServer:
    """The customer's side: a real SMTP server that keeps what the gateway's relay sends."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[EmailMessage] = asyncio.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.received.put_nowait, message)
        return "250 OK"


@pytest.fixture(scope="module")
def mail_server() -> Iterator[tuple[CustomersMailServer, int]]:
    handler = CustomersMailServer()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture(scope="module")
def cell(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, mail_server: tuple[Any, int]
) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("email"))
    with running_cell(
        stack,
        folder,
        f"email_{uuid.uuid4().hex[:10]}",
        LIANLUO_SMTP_PORT=str(mail_server[1]),
        LIANLUO_GATEWAY_MAIL_MAX_BYTES="65536",
    ) as running:
        yield running


@dataclass
class Helpdesk:
    tenant: pb.Tenant
    key: str
    address: str
    li: Session
    smtp_port: int


@pytest.fixture(scope="module")
async def helpdesk(cell: Cell) -> AsyncIterator[Helpdesk]:
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    t, c = await onboard(Client(tch, ADMIN_KEY))
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    li = agent()
    li.capacity.add(media=common.MEDIA_TYPE_EMAIL, max_concurrent=5)  # e-mails are their own media
    await c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=li), metadata=c.md)
    await c.users.CreateUser(
        pb.CreateUserRequest(
            tenant_id=t.id, user=user("li", pb.ROLE_AGENT, agent="li.wei"), password=PASSWORD
        ),
        metadata=c.md,
    )
    address = f"help-{uuid.uuid4().hex[:8]}@acme.example"
    await rpc.ChannelServiceStub(tch).CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="help-mail",
                queue="cards",
                email=pb.EmailChannel(address=address, display_name="Acme help"),
            ),
        ),
        metadata=c.md,
    )
    desk = Helpdesk(t, c.key, address, await Session.login(tch, t.name, "li", PASSWORD), 0)
    desk.smtp_port = cell.replica("gateway").smtp_port
    async with asyncio.timeout(30):  # until the gateway knows the mailbox
        while True:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=desk.smtp_port)
            await smtp.connect()
            await smtp.mail("probe@example.com")
            try:
                await smtp.rcpt(address)
                break
            except aiosmtplib.SMTPRecipientRefused:
                await asyncio.sleep(0.2)
            finally:
                smtp.close()
    yield desk
    await tch.close()


def mail(helpdesk: Helpdesk, body: str, message_id: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Mei Chen <{MEI}>"
    message["To"] = helpdesk.address
    message["Subject"] = headers.pop("Subject", "Card lost")
    message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


async def send(helpdesk: Helpdesk, message: EmailMessage) -> None:
    await aiosmtplib.send(message, hostname="127.0.0.1", port=helpdesk.smtp_port)


async def test_a_mail_thread_is_one_interaction_and_replies_go_back_in_it(
    cell: Cell, helpdesk: Helpdesk, mail_server: tuple[CustomersMailServer, int]
) -> None:
    inbox, _ = mail_server
    inbox.loop = asyncio.get_running_loop()
    t, li = helpdesk.tenant, helpdesk.li
    li_at_work = await AgentAtWork(cell, li, t.id).start()
    first = f"<{uuid.uuid4().hex}@example.com>"
    await send(helpdesk, mail(helpdesk, "My card is lost.", first))
    talk = await li_at_work.answer()
    joined = await talk.wait_for(lambda f: f.WhichOneof("frame") == "joined")
    assert joined.joined.interaction.channel == common.CHANNEL_EMAIL
    await talk.wait_for(lambda f: f.message.content.text == "My card is lost.")
    talk.send_text("We have blocked it and sent a new one.", "r1")

    reply = await asyncio.wait_for(inbox.received.get(), 30)
    assert reply["To"] == MEI and helpdesk.address in reply["From"]
    assert reply["Subject"] == "Re: Card lost"
    assert reply["In-Reply-To"] == first and first in reply["References"]
    assert "We have blocked it" in reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    # An auto-reply to the reply is not taken; the customer's own answer continues the thread.
    await send(
        helpdesk,
        mail(
            helpdesk,
            "I am out of the office.",
            f"<{uuid.uuid4().hex}@example.com>",
            In_Reply_To=reply["Message-ID"],
            Auto_Submitted="auto-replied",
        ),
    )
    answer = mail(
        helpdesk,
        "Thank you!",
        f"<{uuid.uuid4().hex}@example.com>",
        Subject="Re: Card lost",
        In_Reply_To=reply["Message-ID"],
        References=f"{first} {reply['Message-ID']}",
    )
    await send(helpdesk, answer)
    await send(helpdesk, answer)  # a mail server's retry: kept once
    await talk.wait_for(lambda f: f.message.content.text == "Thank you!")
    await asyncio.sleep(1)
    texts = talk.texts()
    assert texts.count("Thank you!") == 1
    assert "I am out of the office." not in texts

    customer = await gateway_rpc.CustomerServiceStub(
        grpc.aio.insecure_channel(cell.address("gateway"))
    ).FindCustomer(
        gpb.FindCustomerRequest(tenant_id=t.id, kind=gpb.IDENTITY_KIND_EMAIL, value=MEI),
        metadata=(("authorization", f"Bearer {helpdesk.key}"),),
    )
    assert joined.joined.interaction.customer.id == customer.id
    await talk.close()
    await li_at_work.stop()


async def test_bad_mail_is_refused_in_the_smtp_dialogue(helpdesk: Helpdesk) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as unknown:
        await aiosmtplib.send(
            mail(helpdesk, "hello", "<x1@example.com>"),
            hostname="127.0.0.1",
            port=helpdesk.smtp_port,
            recipients=["nobody@acme.example"],
        )
    assert unknown.value.recipients[0].code == 550
    with pytest.raises(aiosmtplib.SMTPResponseException) as large:
        await send(helpdesk, mail(helpdesk, "x" * 100_000, "<x2@example.com>"))
    assert large.value.code == 552
    nameless = mail(helpdesk, "hello", "<x3@example.com>")
    del nameless["From"]
    nameless["From"] = "not an address"
    with pytest.raises(aiosmtplib.SMTPResponseException) as bad:
        await aiosmtplib.send(
            nameless,
            hostname="127.0.0.1",
            port=helpdesk.smtp_port,
            sender=MEI,
            recipients=[helpdesk.address],
        )
    assert bad.value.code == 550 and "sender" in bad.value.message
