"""The demo `make run` plays: a tenant configured end to end through the real gRPC API."""

from __future__ import annotations

import grpc

from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

DEMO_TENANT = "demo-bank"


def _say(step: str, detail: str) -> None:
    print(f"  [{step}] {detail}")


def demo_flow() -> pb.Flow:
    """Card services: a menu by digit or words, collecting the card's last four digits."""
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
                    prompt="Lost card, or a question about a payment?",
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
                    prompt="The last four digits of your card, please.",
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


async def play_demo(address: str, admin_key: str) -> None:
    print("\nDemo: onboarding a tenant through the tenants API")
    admin = (("authorization", f"Bearer {admin_key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        tenants = rpc.TenantServiceStub(channel)
        tenant = await tenants.CreateTenant(
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
        _say("tenant", f"{tenant.display_name} ({tenant.name}), id {tenant.id}")
        key = await rpc.ApiKeyServiceStub(channel).CreateApiKey(
            pb.CreateApiKeyRequest(
                tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="demo"
            ),
            metadata=admin,
        )
        _say("api key", f"{key.secret[:12]}... (shown once; only its hash is stored)")
        as_tenant = (("authorization", f"Bearer {key.secret}"),)
        queues = rpc.QueueServiceStub(channel)
        existing = await queues.ListQueues(
            pb.ListQueuesRequest(tenant_id=tenant.id), metadata=as_tenant
        )
        if not existing.queues:
            await _configure(channel, tenant.id, as_tenant)
        flows = await rpc.FlowServiceStub(channel).ListFlows(
            pb.ListFlowsRequest(tenant_id=tenant.id), metadata=as_tenant
        )
        agents = await rpc.AgentServiceStub(channel).ListAgents(
            pb.ListAgentsRequest(tenant_id=tenant.id), metadata=as_tenant
        )
        for agent in agents.agents:
            skills = ", ".join(f"{s.skill}:{s.level}" for s in agent.skills)
            _say("agent", f"{agent.display_name} ({pb.AgentKind.Name(agent.kind)}) {skills}")
        for flow in flows.flows:
            _say("ivr flow", f"{flow.name} v{flow.version}, {len(flow.nodes)} nodes")
        try:
            await queues.CreateQueue(
                pb.CreateQueueRequest(
                    tenant_id=tenant.id, queue=pb.Queue(name="Bad Name", priority=11)
                ),
                metadata=as_tenant,
            )
        except grpc.aio.AioRpcError as error:
            _say("bad input", f"{error.code().name}: {error.details()}")
        print("  Every change above was published on the topic cell-local.tenant.config.")


async def _configure(
    channel: grpc.aio.Channel, tenant_id: str, md: tuple[tuple[str, str], ...]
) -> None:
    queue = pb.Queue(
        name="cards",
        display_name="Card services",
        required_skills=[common.SkillLevel(skill="cards", level=3)],
        priority=5,
        service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
        max_wait_seconds=120,
        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
        media=common.MEDIA_TYPE_CHAT,
    )
    await rpc.QueueServiceStub(channel).CreateQueue(
        pb.CreateQueueRequest(tenant_id=tenant_id, queue=queue), metadata=md
    )
    _say("queue", "cards: skill cards>=3, 80% within 20 s, overflow to messages after 120 s")
    agents = rpc.AgentServiceStub(channel)
    for name, display, level, kind in [
        ("li.wei", "Li Wei", 8, pb.AGENT_KIND_STAFF),
        ("ana.silva", "Ana Silva", 5, pb.AGENT_KIND_STAFF),
        ("fraud.expert", "Fraud desk", 10, pb.AGENT_KIND_EXPERT),
    ]:
        agent = pb.Agent(
            name=name,
            display_name=display,
            kind=kind,
            skills=[common.SkillLevel(skill="cards", level=level)],
            languages=["en", "zh-CN"],
            capacity=[pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=3)],
        )
        await agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=tenant_id, agent=agent), metadata=md
        )
    await rpc.FlowServiceStub(channel).PutFlow(
        pb.PutFlowRequest(tenant_id=tenant_id, flow=demo_flow()), metadata=md
    )
