"""Valid example resources for tests, and a client that acts as admin or as one tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tenant(name: str | None = None) -> pb.Tenant:
    return pb.Tenant(
        name=name or unique("acme"),
        display_name="Acme",
        plan=pb.PLAN_BUSINESS,
        expected_concurrent_sessions=100,
        channels=[common.CHANNEL_WEB, common.CHANNEL_PHONE],
    )


def agent(name: str = "li.wei") -> pb.Agent:
    return pb.Agent(
        name=name,
        display_name="Li Wei",
        kind=pb.AGENT_KIND_STAFF,
        skills=[common.SkillLevel(skill="cards", level=7)],
        languages=["en", "zh-CN"],
        capacity=[
            pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=3),
            pb.MediaCapacity(media=common.MEDIA_TYPE_VOICE, max_concurrent=1),
        ],
        expertise=["card_lost"],
        sales_conversion=0.2,
        attributes={"site": "shanghai"},
    )


def user(
    name: str = "admin@acme.test", role: int = pb.ROLE_TENANT_ADMIN, **fields: object
) -> pb.User:
    """A person of a tenant: an admin by default; an agent names `agent`, a supervisor
    `queues`."""
    return pb.User(name=name, display_name=name.split("@")[0], role=role, **fields)  # type: ignore[arg-type]


def web_channel(name: str = "website", queue_name: str = "cards") -> pb.Channel:
    """A web chat widget for pages of one origin, whose contacts wait in `queue_name`."""
    return pb.Channel(
        name=name,
        queue=queue_name,
        web=pb.WebChat(allowed_origins=["https://shop.example.test"], title="Help"),
    )


def queue(name: str = "cards", **overrides: object) -> pb.Queue:
    q = pb.Queue(
        name=name,
        display_name="Cards",
        required_skills=[common.SkillLevel(skill="cards", level=3)],
        priority=5,
        service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
        max_wait_seconds=120,
        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
        media=common.MEDIA_TYPE_CHAT,
    )
    for key, value in overrides.items():
        if isinstance(value, Message):
            getattr(q, key).CopyFrom(value)
        else:
            setattr(q, key, value)
    return q


def flow(name: str = "main", queue_name: str = "cards") -> pb.Flow:
    return pb.Flow(
        name=name,
        entry_node="welcome",
        nodes=[
            pb.FlowNode(id="welcome", prompt=pb.PromptNode(text="Hello", next="menu")),
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(
                    prompt="1 for cards",
                    choices=[pb.MenuChoice(digit="1", keywords=["card"], next="route")],
                    no_match_next="bye",
                ),
            ),
            pb.FlowNode(id="route", route_to_queue=pb.RouteToQueueNode(queue=queue_name)),
            pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye")),
        ],
    )


def template(name: str = "case-closed") -> pb.NotificationTemplate:
    return pb.NotificationTemplate(
        name=name,
        channel=pb.DELIVERY_CHANNEL_WEBHOOK,
        body="Your case {{case_id}} is resolved.",
        locale="en",
    )


def rule(name: str = "closed-loop", template_name: str = "case-closed") -> pb.NotificationRule:
    return pb.NotificationRule(
        name=name,
        interaction_closed=pb.InteractionClosedTrigger(resolutions=["resolved"]),
        template=template_name,
        webhook=pb.WebhookTarget(url="https://hooks.example.test/x", signing_secret="s" * 32),
        enabled=True,
    )


@dataclass
class Client:
    """Stubs of every tenants API, calling with one key."""

    channel: grpc.aio.Channel
    key: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    @property
    def tenants(self) -> rpc.TenantServiceStub:
        return rpc.TenantServiceStub(self.channel)

    @property
    def keys(self) -> rpc.ApiKeyServiceStub:
        return rpc.ApiKeyServiceStub(self.channel)

    @property
    def audit(self) -> rpc.AuditServiceStub:
        return rpc.AuditServiceStub(self.channel)

    @property
    def channels(self) -> rpc.ChannelServiceStub:
        return rpc.ChannelServiceStub(self.channel)

    @property
    def users(self) -> rpc.UserServiceStub:
        return rpc.UserServiceStub(self.channel)

    @property
    def auth(self) -> rpc.AuthServiceStub:
        return rpc.AuthServiceStub(self.channel)

    @property
    def agents(self) -> rpc.AgentServiceStub:
        return rpc.AgentServiceStub(self.channel)

    @property
    def queues(self) -> rpc.QueueServiceStub:
        return rpc.QueueServiceStub(self.channel)

    @property
    def flows(self) -> rpc.FlowServiceStub:
        return rpc.FlowServiceStub(self.channel)

    @property
    def notifications(self) -> rpc.NotificationConfigServiceStub:
        return rpc.NotificationConfigServiceStub(self.channel)


async def onboard(admin: Client) -> tuple[pb.Tenant, Client]:
    """A new tenant and a client holding one of its keys."""
    t = await admin.tenants.CreateTenant(pb.CreateTenantRequest(tenant=tenant()), metadata=admin.md)
    issued = await admin.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="t"),
        metadata=admin.md,
    )
    return t, Client(admin.channel, issued.secret)
