"""E-mail through the channel gateway, in SMTP both ways: a customer's mail becomes an
interaction, the agent's reply reaches the customer's mail server with the thread's headers,
and the customer's answer to it continues the same interaction. And one customer on three
channels: e-mail, web chat and SMS."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import grpc
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from cell_support import AgentAtWork
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue, user
from test_sms import NUMBER, SID, TOKEN, Provider, signed
from test_web_chat import PNG

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, WebVisitor
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
P = mpb.ParticipantRole
MEI = "mei@example.com"
PHONE = "+8613912345678"


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
    # E-mails and texts are media of their own.
    li.capacity.add(media=common.MEDIA_TYPE_EMAIL, max_concurrent=5)
    li.capacity.add(media=common.MEDIA_TYPE_SMS, max_concurrent=5)
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

    # Each reply offers one-click unsubscribe (RFC 8058); a GET alone unsubscribes nobody.
    assert reply["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = reply["List-Unsubscribe"].strip("<>")
    async with aiohttp.ClientSession() as http:
        assert (await http.get(unsubscribe)).status == 200
        talk.send_text("Still subscribed", "r0")
        still = await asyncio.wait_for(inbox.received.get(), 30)
        assert "Still subscribed" in still.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        forged = unsubscribe.replace("signature=", "signature=0")
        assert (await http.post(forged, data={"List-Unsubscribe": "One-Click"})).status == 403
        done = await http.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
        assert done.status == 200
    talk.send_text("Not sent: unsubscribed", "r00")
    await talk.wait_for(lambda f: f.message.content.text == "Not sent: unsubscribed")
    await asyncio.sleep(2)
    assert inbox.received.empty(), "a reply reached an address that unsubscribed"

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


async def test_attachments_locations_and_forms_cross_between_mail_and_the_agent(
    cell: Cell, helpdesk: Helpdesk, mail_server: tuple[CustomersMailServer, int]
) -> None:
    """Media fusion (docs/channels.md): a customer's photo arrives as an image, kept with its
    sha256; the agent's image goes out as an attachment, a location as a map link, and a form
    as a link to a page where the customer fills it, which comes back as a filled form."""
    inbox, _ = mail_server
    inbox.loop = asyncio.get_running_loop()
    t = helpdesk.tenant
    li = await AgentAtWork(cell, helpdesk.li, t.id).start()
    photo = mail(helpdesk, "The card, as it looks now.", f"<{uuid.uuid4().hex}@example.com>")
    photo.add_attachment(PNG, maintype="image", subtype="png", filename="card.png")
    photo.add_attachment(
        b"MZ\x90\x00", maintype="application", subtype="x-msdownload", filename="fix.exe"
    )
    await send(helpdesk, photo)
    talk = await li.answer()
    await talk.wait_for(lambda f: f.message.content.text == "The card, as it looks now.")
    image = (
        await talk.wait_for(lambda f: f.message.content.HasField("image"))
    ).message.content.image
    assert (image.name, image.content_type, image.size_bytes) == ("card.png", "image/png", len(PNG))
    assert image.sha256 == hashlib.sha256(PNG).hexdigest()
    refused = await talk.wait_for(lambda f: "fix.exe" in f.message.content.text)
    assert "was not kept" in refused.message.content.text

    talk.send(mpb.MessageContent(image=image), "i1")
    talk.send(
        mpb.MessageContent(
            location=mpb.Location(latitude=31.2304, longitude=121.4737, label="Nanjing Road branch")
        ),
        "l1",
    )
    fields = [
        mpb.FormField(
            name="last4", label="Last four digits", type=mpb.FORM_FIELD_TYPE_NUMBER, required=True
        ),
        mpb.FormField(
            name="city",
            label="City",
            type=mpb.FORM_FIELD_TYPE_CHOICE,
            options=["Shanghai", "Beijing"],
        ),
    ]
    talk.send(
        mpb.MessageContent(
            form=mpb.Form(form_id="verify", title="Verify your card", fields=fields)
        ),
        "f1",
    )
    got = [await asyncio.wait_for(inbox.received.get(), 30) for _ in range(3)]
    with_file = next(m for m in got if any(True for _ in m.iter_attachments()))
    attached = next(iter(with_file.iter_attachments()))
    assert attached.get_filename() == "card.png" and attached.get_payload(decode=True) == PNG
    bodies = [m.get_body(("plain",)).get_content() for m in got]  # type: ignore[union-attr]
    assert any("Nanjing Road branch" in b and "mlat=31.230400&mlon=121.473700" in b for b in bodies)
    link = next(b for b in bodies if "Verify your card" in b).split(": ", 1)[1].strip()
    async with aiohttp.ClientSession() as http:
        page = await http.get(link)
        assert page.status == 200 and "Last four digits" in await page.text()
        assert (await http.get(link.replace("signature=", "signature=0"))).status == 403
        wrong = await http.post(link, data={"last4": "abcd", "city": "Shanghai"})
        assert wrong.status == 400 and "Last four digits: a number" in await wrong.text()
        filled = await http.post(link, data={"last4": "4242", "city": "Shanghai"})
        assert filled.status == 200
        answered = await talk.wait_for(lambda f: f.message.content.form.submitted)
        assert {f.name: f.value for f in answered.message.content.form.fields} == {
            "last4": "4242",
            "city": "Shanghai",
        }
        assert answered.message.sender_role == P.PARTICIPANT_ROLE_CUSTOMER
        assert (await http.post(link, data={"last4": "1111", "city": "Beijing"})).status == 409
    await talk.close()
    await li.stop()


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


async def test_one_customer_writes_by_email_web_chat_and_sms_and_the_agent_sees_all_three(
    cell: Cell, helpdesk: Helpdesk, mail_server: tuple[CustomersMailServer, int]
) -> None:
    """The seeds' journey: the same person on three channels, in each channel's own protocol.
    The tenant's site knows them (they signed in), so it links their web visitor and their
    phone to the customer their e-mail made; the agent then sees one customer with all three
    conversations, and each reply reaches them where they wrote."""
    inbox, _ = mail_server
    inbox.loop = asyncio.get_running_loop()
    t = helpdesk.tenant
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    key = (("authorization", f"Bearer {helpdesk.key}"),)
    gateway = cell.replica("gateway").http_url
    provider = Provider()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", provider.messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    provider.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    channels = rpc.ChannelServiceStub(tch)
    website = await channels.CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="site", queue="cards", web=pb.WebChat(allowed_origins=[gateway])
            ),
        ),
        metadata=key,
    )
    texts = await channels.CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="texts",
                queue="cards",
                sms=pb.SmsChannel(
                    number=NUMBER,
                    account_sid=SID,
                    auth_token=TOKEN,
                    api_base_url=f"http://127.0.0.1:{provider.port}",
                ),
            ),
        ),
        metadata=key,
    )
    customers = gateway_rpc.CustomerServiceStub(grpc.aio.insecure_channel(cell.address("gateway")))
    li = await AgentAtWork(cell, helpdesk.li, t.id).start()
    try:
        # 1. By e-mail.
        await send(helpdesk, mail(helpdesk, "About my card", f"<{uuid.uuid4().hex}@example.com>"))
        by_mail = await li.answer()
        await by_mail.wait_for(lambda f: f.message.content.text == "About my card")
        # 2. On the web.
        page = f"{gateway}/v1/web/{t.id}/{website.id}/"
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while (await http.get(page + "widget.js")).status != 200:
                    await asyncio.sleep(0.2)
            browser = await WebVisitor.open(http, page.replace("http", "ws", 1) + "ws", gateway)
            welcome = await browser.next(lambda i: i["type"] == "welcome")
            await browser.say("Me again, on your site", "w1")
            on_web = await li.answer(welcome["interaction"])
            await on_web.wait_for(lambda f: f.message.content.text == "Me again, on your site")
            # 3. By SMS.
            webhook = f"{gateway}/v1/sms/{t.id}/{texts.id}"
            form = {"From": PHONE, "To": NUMBER, "Body": "And by text", "MessageSid": "SM1"}
            async with asyncio.timeout(30):
                while True:
                    async with http.post(
                        webhook, data=form, headers={"X-Twilio-Signature": signed(webhook, form)}
                    ) as answer:
                        if answer.status == 200:
                            break
                    await asyncio.sleep(0.2)
            by_text = await li.answer()
            await by_text.wait_for(lambda f: f.message.content.text == "And by text")

            # The site knows all three are Mei: it links them to one customer.
            mei = await customers.FindCustomer(
                gpb.FindCustomerRequest(tenant_id=t.id, kind=gpb.IDENTITY_KIND_EMAIL, value=MEI),
                metadata=key,
            )
            for kind, value in (
                (gpb.IDENTITY_KIND_WEB_VISITOR, welcome["visitor"]),
                (gpb.IDENTITY_KIND_PHONE, PHONE),
            ):
                await customers.LinkIdentity(
                    gpb.LinkIdentityRequest(
                        tenant_id=t.id, customer_id=mei.id, kind=kind, value=value
                    ),
                    metadata=key,
                )
            # The agent, with their own token, sees one customer and three conversations.
            as_li = await helpdesk.li.metadata()
            seen = await customers.ListConversations(
                gpb.ListConversationsRequest(tenant_id=t.id, customer_id=mei.id), metadata=as_li
            )
            history = {c.interaction_id: c.channel for c in seen.conversations}
            three = {
                by_mail.frames[0].interaction_id: common.CHANNEL_EMAIL,
                welcome["interaction"]: common.CHANNEL_WEB,
                by_text.frames[0].interaction_id: common.CHANNEL_SMS,
            }
            # Her thread of the test before is hers too (the same address).
            assert three.items() <= history.items(), (three, history)
            whole = await customers.GetCustomer(
                gpb.GetCustomerRequest(tenant_id=t.id, customer_id=mei.id), metadata=as_li
            )
            assert {i.kind for i in whole.identities} == {
                gpb.IDENTITY_KIND_EMAIL,
                gpb.IDENTITY_KIND_WEB_VISITOR,
                gpb.IDENTITY_KIND_PHONE,
            }
            # Her next text reaches the same customer.
            again = await customers.FindCustomer(
                gpb.FindCustomerRequest(tenant_id=t.id, kind=gpb.IDENTITY_KIND_PHONE, value=PHONE),
                metadata=key,
            )
            assert again.id == mei.id

            # Each reply reaches her where she wrote, in that channel's protocol.
            by_mail.send_text("Mail answer", "x1")
            on_web.send_text("Web answer", "x2")
            by_text.send_text("Text answer", "x3")
            mailed = await asyncio.wait_for(inbox.received.get(), 30)
            assert "Mail answer" in mailed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert (await browser.next(lambda i: i.get("text") == "Web answer"))["from"] == "agent"
            texted = await asyncio.wait_for(provider.sent.get(), 30)
            assert (texted["To"], texted["Body"]) == (PHONE, "Text answer")
            await browser.ws.close()

            # Her next chat on the site: the agent's offer shows her contacts on every channel.
            visitor = welcome["visitor"]
            back = await WebVisitor.open(
                http, page.replace("http", "ws", 1) + "ws", gateway, visitor=visitor
            )
            later = (await back.next(lambda i: i["type"] == "welcome"))["interaction"]
            await back.say("Hello once more", "w2")
            again_talk = await li.answer(later)
            told = li.offers[later].requirements.customer_history
            assert three.items() <= {c.interaction_id: c.channel for c in told}.items()
            assert later not in {c.interaction_id for c in told}
            await again_talk.close()
            await back.ws.close()
        for stream in (by_mail, on_web, by_text):
            await stream.close()
    finally:
        await li.stop()
        await runner.cleanup()
        await tch.close()


async def test_the_customer_rates_a_closed_mail_thread_from_the_survey_mail_once(
    cell: Cell, helpdesk: Helpdesk, mail_server: tuple[CustomersMailServer, int]
) -> None:
    """CSAT by e-mail: once the agent closes the thread with a disposition, the customer gets
    a mail in the thread with a signed link per score. Opening a link rates nothing (mail
    scanners open links): it shows the five scores, and pressing one rates the conversation
    and thanks; pressing again says it was rated already."""
    inbox, _ = mail_server
    inbox.loop = asyncio.get_running_loop()
    t = helpdesk.tenant
    li = await AgentAtWork(cell, helpdesk.li, t.id).start()
    first = f"<{uuid.uuid4().hex}@example.com>"
    await send(helpdesk, mail(helpdesk, "Where is my parcel?", first, Subject="Parcel"))
    talk = await li.answer()
    asked = await talk.wait_for(lambda f: f.message.content.text == "Where is my parcel?")
    interaction = asked.interaction_id
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    await media.End(
        mpb.EndRequest(
            tenant_id=t.id,
            interaction_id=interaction,
            resolution=mpb.Resolution(code="resolved"),
        ),
        metadata=await helpdesk.li.metadata(),
    )

    survey = await asyncio.wait_for(inbox.received.get(), 30)
    assert survey["To"] == MEI and survey["Subject"] == "Re: Parcel"
    assert survey["In-Reply-To"] == first
    body = survey.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.startswith("How did we do?")
    scores = [line.split(": ", 1) for line in body.splitlines() if line[1:3] == ": "]
    links = {score: url.strip() for score, url in scores}
    assert sorted(links) == ["1", "2", "3", "4", "5"]

    async def rating() -> mpb.Rating:
        it = await media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=t.id, interaction_id=interaction),
            metadata=(("authorization", f"Bearer {helpdesk.key}"),),
        )
        return it.rating

    async with aiohttp.ClientSession() as http:
        page = await http.get(links["4"])
        assert page.status == 200 and "How did we do?" in await page.text()
        assert not (await rating()).score, "opening a link rated"
        assert (await http.get(links["4"].replace("signature=", "signature=0"))).status == 403
        # The signature's last digit changed (to one it is not).
        flipped = links["4"][:-1] + ("1" if links["4"].endswith("0") else "0")
        assert (await http.post(flipped)).status == 403
        rated = await http.post(links["4"])
        assert rated.status == 200 and "Thank you for your rating." in await rated.text()
        assert (await rating()).score == 4
        twice = await http.post(links["2"])
        assert twice.status == 409 and "rated already" in await twice.text()
        assert "rated already" in await (await http.get(links["4"])).text()
    assert (await rating()).score == 4
    await asyncio.sleep(1)
    assert inbox.received.empty(), "one survey, and no mail for a rating"
    await talk.close()
    await li.stop()
