"""The demo `make run` plays: one customer chat through every service of the cell.

A tenant is onboarded through the tenants API, with its people; the agents sign in as
themselves; a customer chats on the web with a session token of their own, answers the
self-service flow, is routed to the best agent, talks with them; the case is closed as resolved,
the recording is read back, and the closed-loop notice arrives at a local webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, StreamClient, WebVisitor
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

DEMO_TENANT = "demo-bank"
# A fresh signing secret each run: the demo checks the notice it receives was signed with it.
WEBHOOK_SECRET = secrets.token_hex(16)
# The demo tenant's phone number: a softphone calls sip:<it>@127.0.0.1:5060.
PHONE_NUMBER = "+861000000000"
# The demo's people, and one fresh password for all of them each run (kept in demo.json for
# `lianluo agent`): the agents, a supervisor of the cards queue, and a tenant admin.
PASSWORD = secrets.token_urlsafe(12)
PEOPLE = [
    pb.User(name="li.wei", display_name="Li Wei", role=pb.ROLE_AGENT, agent="li.wei"),
    pb.User(name="ana.silva", display_name="Ana Silva", role=pb.ROLE_AGENT, agent="ana.silva"),
    pb.User(
        name="fraud.expert", display_name="Fraud desk", role=pb.ROLE_AGENT, agent="fraud.expert"
    ),
    pb.User(name="mei.lin", display_name="Mei Lin", role=pb.ROLE_SUPERVISOR, queues=["cards"]),
    pb.User(name="admin", display_name="Demo Bank admin", role=pb.ROLE_TENANT_ADMIN),
]
R = mpb.ParticipantRole


def say(step: str, detail: str) -> None:
    print(f"  [{step:12}] {detail}", flush=True)


def demo_flow() -> pb.Flow:
    """Card services: a menu by digit or words, then the card's last four digits."""
    return pb.Flow(
        name="card-services",
        entry_node="welcome",
        nodes=[
            pb.FlowNode(
                id="welcome", prompt=pb.PromptNode(text="Welcome to Demo Bank.", next="menu")
            ),
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(
                    prompt="How can we help? A lost card, or a payment question?",
                    choices=[
                        pb.MenuChoice(
                            digit="1", keywords=["lost", "stolen"], label="Lost card", next="last4"
                        ),
                        pb.MenuChoice(
                            digit="2",
                            keywords=["payment", "charge"],
                            label="Payments",
                            next="to-queue",
                        ),
                    ],
                    max_retries=2,
                    no_match_next="to-queue",
                ),
            ),
            pb.FlowNode(
                id="last4",
                collect=pb.CollectNode(
                    prompt="Please type the last four digits of your card.",
                    variable="card_last4",
                    pattern=r"\d{4}",
                    max_retries=2,
                    next="to-queue",
                    failure_next="to-queue",
                ),
            ),
            pb.FlowNode(id="to-queue", route_to_queue=pb.RouteToQueueNode(queue="cards")),
        ],
    )


async def onboard(
    channel: grpc.aio.Channel, admin_key: str, webhook_url: str, web_origin: str
) -> tuple[pb.Tenant, str, str]:
    """The demo tenant with its key, configuration and people; and its web chat's id."""
    admin = (("authorization", f"Bearer {admin_key}"),)
    tenant = await rpc.TenantServiceStub(channel).CreateTenant(
        pb.CreateTenantRequest(
            tenant=pb.Tenant(
                name=DEMO_TENANT,
                display_name="Demo Bank",
                plan=pb.PLAN_BUSINESS,
                expected_concurrent_sessions=500,
                channels=[common.CHANNEL_WEB, common.CHANNEL_PHONE, common.CHANNEL_WECHAT],
            ),
            request_id="demo-tenant",
        ),
        metadata=admin,
    )
    say("tenant", f"{tenant.display_name} ({tenant.name})")
    key = await rpc.ApiKeyServiceStub(channel).CreateApiKey(
        pb.CreateApiKeyRequest(
            tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="demo"
        ),
        metadata=admin,
    )
    say("api key", f"{key.secret[:12]}... (shown once; only its hash is stored)")
    md = (("authorization", f"Bearer {key.secret}"),)
    await configure(channel, tenant.id, md)
    notifications = rpc.NotificationConfigServiceStub(channel)
    for rule in (
        await notifications.ListRules(pb.ListRulesRequest(tenant_id=tenant.id), metadata=md)
    ).rules:
        await notifications.DeleteRule(
            pb.DeleteRuleRequest(tenant_id=tenant.id, rule_id=rule.id), metadata=md
        )
    await notifications.CreateRule(
        pb.CreateRuleRequest(
            tenant_id=tenant.id,
            rule=pb.NotificationRule(
                name="case-resolved",
                template="case-resolved",
                enabled=True,
                interaction_closed=pb.InteractionClosedTrigger(resolutions=["resolved"]),
                webhook=pb.WebhookTarget(url=webhook_url, signing_secret=WEBHOOK_SECRET),
            ),
        ),
        metadata=md,
    )
    say("notify rule", f"case resolved -> webhook {webhook_url} (HMAC-SHA256 signed)")
    channels = rpc.ChannelServiceStub(channel)
    listed = (
        await channels.ListChannels(pb.ListChannelsRequest(tenant_id=tenant.id), metadata=md)
    ).channels
    website = next((c for c in listed if c.name == "website"), None)
    if not any(c.name == "phone" for c in listed):
        phone = pb.Channel(
            name="phone", flow="card-services", voice=pb.VoiceChannel(numbers=[PHONE_NUMBER])
        )
        await channels.CreateChannel(
            pb.CreateChannelRequest(tenant_id=tenant.id, channel=phone), metadata=md
        )
    say("phone", f"calls to {PHONE_NUMBER} enter card-services")
    chat = pb.Channel(
        name="website",
        flow="card-services",
        web=pb.WebChat(allowed_origins=[web_origin], title="Demo Bank: chat with us"),
    )
    if website is None:
        website = await channels.CreateChannel(
            pb.CreateChannelRequest(tenant_id=tenant.id, channel=chat), metadata=md
        )
    else:  # an earlier run's gateway had another address
        chat.id = website.id
        website = await channels.UpdateChannel(
            pb.UpdateChannelRequest(tenant_id=tenant.id, channel=chat), metadata=md
        )
    say("web chat", f"widget for pages of {web_origin}, entering card-services")
    return tenant, key.secret, website.id


async def configure(channel: grpc.aio.Channel, tenant_id: str, md: Any) -> None:
    await _ensure(
        rpc.QueueServiceStub(channel).CreateQueue(
            pb.CreateQueueRequest(
                tenant_id=tenant_id,
                request_id="demo-queue",
                queue=pb.Queue(
                    name="cards",
                    display_name="Card services",
                    required_skills=[common.SkillLevel(skill="cards", level=3)],
                    priority=5,
                    service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
                    max_wait_seconds=120,
                    overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
                    media=common.MEDIA_TYPE_CHAT,
                ),
            ),
            metadata=md,
        )
    )
    say("queue", "cards: skill cards>=3, 80% within 20 s, overflow to messages after 120 s")
    for name, display, level, kind in [
        ("li.wei", "Li Wei", 8, pb.AGENT_KIND_STAFF),
        ("ana.silva", "Ana Silva", 5, pb.AGENT_KIND_STAFF),
        ("fraud.expert", "Fraud desk", 10, pb.AGENT_KIND_EXPERT),
    ]:
        await _ensure(
            rpc.AgentServiceStub(channel).CreateAgent(
                pb.CreateAgentRequest(
                    tenant_id=tenant_id,
                    request_id=f"demo-agent-{name}",
                    agent=pb.Agent(
                        name=name,
                        display_name=display,
                        kind=kind,
                        skills=[common.SkillLevel(skill="cards", level=level)],
                        languages=["en", "zh-CN"],
                        capacity=[pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=3)],
                    ),
                ),
                metadata=md,
            )
        )
        say(
            "agent",
            f"{display} ({pb.AgentKind.Name(kind)[11:].lower()}), cards:{level}",
        )
    users = rpc.UserServiceStub(channel)
    for person in PEOPLE:
        await _ensure(
            users.CreateUser(
                pb.CreateUserRequest(
                    tenant_id=tenant_id, user=person, request_id=f"demo-user-{person.name}"
                ),
                metadata=md,
            )
        )
    for listed in (
        await users.ListUsers(pb.ListUsersRequest(tenant_id=tenant_id), metadata=md)
    ).users:
        await users.SetPassword(
            pb.SetPasswordRequest(tenant_id=tenant_id, user_id=listed.id, password=PASSWORD),
            metadata=md,
        )
    say("people", ", ".join(f"{p.name} ({pb.Role.Name(p.role)[5:].lower()})" for p in PEOPLE))
    await rpc.FlowServiceStub(channel).PutFlow(
        pb.PutFlowRequest(tenant_id=tenant_id, flow=demo_flow()), metadata=md
    )
    say("ivr flow", "card-services: menu by digit or words, collect last 4 digits, route to cards")
    await _ensure(
        rpc.NotificationConfigServiceStub(channel).CreateTemplate(
            pb.CreateTemplateRequest(
                tenant_id=tenant_id,
                request_id="demo-template",
                template=pb.NotificationTemplate(
                    name="case-resolved",
                    channel=pb.DELIVERY_CHANNEL_WEBHOOK,
                    locale="en",
                    body=(
                        "Dear {{customer_name}}, your case {{interaction_id}} is resolved. "
                        "Thank you."
                    ),
                ),
            ),
            metadata=md,
        )
    )


async def _ensure(call: Any) -> None:
    """Create a demo resource; one left by an earlier run is just as good."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


async def _retry(call: Any, seconds: float = 20) -> Any:
    """Retry while the other services are still learning the new configuration; on giving
    up, raise the last answer rather than a bare timeout."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            retryable = error.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            if not retryable or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


@dataclass
class DemoResult:
    """What the demo saw, so the end-to-end tests can assert on the same journey."""

    tenant_id: str = ""
    tenant_name: str = ""
    # The page hosting the web chat widget, to open in a browser.
    web_url: str = ""
    tenant_key: str = ""
    password: str = ""
    interaction_id: str = ""
    prompts: list[str] = field(default_factory=list)
    routed_to: str = ""
    agent_heard: list[str] = field(default_factory=list)
    customer_heard: list[str] = field(default_factory=list)
    recording_types: list[str] = field(default_factory=list)
    notice: dict[str, Any] = field(default_factory=dict)
    signature_valid: bool = False


async def play_demo(cell: Cell, admin_key: str) -> DemoResult:
    print("\nDemo: one customer chat through every service of the cell", flush=True)
    received: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()

    async def webhook(request: web.Request) -> web.Response:
        received.put_nowait((await request.read(), request.headers.get("X-Lianluo-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/notices", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            grpc.aio.insecure_channel(cell.address("tenants")) as tch,
            grpc.aio.insecure_channel(cell.address("media")) as mch,
            grpc.aio.insecure_channel(cell.address("acd")) as ach,
            grpc.aio.insecure_channel(cell.address("recording")) as rch,
        ):
            gateway = cell.replica("gateway").http_url
            tenant, key, website = await onboard(
                tch, admin_key, f"http://127.0.0.1:{port}/notices", gateway
            )
            page = f"{gateway}/v1/web/{tenant.id}/{website}/"
            return await chat(tenant, key, page, gateway, tch, mch, ach, rch, received)
    finally:
        await runner.cleanup()


async def chat(
    tenant: pb.Tenant,
    key: str,
    page: str,
    origin: str,
    tch: grpc.aio.Channel,
    mch: grpc.aio.Channel,
    ach: grpc.aio.Channel,
    rch: grpc.aio.Channel,
    received: asyncio.Queue[tuple[bytes, str]],
) -> DemoResult:
    md = (("authorization", f"Bearer {key}"),)
    acd = acd_rpc.AcdServiceStub(ach)
    desks, people = {}, {}
    for name in ("li.wei", "ana.silva"):
        person = await Session.login(tch, tenant.name, name, PASSWORD)
        people[person.user.agent_id] = person
        signed = await person.metadata()
        await _retry(
            lambda p=person, signed=signed: acd.SetPresence(
                acd_pb2.SetPresenceRequest(
                    tenant_id=tenant.id,
                    agent_id=p.user.agent_id,
                    presence=acd_pb2.PRESENCE_AVAILABLE,
                ),
                metadata=signed,
            )
        )
        desks[person.user.agent_id] = await StreamClient.connect(
            mch,
            await person.token(),
            mpb.Join(
                tenant_id=tenant.id,
                role=R.PARTICIPANT_ROLE_AGENT,
                subject_id=person.user.agent_id,
            ),
        )
        say("signed in", f"{person.user.display_name} is available, desk open")
    # The customer writes from the web chat widget: a WebSocket to the channel gateway.
    async with aiohttp.ClientSession() as http:
        customer = await _retry_open(
            lambda: WebVisitor.open(
                http,
                page.replace("http", "ws", 1) + "ws",
                origin,
                name="Mei Chen",
                form={"value": "high", "segment": "gold"},
            )
        )
        welcome = await customer.next(lambda i: i["type"] == "welcome")
        result = DemoResult(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            tenant_key=key,
            password=PASSWORD,
            interaction_id=welcome["interaction"],
            web_url=page,
        )
        say("contact", f"web chat from Mei Chen, interaction {result.interaction_id[:8]}")
        return await _converse(result, customer, tenant, people, desks, acd, mch, rch, md, received)


async def _retry_open(opening: Any, seconds: float = 20) -> WebVisitor:
    """Open the chat once the gateway has learnt the tenant's new channel (404 until then)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            visitor: WebVisitor = await opening()
            return visitor
        except aiohttp.WSServerHandshakeError as error:
            if error.status != 404 or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def _converse(
    result: DemoResult,
    customer: WebVisitor,
    tenant: pb.Tenant,
    people: dict[str, Session],
    desks: dict[str, StreamClient],
    acd: Any,
    mch: grpc.aio.Channel,
    rch: grpc.aio.Channel,
    md: Any,
    received: asyncio.Queue[tuple[bytes, str]],
) -> DemoResult:
    """From the customer's first prompt to the notice that their case is closed."""
    it = mpb.Interaction(id=result.interaction_id)
    media = media_rpc.MediaServiceStub(mch)
    shown: set[int] = set()

    def show(item: dict[str, Any]) -> bool:
        if item.get("seq") in shown:
            return False
        shown.add(item.get("seq", 0))
        if item.get("type") == "prompt":
            say(
                "ivr",
                item["text"] + "".join(f"  [{c['digit']}] {c['label']}" for c in item["choices"]),
            )
        elif item.get("type") == "message" and item["from"] in ("me", "agent"):
            say("customer" if item["from"] == "me" else "agent", item["text"])
        return False

    async def wait(predicate: Any, seconds: float = 30) -> dict[str, Any]:
        return await customer.next(lambda i: show(i) or predicate(i), seconds)

    await wait(lambda i: i.get("type") == "prompt" and bool(i["choices"]))
    await customer.say("my card was stolen", "m1")
    await wait(lambda i: "four digits" in i.get("text", ""))
    await customer.say("4417", "m2")
    await wait(lambda i: i.get("state") == "queued")
    say("routing", "queued in cards; the ACD looks for the best agent")

    done, _ = await asyncio.wait(
        [
            asyncio.create_task(d.wait_for(lambda f: f.WhichOneof("frame") == "offer", 60))
            for d in desks.values()
        ],
        return_when=asyncio.FIRST_COMPLETED,
    )
    offer = next(iter(done)).result().offer
    chosen = people[offer.agent_id].user
    result.routed_to = chosen.name
    reasons = ", ".join(f"{f.name}={f.value:g}" for f in offer.candidate.features) or "longest idle"
    say("offer", f"to {chosen.display_name}: {reasons}")
    as_agent = await people[offer.agent_id].metadata()
    await acd.RespondToOffer(
        acd_pb2.RespondToOfferRequest(
            tenant_id=tenant.id, offer_id=offer.id, agent_id=offer.agent_id, accept=True
        ),
        metadata=as_agent,
    )
    await wait(lambda i: i.get("state") == "connected")
    say("assigned", f"{chosen.display_name} accepted and joined")

    agent = await StreamClient.connect(
        mch,
        await people[offer.agent_id].token(),
        mpb.Join(
            tenant_id=tenant.id,
            interaction_id=it.id,
            role=R.PARTICIPANT_ROLE_AGENT,
            subject_id=offer.agent_id,
        ),
    )
    await agent.wait_for(lambda f: f.message.content.text == "4417")
    agent.send_text("Hello Mei, I have blocked the card ending 4417 and ordered a new one.", "a1")
    await wait(lambda i: i.get("from") == "agent")
    await customer.say("Thank you, that was quick!", "m3")
    await agent.wait_for(lambda f: f.message.content.text.startswith("Thank you"))
    await media.End(
        mpb.EndRequest(
            tenant_id=tenant.id,
            interaction_id=it.id,
            participant_id=f"a-{offer.agent_id[:12]}",
            resolution=mpb.Resolution(code="resolved", note="card blocked"),
        ),
        metadata=as_agent,
    )
    await wait(lambda i: i.get("type") == "ended")
    say("closed", "resolution: resolved (card blocked)")

    recordings = recording_rpc.RecordingServiceStub(rch)
    record = await _retry(lambda: _complete(recordings, tenant.id, it.id, md), 40)
    kinds = sorted({e.event.type for e in record.entries})
    say("recording", f"{len(record.entries)} entries kept: {', '.join(kinds[:6])}...")

    body, signature = await asyncio.wait_for(received.get(), 60)
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    notice = json.loads(body)
    say(
        "notified",
        f"{notice.get('body', '')}  (signature {'valid' if signature == expected else 'INVALID'})",
    )
    result.prompts = customer.prompts()
    result.customer_heard = customer.texts()
    result.agent_heard = agent.texts()
    result.recording_types = [e.event.type for e in record.entries]
    result.notice = notice
    result.signature_valid = signature == expected
    await customer.ws.close()
    for stream in (agent, *desks.values()):
        await stream.close()
    # Signed out again, so a person who runs `lianluo agent` next gets the offers.
    for agent_id, session in people.items():
        await acd.SetPresence(
            acd_pb2.SetPresenceRequest(
                tenant_id=tenant.id, agent_id=agent_id, presence=acd_pb2.PRESENCE_OFFLINE
            ),
            metadata=await session.metadata(),
        )
        await session.logout()
    return result


# What the demo's interaction went through. The recording follows several topics, each at its
# own pace: the end of the interaction can be stored before its routing decisions are.
RECORDED = frozenset({"interaction.ended", "routing.offer", "routing.assign"})


async def _complete(stub: Any, tenant_id: str, interaction_id: str, md: Any) -> rpb.Recording:
    """The recording once it holds everything the demo's interaction went through."""
    async with asyncio.timeout(30):
        while True:
            record: rpb.Recording = await stub.GetRecording(
                rpb.GetRecordingRequest(tenant_id=tenant_id, interaction_id=interaction_id),
                metadata=md,
            )
            if {e.event.type for e in record.entries} >= RECORDED:
                return record
            await asyncio.sleep(0.3)
