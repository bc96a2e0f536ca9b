"""Builders of agents, queues and routing states for the ACD's unit tests (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import DEFAULT_TENANT_POLICY, TenantPolicy
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.domain import AgentProfile, AgentStatus
from lianluo.tenants.v1 import tenants_pb2 as pb

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
TENANT = "00000000-0000-0000-0000-000000000001"
CHAT, VOICE = common.MEDIA_TYPE_CHAT, common.MEDIA_TYPE_VOICE


def profile(
    agent_id: str,
    skills: dict[str, int] | None = None,
    languages: tuple[str, ...] = ("en",),
    capacity: dict[int, int] | None = None,
) -> AgentProfile:
    return AgentProfile(
        agent_id=agent_id,
        kind=pb.AGENT_KIND_STAFF,
        skills={"cards": 5} if skills is None else skills,
        languages=languages,
        capacity={CHAT: 2, VOICE: 1} if capacity is None else capacity,
    )


def available(agent_id: str, idle_since: datetime) -> AgentStatus:
    return AgentStatus(
        agent_id, acd.PRESENCE_AVAILABLE, change_time=idle_since, last_idle_time=idle_since
    )


def queue(name: str = "cards", **overrides: object) -> pb.Queue:
    q = pb.Queue(
        name=name,
        required_skills=[common.SkillLevel(skill="cards", level=3)],
        priority=5,
        max_wait_seconds=60,
        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_CALLBACK),
        media=CHAT,
    )
    for key, value in overrides.items():
        if isinstance(value, Message):
            getattr(q, key).CopyFrom(value)
        elif isinstance(value, list):
            q.ClearField(key)  # type: ignore[arg-type]
            getattr(q, key).extend(value)
        else:
            setattr(q, key, value)
    return q


def routing(
    agents: dict[str, tuple[AgentProfile, AgentStatus]],
    timeout: float = 20,
    queues: list[pb.Queue] | None = None,
    policy: TenantPolicy = DEFAULT_TENANT_POLICY,
    hours: pb.BusinessHours | None = None,
) -> TenantRouting:
    ids = count(1)
    return TenantRouting(
        TENANT,
        profiles={k: p for k, (p, _) in agents.items()},
        statuses={k: s for k, (_, s) in agents.items()},
        contacts={},
        offers={},
        assignments=[],
        offer_timeout=timedelta(seconds=timeout),
        policy=policy,
        queues={q.name: q for q in ([queue()] if queues is None else queues)},
        business_hours=hours,
        new_id=lambda: f"offer-{next(ids)}",
    )


def decisions(r: TenantRouting) -> list[tuple[str, str, str]]:
    """(type, interaction, agent) of each decision, then forget them."""
    out = []
    for kind, d in r.changes.messages():
        case = d.WhichOneof("decision")
        agent = {
            "offer": lambda d=d: d.offer.offer.agent_id,
            "assign": lambda d=d: d.assign.agent_id,
            "offer_declined": lambda d=d: d.offer_declined.agent_id,
            "offer_timed_out": lambda d=d: d.offer_timed_out.agent_id,
        }.get(case or "", lambda: "")()
        out.append((kind, d.interaction_id, agent))
    r.changes.decisions.clear()
    return out


def request(priority: int = 0, **fields: object) -> common.RoutingRequirements:
    fields.setdefault("queue", "cards")
    return common.RoutingRequirements(priority=priority, **fields)  # type: ignore[arg-type]
