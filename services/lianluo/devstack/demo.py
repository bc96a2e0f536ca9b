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

import grpc
from aiohttp import web

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, StreamClient, customer_session
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

DEMO_TENANT = "demo-bank"
# A fresh signing secret each run: the demo checks the notice it receives was signed with it.
WEBHOOK_SECRET = secrets.token_hex(16)
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
    channel: grpc.aio.Channel, admin_key: str, webhook_url: str
) -> tuple[pb.Tenant, str]:
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
    return tenant, key.secret


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
            tenant, key = await onboard(tch, admin_key, f"http://127.0.0.1:{port}/notices")
            return await chat(tenant, key, tch, mch, ach, rch, received)
    finally:
        await runner.cleanup()


async def chat(
    tenant: pb.Tenant,
    key: str,
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
    # The customer's app gets a session token for them from its backend; the key stays there.
    customer_token = await customer_session(tch, key, tenant.id, "cust-8812", common.CHANNEL_WEB)
    as_customer = (("authorization", f"Bearer {customer_token}"),)
    media = media_rpc.MediaServiceStub(mch)
    started = await _retry(
        lambda: media.StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=tenant.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                flow="card-services",
                customer=mpb.Customer(
                    id="cust-8812",
                    display_name="Mei Chen",
                    address="mei@example.test",
                    attributes={"value": "high", "segment": "gold"},
                ),
            ),
            metadata=as_customer,
        )
    )
    it = started.interaction
    result = DemoResult(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        tenant_key=key,
        password=PASSWORD,
        interaction_id=it.id,
    )
    say("contact", f"web chat from Mei Chen, interaction {it.id[:8]}")

    def show(frame: mpb.ServerFrame) -> None:
        if frame.WhichOneof("frame") == "prompt":
            say(
                "ivr",
                frame.prompt.text
                + "".join(f"  [{c.digit}] {c.label}" for c in frame.prompt.choices),
            )
        elif (
            frame.WhichOneof("frame") == "message"
            and frame.message.sender_role != R.PARTICIPANT_ROLE_BOT
        ):
            who = (
                "customer" if frame.message.sender_role == R.PARTICIPANT_ROLE_CUSTOMER else "agent"
            )
            say(who, frame.message.content.text)

    customer = await StreamClient.connect(
        mch,
        customer_token,
        mpb.Join(
            tenant_id=tenant.id,
            interaction_id=it.id,
            role=R.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="cust-8812",
        ),
        on_frame=show,
    )
    await customer.wait_for(lambda f: f.prompt.expects_answer, 30)
    customer.send_text("my card was stolen", "m1")
    await customer.wait_for(lambda f: "four digits" in f.prompt.text, 30)
    customer.send_text("4417", "m2")
    await customer.wait_for(lambda f: f.state_changed.to_state == mpb.INTERACTION_STATE_QUEUED, 30)
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
    await customer.wait_for(
        lambda f: f.state_changed.to_state == mpb.INTERACTION_STATE_CONNECTED, 30
    )
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
    await customer.wait_for(lambda f: f.message.sender_role == R.PARTICIPANT_ROLE_AGENT)
    customer.send_text("Thank you, that was quick!", "m3")
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
    await customer.wait_for(lambda f: f.WhichOneof("frame") == "ended")
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
    result.prompts = [f.prompt.text for f in customer.frames if f.WhichOneof("frame") == "prompt"]
    result.customer_heard = customer.texts()
    result.agent_heard = agent.texts()
    result.recording_types = [e.event.type for e in record.entries]
    result.notice = notice
    result.signature_valid = signature == expected
    for stream in (customer, agent, *desks.values()):
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


async def _complete(stub: Any, tenant_id: str, interaction_id: str, md: Any) -> rpb.Recording:
    """The recording once it holds the end of the interaction (it follows the events)."""
    async with asyncio.timeout(30):
        while True:
            record: rpb.Recording = await stub.GetRecording(
                rpb.GetRecordingRequest(tenant_id=tenant_id, interaction_id=interaction_id),
                metadata=md,
            )
            if any(e.event.type == "interaction.ended" for e in record.entries):
                return record
            await asyncio.sleep(0.3)
