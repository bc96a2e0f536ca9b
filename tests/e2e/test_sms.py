"""SMS through the channel gateway, with a local provider that speaks the Twilio-compatible
API: signed webhooks in (the gateway checks the signature), the Messages API out (the provider
checks the account's credentials). Signatures are checked both ways."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from cell_support import AgentAtWork
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue, user
from sms_provider import SID, TOKEN, Provider, signed, sms_provider

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
NUMBER, MEI = "+15550001111", "+8613800138000"
OTHER = "+8613700001234"
P = mpb.ParticipantRole


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[Provider]:
    async with sms_provider() as p:
        yield p


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("sms"))
    with running_cell(stack, folder, f"sms_{uuid.uuid4().hex[:10]}") as running:
        yield running


@dataclass
class Line:
    tenant: pb.Tenant
    webhook: str
    li: Session
    key: str


@pytest.fixture(scope="module")
async def line(cell: Cell, provider: Provider) -> AsyncIterator[Line]:
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    t, c = await onboard(Client(tch, ADMIN_KEY))
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    li = agent()
    li.capacity.add(media=common.MEDIA_TYPE_SMS, max_concurrent=5)
    await c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=li), metadata=c.md)
    await c.users.CreateUser(
        pb.CreateUserRequest(
            tenant_id=t.id, user=user("li", pb.ROLE_AGENT, agent="li.wei"), password=PASSWORD
        ),
        metadata=c.md,
    )
    channel = await rpc.ChannelServiceStub(tch).CreateChannel(
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
        metadata=c.md,
    )
    assert not channel.sms.auth_token, "the auth token is write-only"
    webhook = f"{cell.replica('gateway').http_url}/v1/sms/{t.id}/{channel.id}"
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while (await http.post(webhook, data={})).status == 404:  # until the gateway knows it
            await asyncio.sleep(0.2)
    yield Line(t, webhook, await Session.login(tch, t.name, "li", PASSWORD), c.key)
    await tch.close()


async def text(http: aiohttp.ClientSession, line: Line, body: str, **extra: str) -> int:
    form = {"From": MEI, "To": NUMBER, "Body": body, "MessageSid": "SM" + uuid.uuid4().hex}
    form |= extra
    headers = {"X-Twilio-Signature": signed(line.webhook, form)}
    async with http.post(line.webhook, data=form, headers=headers) as answer:
        if answer.status == 200:
            assert "<Response/>" in await answer.text()
        return answer.status


async def test_texts_reach_the_agent_and_replies_reach_the_provider(
    cell: Cell, line: Line, provider: Provider
) -> None:
    t, li = line.tenant, line.li
    li_at_work = await AgentAtWork(cell, li, t.id).start()
    async with aiohttp.ClientSession() as http:
        assert await text(http, line, "My card is lost") == 200
        talk = await li_at_work.answer()
        joined = await talk.wait_for(lambda f: f.WhichOneof("frame") == "joined")
        assert joined.joined.interaction.channel == common.CHANNEL_SMS
        await talk.wait_for(lambda f: f.message.content.text == "My card is lost")
        # A reply past one message's ten UCS-2 segments (it has Chinese in it) goes as two.
        reply = "已冻结您的卡。" + "x" * 700
        talk.send_text(reply, "r1")
        first = await asyncio.wait_for(provider.sent.get(), 30)
        second = await asyncio.wait_for(provider.sent.get(), 30)
        assert (first["From"], first["To"]) == (NUMBER, MEI)
        assert first["Body"] + second["Body"] == reply and len(first["Body"]) == 670
        assert provider.refused == 0

        # The customer texts again: the same conversation; a retried webhook is kept once.
        again = {"MessageSid": "SM" + uuid.uuid4().hex}
        assert await text(http, line, "Thanks!", **again) == 200
        assert await text(http, line, "Thanks!", **again) == 200
        await talk.wait_for(lambda f: f.message.content.text == "Thanks!")
        await asyncio.sleep(1)
        assert talk.texts().count("Thanks!") == 1
    await talk.close()
    await li_at_work.stop()


async def test_forged_oversized_and_flooding_webhooks_are_refused(line: Line) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"From": MEI, "To": NUMBER, "Body": "hi", "MessageSid": "SMforged"}
        forged = {"X-Twilio-Signature": signed(line.webhook, form, token="not-the-token-at-all")}
        async with http.post(line.webhook, data=form, headers=forged) as answer:
            assert answer.status == 403
        assert await text(http, line, "x" * 1601) == 400
        assert await text(http, line, "hi", From="not-a-number") == 400
        async with http.post(line.webhook, data={"Body": "x" * 100_000}) as answer:
            assert answer.status == 413
        codes = [await text(http, line, f"spam {n}") for n in range(12)]
        assert 429 in codes and codes.count(200) <= 6


async def test_stop_opts_the_customer_out_of_replies_until_start(
    cell: Cell, line: Line, provider: Provider
) -> None:
    """Consent: a STOP is answered by the webhook, kept on the customer's phone identity, and
    the agent's replies to it are not sent until START."""
    li = await AgentAtWork(cell, line.li, line.tenant.id).start()
    customers = gateway_rpc.CustomerServiceStub(grpc.aio.insecure_channel(cell.address("gateway")))
    async with aiohttp.ClientSession() as http:
        form = {
            "From": OTHER,
            "To": NUMBER,
            "Body": "Hello?",
            "MessageSid": "SM" + uuid.uuid4().hex,
        }
        async with http.post(
            line.webhook, data=form, headers={"X-Twilio-Signature": signed(line.webhook, form)}
        ) as answer:
            assert answer.status == 200
        talk = await li.answer()
        await talk.wait_for(lambda f: f.message.content.text == "Hello?")

        async def say(body: str) -> str:
            form = {
                "From": OTHER,
                "To": NUMBER,
                "Body": body,
                "MessageSid": "SM" + uuid.uuid4().hex,
            }
            headers = {"X-Twilio-Signature": signed(line.webhook, form)}
            async with http.post(line.webhook, data=form, headers=headers) as answer:
                assert answer.status == 200
                return await answer.text()

        assert "no more messages" in await say("STOP")
        found = await customers.FindCustomer(
            gpb.FindCustomerRequest(
                tenant_id=line.tenant.id, kind=gpb.IDENTITY_KIND_PHONE, value=OTHER
            ),
            metadata=(("authorization", f"Bearer {line.key}"),),
        )
        assert found.identities[0].HasField("opted_out_time")
        talk.send_text("Not sent: they said stop", "c1")
        await asyncio.sleep(3)  # the reply sender runs at once on a reply; give it time
        assert provider.sent.empty(), "a reply went to a customer who opted out"
        assert "again" in await say("start")
        talk.send_text("Sent again", "c2")
        resumed = await asyncio.wait_for(provider.sent.get(), 30)
        assert (resumed["To"], resumed["Body"]) == (OTHER, "Sent again")
        assert "STOP" not in talk.texts(), "a consent keyword is not part of the conversation"
    await talk.close()
    await li.stop()


MOVER = "+8613600005678"


async def test_a_customer_who_moves_from_web_chat_to_texts_stays_in_one_interaction(
    cell: Cell, line: Line, provider: Provider
) -> None:
    """A customer chats on the site, walks away, and goes on by text: the tenant's site knows
    the phone is theirs (linked), so the text joins the open chat, and the agent's replies
    follow them to the phone, until they are back on the site."""
    t = line.tenant
    key = (("authorization", f"Bearer {line.key}"),)
    gateway = cell.replica("gateway").http_url
    site = await rpc.ChannelServiceStub(
        grpc.aio.insecure_channel(cell.address("tenants"))
    ).CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="site", queue="cards", web=pb.WebChat(allowed_origins=[gateway])
            ),
        ),
        metadata=key,
    )
    socket_url = f"{gateway.replace('http', 'ws', 1)}/v1/web/{t.id}/{site.id}/ws"
    customers = gateway_rpc.CustomerServiceStub(grpc.aio.insecure_channel(cell.address("gateway")))
    li = await AgentAtWork(cell, line.li, t.id).start()
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(30):
            while (
                await http.get(socket_url.replace("ws", "http", 1)[:-2] + "widget.js")
            ).status != 200:
                await asyncio.sleep(0.2)
        browser = await WebVisitor.open(http, socket_url, gateway)
        welcome = await browser.next(lambda i: i["type"] == "welcome")
        await browser.say("Started on the web", "w1")
        talk = await li.answer(welcome["interaction"])
        await talk.wait_for(lambda f: f.message.content.text == "Started on the web")
        visitor = await customers.FindCustomer(
            gpb.FindCustomerRequest(
                tenant_id=t.id, kind=gpb.IDENTITY_KIND_WEB_VISITOR, value=welcome["visitor"]
            ),
            metadata=key,
        )
        await customers.LinkIdentity(
            gpb.LinkIdentityRequest(
                tenant_id=t.id, customer_id=visitor.id, kind=gpb.IDENTITY_KIND_PHONE, value=MOVER
            ),
            metadata=key,
        )
        await browser.ws.close()

        assert await text(http, line, "Now on my phone", From=MOVER) == 200
        moved = await talk.wait_for(lambda f: f.message.content.text == "Now on my phone")
        assert moved.interaction_id == welcome["interaction"]
        assert moved.message.sender_role == P.PARTICIPANT_ROLE_CUSTOMER
        talk.send_text("Got it, on your phone", "p1")
        texted = await asyncio.wait_for(provider.sent.get(), 30)
        assert (texted["To"], texted["Body"]) == (MOVER, "Got it, on your phone")

        # Back on the site, the conversation is whole, and replies stay on the web.
        back = await WebVisitor.open(
            http,
            socket_url,
            gateway,
            visitor=welcome["visitor"],
            interaction=welcome["interaction"],
        )
        await back.next(lambda i: i.get("text") == "Now on my phone")
        await back.next(lambda i: i["type"] == "welcome")
        talk.send_text("Back on the web", "p2")
        await back.next(lambda i: i.get("text") == "Back on the web")
        await asyncio.sleep(2)
        assert provider.sent.empty(), "a reply went to the phone after the customer came back"
        await back.ws.close()
    await talk.close()
    await li.stop()


RATER, QUIET = "+8613500009999", "+8613500008888"


async def test_the_customer_rates_a_closed_conversation_by_text_once(
    cell: Cell, line: Line, provider: Provider
) -> None:
    """CSAT on the customer's own channel: once the agent closes the conversation with a
    disposition, the customer's phone gets the survey, through the provider like any reply (and
    not at all after a STOP); a digit in answer rates the conversation, and is thanked; a
    second digit is a new conversation, and the rating stands."""
    t = line.tenant
    key = (("authorization", f"Bearer {line.key}"),)
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    li = await AgentAtWork(cell, line.li, t.id).start()

    async def close(interaction_id: str) -> None:
        await media.End(
            mpb.EndRequest(
                tenant_id=t.id,
                interaction_id=interaction_id,
                resolution=mpb.Resolution(code="resolved"),
            ),
            metadata=await line.li.metadata(),
        )

    async def rating(interaction_id: str) -> mpb.Rating:
        it = await media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=t.id, interaction_id=interaction_id), metadata=key
        )
        return it.rating

    async with aiohttp.ClientSession() as http:
        # A customer who said STOP is not asked.
        assert await text(http, line, "Hello there", From=QUIET) == 200
        quiet = await li.answer()
        hello = await quiet.wait_for(lambda f: f.message.content.text == "Hello there")
        form = {"From": QUIET, "To": NUMBER, "Body": "STOP", "MessageSid": "SM" + uuid.uuid4().hex}
        headers = {"X-Twilio-Signature": signed(line.webhook, form)}
        async with http.post(line.webhook, data=form, headers=headers) as answer:
            assert answer.status == 200
        await close(hello.interaction_id)

        assert await text(http, line, "Is my new card on its way?", From=RATER) == 200
        talk = await li.answer()
        asked = await talk.wait_for(
            lambda f: f.message.content.text == "Is my new card on its way?"
        )
        interaction = asked.interaction_id
        talk.send_text("Yes, it arrives tomorrow.", "s1")
        replied = await asyncio.wait_for(provider.sent.get(), 30)
        assert (replied["To"], replied["Body"]) == (RATER, "Yes, it arrives tomorrow.")
        await close(interaction)

        survey = await asyncio.wait_for(provider.sent.get(), 30)
        assert (survey["From"], survey["To"]) == (NUMBER, RATER), "the opted-out got none"
        assert survey["Body"] == "How did we do? Reply 1 (poor) to 5 (great)."
        assert await text(http, line, " 4 ", From=RATER) == 200
        thanks = await asyncio.wait_for(provider.sent.get(), 30)
        assert (thanks["To"], thanks["Body"]) == (RATER, "Thank you for your rating.")
        assert (await rating(interaction)).score == 4

        # Another digit is not a second rating: it starts a new conversation.
        assert await text(http, line, "5", From=RATER) == 200
        again = await li.answer()
        fresh = await again.wait_for(lambda f: f.message.content.text == "5")
        assert fresh.interaction_id != interaction
        assert (await rating(interaction)).score == 4
        await asyncio.sleep(2)
        assert provider.sent.empty(), "the survey went once, and only to the one who may get it"
    for stream in (quiet, talk, again):
        await stream.close()
    await li.stop()
