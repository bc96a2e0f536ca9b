"""The web chat through the channel gateway, over a real WebSocket: a customer on a page of an
allowed origin chats with an agent who signed in, loses the connection, resumes with nothing
lost or doubled, and is one customer in the customer store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cell_support import AgentAtWork
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue, user

from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, WebVisitor
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as mpb_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
SHOP = "http://shop.example.test"
PASSWORD = "correct horse battery staple"
P = mpb.ParticipantRole


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("webchat"))
    with running_cell(stack, folder, f"webchat_{uuid.uuid4().hex[:10]}") as running:
        yield running


@dataclass
class Shop:
    tenant: pb.Tenant
    key: str
    channel: pb.Channel
    li: Session
    base: str  # the widget's folder on the gateway

    def socket_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "ws"


@pytest.fixture(scope="module")
async def shop(cell: Cell) -> AsyncIterator[Shop]:
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    admin = Client(tch, ADMIN_KEY)
    t, c = await onboard(admin)
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    await c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md)
    await c.users.CreateUser(
        pb.CreateUserRequest(
            tenant_id=t.id, user=user("li", pb.ROLE_AGENT, agent="li.wei"), password=PASSWORD
        ),
        metadata=c.md,
    )
    channel = await rpc_channels(c).CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="website",
                queue="cards",
                web=pb.WebChat(allowed_origins=[SHOP], title="Acme help"),
            ),
        ),
        metadata=c.md,
    )
    li = await Session.login(tch, t.name, "li", PASSWORD)
    gateway = cell.replica("gateway").http_url
    base = f"{gateway}/v1/web/{t.id}/{channel.id}/"
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while (await http.get(base + "widget.js")).status != 200:  # the gateway learns it
            await asyncio.sleep(0.2)
    yield Shop(t, c.key, channel, li, base)
    await tch.close()


def rpc_channels(c: Client) -> Any:
    from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

    return rpc.ChannelServiceStub(c.channel)


async def browse(http: aiohttp.ClientSession, shop: Shop, **hello: Any) -> WebVisitor:
    return await WebVisitor.open(http, shop.socket_url(), SHOP, **hello)


async def test_a_page_of_another_origin_cannot_open_the_chat(shop: Shop) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(shop.socket_url(), origin="http://evil.example.test")
        assert refused.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
            await http.ws_connect(shop.base.replace(shop.channel.id, str(uuid.uuid4())) + "ws")
        assert missing.value.status == 404


async def test_a_customer_chats_with_an_agent_and_resumes_after_a_dropped_connection(
    cell: Cell, shop: Shop
) -> None:
    t = shop.tenant
    li = await AgentAtWork(cell, shop.li, t.id).start()
    async with aiohttp.ClientSession() as http:
        # The pre-chat form's answers start the conversation: the agent's offer carries them.
        browser = await browse(http, shop, name="Mei", form={"order_number": "A-1001"})
        welcome = await browser.next(lambda i: i["type"] == "welcome")
        visitor, interaction = welcome["visitor"], welcome["interaction"]
        assert visitor.startswith("v-") and interaction
        await browser.say("my card is lost", "m1")
        mine = await browser.next(lambda i: i.get("from") == "me")
        assert mine["text"] == "my card is lost" and mine["client_id"] == "m1"

        talk = await li.answer(interaction)
        assert li.offers[interaction].requirements.collected_data["order_number"] == "A-1001"
        await talk.wait_for(lambda f: f.message.content.text == "my card is lost")
        talk.send_text("I have blocked it.", "a1")
        reply = await browser.next(lambda i: i.get("text") == "I have blocked it.")
        assert reply["from"] == "agent"

        # The connection drops; the agent writes meanwhile; the browser resumes.
        await browser.ws.close()
        talk.send_text("Are you still there?", "a2")
        await talk.wait_for(lambda f: f.message.content.text == "Are you still there?")
        last = max(i["seq"] for i in browser.items if "seq" in i)
        again = await browse(http, shop, visitor=visitor, interaction=interaction, after=last)
        back = await again.next(lambda i: i["type"] == "welcome")
        assert back["interaction"] == interaction and back["visitor"] == visitor
        missed = await again.next(lambda i: i.get("text") == "Are you still there?")
        assert missed["seq"] > last
        # The widget resends what it had not seen echoed: it is kept once.
        await again.say("my card is lost", "m1")
        await again.say("yes, thanks", "m3")
        await again.next(lambda i: i.get("text") == "yes, thanks")
        assert all(i.get("seq", last + 1) > last for i in again.items), "replayed what was seen"
        await talk.wait_for(lambda f: f.message.content.text == "yes, thanks")
        said = [t for t in talk.texts() if t == "my card is lost"]
        assert said == ["my card is lost"], "a resent message was kept twice"

        customers = gateway_rpc.CustomerServiceStub(
            grpc.aio.insecure_channel(cell.address("gateway"))
        )
        found = await customers.FindCustomer(
            gpb.FindCustomerRequest(
                tenant_id=t.id, kind=gpb.IDENTITY_KIND_WEB_VISITOR, value=visitor
            ),
            metadata=(("authorization", f"Bearer {shop.key}"),),
        )
        assert [i.value for i in found.identities] == [visitor]
        await again.ws.close()
    await talk.close()
    await li.stop()


async def test_uploads_are_checked_and_a_refused_file_leaves_nothing(
    cell: Cell, shop: Shop
) -> None:
    async with aiohttp.ClientSession() as http:
        browser = await browse(http, shop, name="Ana")
        welcome = await browser.next(lambda i: i["type"] == "welcome")
        upload = cell.replica("gateway").http_url + welcome["upload"]

        async def post(
            body: bytes, kind: str, url: str = upload, origin: str = SHOP, mid: str = "u1"
        ) -> int:
            headers = {"Content-Type": kind, "X-Filename": "a%20b.png", "X-Message-Id": mid}
            if origin:
                headers["Origin"] = origin
            return (await http.post(url, data=body, headers=headers)).status

        # CORS: the widget uploads from the tenant's page to the gateway.
        preflight = await http.options(
            upload, headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.headers["Access-Control-Allow-Origin"] == SHOP
        assert await post(PNG, "image/png", origin="http://evil.example.test") == 403
        assert await post(PNG, "image/png", url=upload.replace("signature=", "signature=0")) == 403
        assert (
            await post(PNG, "image/png", url=upload.replace(shop.tenant.id, str(uuid.uuid4())))
            == 404
        )
        # A program calling itself a PNG, a type not allowed, a file over the limit.
        assert await post(b"MZ\x90\x00 not an image", "image/png") == 415
        assert await post(b"#!/bin/sh", "application/x-sh") == 415
        assert await post(b"\x89PNG\r\n\x1a\n" + bytes(6 * 1024 * 1024), "image/png") == 413
        assert await post(PNG, "image/png") == 201
        shown = await browser.next(lambda i: "attachment" in i)
        assert shown["attachment"]["name"] == "a b.png" and shown["from"] == "me"
        # The tenant's key may open it; an agent who is not in the conversation may not.
        aid = shown["attachment"]["url"].split("/")[-1].split("?")[0]
        ask = gpb.GetDownloadLinkRequest(tenant_id=shop.tenant.id, attachment_id=aid)
        link = await attachments(cell).GetDownloadLink(
            ask, metadata=(("authorization", f"Bearer {shop.key}"),)
        )
        assert link.name == "a b.png" and link.sha256 == hashlib.sha256(PNG).hexdigest()
        with pytest.raises(grpc.aio.AioRpcError) as outsider:
            await attachments(cell).GetDownloadLink(ask, metadata=await shop.li.metadata())
        assert outsider.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [i for i in browser.items if "attachment" in i] == [shown], "a refused file shown"
        stored = cell.log_dir.parent / "objects" / "tenants" / shop.tenant.id / "attachments"
        kept = {p.name for p in stored.iterdir()}
        assert len(kept) == 1
        # The same upload again (a retry) is one message, and one file.
        assert await post(PNG, "image/png") == 201
        assert {p.name for p in stored.iterdir()} == kept
        # Once the chat has ended, a file is refused, and nothing of it stays in the store.
        await browser.ws.send_json({"type": "leave"})
        async with asyncio.timeout(15):
            while (await browser.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                continue  # until the gateway closes the ended chat
        assert await post(PNG, "image/png", mid="u2") == 409
        assert {p.name for p in stored.iterdir()} == kept


async def test_bad_input_and_floods_close_the_socket_with_a_reason(shop: Shop) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(shop.socket_url(), origin=SHOP)
        await ws.send_str("not json")
        closed = await ws.receive()
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1003
        browser = await browse(http, shop)
        await browser.next(lambda i: i["type"] == "welcome")
        for n in range(30):
            await browser.say(f"spam {n}", f"s{n}")
        async with asyncio.timeout(30):
            while (message := await browser.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1008


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser(size: str = "390,844", *flags: str) -> Any:
    """Headless Chromium, phone-sized unless told otherwise, with any other `flags`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists():
        pytest.fail("Chromium is missing: `make install` installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={size}",
        *flags,
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def _bubbles(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#lianluo-chat li")]


async def _until_shown(driver: Any, text: str, seconds: float = 30) -> list[str]:
    async with asyncio.timeout(seconds):
        while text not in (shown := await asyncio.to_thread(_bubbles, driver)):
            await asyncio.sleep(0.2)
    return shown


async def _until(driver: Any, script: str, seconds: float = 30) -> Any:
    """The first truthy result of `script` in the page."""
    async with asyncio.timeout(seconds):
        while not (found := await asyncio.to_thread(driver.execute_script, script)):
            await asyncio.sleep(0.2)
    return found


def attachments(cell: Cell) -> Any:
    return gateway_rpc.AttachmentServiceStub(grpc.aio.insecure_channel(cell.address("gateway")))


# A 2 x 1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000020000000108020000007b40e8dd0000000d4944415478"
    "9c63f8cfc000440008fe01ffc69e79f70000000049454e44ae426082"
)


async def test_the_widget_chats_and_resumes_in_headless_chromium(
    cell: Cell, shop: Shop, tmp_path: Path
) -> None:
    """The real widget in a phone-sized headless Chromium: it opens on the page the gateway
    hosts, chats with an agent, survives a dropped connection and a reload, shows typing and
    read receipts, and sends a photo."""
    from selenium.webdriver.common.by import By

    t = shop.tenant
    gateway = cell.replica("gateway").http_url
    c = Client(grpc.aio.insecure_channel(cell.address("tenants")), shop.key)
    site = await rpc_channels(c).CreateChannel(
        pb.CreateChannelRequest(
            tenant_id=t.id,
            channel=pb.Channel(
                name="site", queue="cards", web=pb.WebChat(allowed_origins=[gateway], title="Acme")
            ),
        ),
        metadata=c.md,
    )
    page = f"{gateway}/v1/web/{t.id}/{site.id}/"
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while (await http.get(page + "widget.js")).status != 200:
            await asyncio.sleep(0.2)
    li = await AgentAtWork(cell, shop.li, t.id).start()
    driver = await asyncio.to_thread(_browser)
    try:
        # The pre-chat form asks first; its answer reaches the agent's offer.
        await asyncio.to_thread(driver.get, page + "?prechat=order_number")

        def prechat() -> None:
            driver.find_element(By.CSS_SELECTOR, "form.prechat input[name=order_number]").send_keys(
                "A-2002"
            )
            driver.find_element(By.CSS_SELECTOR, "form.prechat button").click()

        await asyncio.to_thread(prechat)

        def type_(text: str) -> None:
            field = driver.find_element(By.CSS_SELECTOR, "#lianluo-chat input[name=text]")
            field.send_keys(text)
            driver.find_element(By.CSS_SELECTOR, "#lianluo-chat button[type=submit]").click()

        await asyncio.to_thread(type_, "hello from a phone")
        await _until_shown(driver, "hello from a phone")
        kept = await asyncio.to_thread(
            driver.execute_script,
            "return JSON.parse(Object.entries(localStorage)"
            ".find(([k]) => k.startsWith('lianluo:'))[1])",
        )
        talk = await li.answer(kept["interaction"])
        await talk.wait_for(lambda f: f.message.content.text == "hello from a phone")
        assert li.offers[kept["interaction"]].requirements.collected_data == {
            "order_number": "A-2002"
        }
        talk.send_text("Hi, how can I help?", "b1")
        await _until_shown(driver, "Hi, how can I help?")

        # The network drops; the agent writes; the widget reconnects and shows it once.
        await asyncio.to_thread(driver.execute_script, "window.lianluoChat.drop()")
        talk.send_text("Still there?", "b2")
        shown = await _until_shown(driver, "Still there?")
        assert shown.count("Still there?") == 1 and shown.count("Hi, how can I help?") == 1

        # A reload shows the whole conversation again, each item once.
        await asyncio.to_thread(driver.refresh)
        shown = await _until_shown(driver, "Still there?")
        for text in ("hello from a phone", "Hi, how can I help?", "Still there?"):
            assert shown.count(text) == 1, (text, shown)
        await asyncio.to_thread(type_, "yes!")
        yes = await talk.wait_for(lambda f: f.message.content.text == "yes!")
        assert talk.texts().count("hello from a phone") == 1

        # Typing shows on both sides; the agent's read receipt ticks the customer's words.
        await asyncio.to_thread(
            driver.find_element(By.CSS_SELECTOR, "#lianluo-chat input[name=text]").send_keys, "p"
        )
        await talk.wait_for(lambda f: f.WhichOneof("frame") == "typing" and f.typing.active)
        # Typing is a signal nothing keeps, delivered at most once: a typing client says it
        # again while it types (the widget every 2 s), and so does this agent.
        shown_typing = "return document.querySelector('#lianluo-chat .typing').textContent"
        async with asyncio.timeout(30):
            while True:
                talk.typing(True)
                with contextlib.suppress(TimeoutError):
                    await _until(driver, shown_typing, 2)
                    break
        talk.read(yes.sequence)
        await _until(
            driver,
            "return [...document.querySelectorAll('#lianluo-chat li.me')]"
            ".every(li => li.classList.contains('read'))",
        )
        # The widget read the agent's words: its receipt reaches the agent.
        hi = next(f for f in talk.frames if f.message.content.text == "Still there?")
        await talk.wait_for(
            lambda f: f.WhichOneof("frame") == "read" and f.read.sequence >= hi.sequence
        )

        # A photo goes up from the file picker: the agent gets it, whole, by its signed link.
        photo = Path(tmp_path) / "receipt.png"
        photo.write_bytes(PNG)
        await asyncio.to_thread(
            driver.find_element(By.CSS_SELECTOR, "#lianluo-chat input[type=file]").send_keys,
            str(photo),
        )
        sent = await talk.wait_for(lambda f: f.message.content.HasField("image"))
        image = sent.message.content.image
        assert (image.name, image.content_type, image.size_bytes) == (
            "receipt.png",
            "image/png",
            len(PNG),
        )
        assert image.sha256 == hashlib.sha256(PNG).hexdigest()
        link = await attachments(cell).GetDownloadLink(
            gpb.GetDownloadLinkRequest(tenant_id=t.id, attachment_id=image.uri.split(":", 1)[1]),
            metadata=await shop.li.metadata(),
        )
        async with aiohttp.ClientSession() as http:
            got = await http.get(link.url)
            assert got.status == 200 and await got.read() == PNG
            assert got.headers["Content-Type"] == "image/png"
            # The link is signed: changed, it opens nothing.
            assert (await http.get(link.url[:-2] + "00")).status == 403
        # The widget shows the photo it sent, loaded from its own signed link.
        await _until(
            driver,
            "const img = document.querySelector('#lianluo-chat li.me img');"
            "return img && img.complete && img.naturalWidth === 2",
        )
        # The agent closes the chat; the widget asks for a rating, and the customer gives five.
        media = mpb_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
        await media.End(
            mpb.EndRequest(
                tenant_id=t.id,
                interaction_id=kept["interaction"],
                resolution=mpb.Resolution(code="resolved"),
            ),
            metadata=await shop.li.metadata(),
        )
        await _until(driver, "return document.querySelector('#lianluo-chat li.rating button')")
        await asyncio.to_thread(
            driver.execute_script,
            "document.querySelector('#lianluo-chat li.rating button[data-score=\"5\"]').click()",
        )
        await _until_shown(driver, "Thank you for your rating.")
        rated = await media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=t.id, interaction_id=kept["interaction"]),
            metadata=(("authorization", f"Bearer {shop.key}"),),
        )
        assert rated.rating.score == 5
        await talk.close()
    finally:
        await asyncio.to_thread(driver.quit)
        await li.stop()
