"""A WeChat Official Account through the channel gateway. The test plays WeChat's side by its
published protocol: the server URL check and signed pushes (the gateway checks the signature),
the access token and the customer-service message API (WeChat checks the app secret and the
token). Signatures are checked both ways."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from cell_support import AgentAtWork
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue, user

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
APP_ID, SECRET, TOKEN = "wx" + "0123456789abcdef", "s" * 32, "ServerToken42"
OPENID = "oWx_" + "a1b2c3d4e5f6"


@dataclass
class WeChat:
    """WeChat's API: issues access tokens for the right secret, keeps customer-service
    messages sent with a valid token."""

    port: int = 0
    tokens_issued: int = 0
    sent: asyncio.Queue[dict[str, object]] = field(default_factory=asyncio.Queue)
    refused: int = 0
    valid: set[str] = field(default_factory=set)

    async def token(self, request: web.Request) -> web.Response:
        q = request.query
        if (q.get("appid"), q.get("secret"), q.get("grant_type")) != (
            APP_ID,
            SECRET,
            "client_credential",
        ):
            self.refused += 1
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        self.tokens_issued += 1
        token = uuid.uuid4().hex
        self.valid.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def custom_send(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") not in self.valid:
            self.refused += 1
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        await self.sent.put(await request.json())
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@pytest.fixture(scope="module")
async def wechat() -> AsyncIterator[WeChat]:
    w = WeChat()
    app = web.Application()
    app.router.add_get("/cgi-bin/token", w.token)
    app.router.add_post("/cgi-bin/message/custom/send", w.custom_send)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    w.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield w
    await runner.cleanup()


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("wechat"))
    with running_cell(stack, folder, f"wechat_{uuid.uuid4().hex[:10]}") as running:
        yield running


@dataclass
class Account:
    tenant: pb.Tenant
    url: str
    li: Session


@pytest.fixture(scope="module")
async def account(cell: Cell, wechat: WeChat) -> AsyncIterator[Account]:
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    t, c = await onboard(Client(tch, ADMIN_KEY))
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    await c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md)
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
                name="official-account",
                queue="cards",
                wechat=pb.WechatChannel(
                    app_id=APP_ID,
                    token=TOKEN,
                    app_secret=SECRET,
                    api_base_url=f"http://127.0.0.1:{wechat.port}",
                ),
            ),
        ),
        metadata=c.md,
    )
    assert not channel.wechat.token and not channel.wechat.app_secret, "write-only"
    url = f"{cell.replica('gateway').http_url}/v1/wechat/{t.id}/{channel.id}"
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while (await http.get(url)).status == 404:  # until the gateway knows the account
            await asyncio.sleep(0.2)
    yield Account(t, url, await Session.login(tch, t.name, "li", PASSWORD))
    await tch.close()


def signed(token: str = TOKEN) -> dict[str, str]:
    """The query WeChat adds to every request to the server URL."""
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
    signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()  # noqa: S324 - the protocol's
    return {"timestamp": timestamp, "nonce": nonce, "signature": signature}


def push(kind: str, msg_id: str, openid: str = OPENID, **fields: str) -> bytes:
    extra = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (
        f"<xml><ToUserName><![CDATA[gh_account]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>"
        f"{extra}<MsgId>{msg_id}</MsgId></xml>"
    ).encode()


async def deliver(http: aiohttp.ClientSession, account: Account, body: bytes) -> tuple[int, str]:
    async with http.post(account.url, params=signed(), data=body) as answer:
        return answer.status, await answer.text()


async def test_the_server_url_check_echoes_only_for_the_right_token(account: Account) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(account.url, params={**signed(), "echostr": "e4417"}) as answer:
            assert (answer.status, await answer.text()) == (200, "e4417")
        forged = {**signed("not-the-token"), "echostr": "e4417"}
        async with http.get(account.url, params=forged) as answer:
            assert answer.status == 403


async def test_a_follower_chats_with_an_agent_through_the_account(
    cell: Cell, account: Account, wechat: WeChat
) -> None:
    li = await AgentAtWork(cell, account.li, account.tenant.id).start()
    async with aiohttp.ClientSession() as http:
        first = str(int(time.time() * 1000))
        assert await deliver(http, account, push("text", first, Content="我的卡丢了")) == (
            200,
            "success",
        )
        talk = await li.answer()
        joined = await talk.wait_for(lambda f: f.WhichOneof("frame") == "joined")
        assert joined.joined.interaction.channel == common.CHANNEL_WECHAT
        await talk.wait_for(lambda f: f.message.content.text == "我的卡丢了")
        # A location becomes a map link; a push WeChat repeats is kept once.
        where = push(
            "location", first + "1", Location_X="31.23", Location_Y="121.47", Label="Shanghai"
        )
        assert (await deliver(http, account, where))[0] == 200
        assert (await deliver(http, account, where))[0] == 200
        located = await talk.wait_for(lambda f: "[location]" in f.message.content.text)
        assert "mlat=31.230000&mlon=121.470000" in located.message.content.text
        talk.send_text("已为您冻结。", "r1")
        sent = await asyncio.wait_for(wechat.sent.get(), 30)
        assert sent == {"touser": OPENID, "msgtype": "text", "text": {"content": "已为您冻结。"}}
        talk.send_text("还有其他问题吗", "r2")
        await asyncio.wait_for(wechat.sent.get(), 30)
        assert wechat.tokens_issued == 1, "the access token is kept, not fetched per message"
        assert wechat.refused == 0
        await asyncio.sleep(1)
        assert sum("[location]" in t for t in talk.texts()) == 1
    await talk.close()
    await li.stop()


async def test_forged_and_malformed_pushes_are_refused(account: Account) -> None:
    async with aiohttp.ClientSession() as http:
        body = push("text", "1", Content="hi")
        async with http.post(account.url, params=signed("not-the-token"), data=body) as answer:
            assert answer.status == 403
        for bad in (
            b"<xml><unclosed>",
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>',
            push("voice", "2"),
            b"<notxml/>",
        ):
            assert (await deliver(http, account, bad))[0] == 400, bad


async def test_an_unfollower_gets_no_replies_until_they_follow_again(
    cell: Cell, account: Account, wechat: WeChat
) -> None:
    """WeChat lets no message reach someone who unfollowed: the unfollow event opts them out,
    and following again opts them back in."""
    fan = "oFan" + uuid.uuid4().hex[:20]
    li = await AgentAtWork(cell, account.li, account.tenant.id).start()
    async with aiohttp.ClientSession() as http:
        first = str(int(time.time() * 1000))
        assert (await deliver(http, account, push("text", first, fan, Content="在吗")))[0] == 200
        talk = await li.answer()
        await talk.wait_for(lambda f: f.message.content.text == "在吗")
        unfollow = push("event", "", fan, Event="unsubscribe")
        assert await deliver(http, account, unfollow) == (200, "success")
        talk.send_text("not sent", "u1")
        await talk.wait_for(lambda f: f.message.content.text == "not sent")
        await asyncio.sleep(2)
        assert wechat.sent.empty(), "a reply reached someone who unfollowed"
        follow = push("event", "", fan, Event="subscribe")
        assert await deliver(http, account, follow) == (200, "success")
        await talk.wait_for(lambda f: f.message.content.text == "[followed the account]")
        talk.send_text("欢迎回来", "u2")
        sent = await asyncio.wait_for(wechat.sent.get(), 30)
        assert sent["touser"] == fan and sent["text"] == {"content": "欢迎回来"}, sent
    await talk.close()
    await li.stop()


async def test_a_follower_is_asked_for_a_rating_in_their_language_and_answers_it(
    cell: Cell, account: Account, wechat: WeChat
) -> None:
    """CSAT on WeChat: once the agent closes the conversation, the follower gets the survey
    through the customer-service API, in the language they wrote in; a full-width digit, as a
    Chinese keyboard types it, rates the conversation."""
    rater = "oRater" + uuid.uuid4().hex[:20]
    t = account.tenant
    li = await AgentAtWork(cell, account.li, t.id).start()
    media = media_rpc.MediaServiceStub(grpc.aio.insecure_channel(cell.address("media")))
    async with aiohttp.ClientSession() as http:
        first = str(int(time.time() * 1000))
        body = push("text", first, rater, Content="新卡寄出了吗")
        assert (await deliver(http, account, body))[0] == 200
        talk = await li.answer()
        asked = await talk.wait_for(lambda f: f.message.content.text == "新卡寄出了吗")
        await media.End(
            mpb.EndRequest(
                tenant_id=t.id,
                interaction_id=asked.interaction_id,
                resolution=mpb.Resolution(code="resolved"),
            ),
            metadata=await account.li.metadata(),
        )
        survey = await asyncio.wait_for(wechat.sent.get(), 30)
        assert survey["touser"] == rater
        assert survey["text"] == {"content": "我们的服务如何？请回复 1（很差）到 5（很好）。"}  # noqa: RUF001
        answer = push("text", first + "1", rater, Content="\uff15")  # a full-width 5
        assert (await deliver(http, account, answer))[0] == 200
        thanks = await asyncio.wait_for(wechat.sent.get(), 30)
        assert thanks["touser"] == rater and thanks["text"] == {"content": "感谢您的评价。"}
        it = await media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=t.id, interaction_id=asked.interaction_id),
            metadata=await account.li.metadata(),
        )
        assert it.rating.score == 5
    await talk.close()
    await li.stop()
