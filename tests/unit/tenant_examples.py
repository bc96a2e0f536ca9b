"""Valid tenant configuration resources, and helpers to break one field and see what is named."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import Message

from lianluo.common.v1 import common_pb2 as common
from lianluo.runtime.errors import InvalidArgument
from lianluo.services.tenants.domain import Kind, validate
from lianluo.tenants.v1 import tenants_pb2 as pb


def tenant() -> pb.Tenant:
    return pb.Tenant(
        name="acme-bank",
        display_name="Acme Bank",
        plan=pb.PLAN_BUSINESS,
        expected_concurrent_sessions=100,
        channels=[common.CHANNEL_WEB, common.CHANNEL_PHONE],
    )


def agent() -> pb.Agent:
    return pb.Agent(
        name="agent.007",
        display_name="Agent Seven",
        kind=pb.AGENT_KIND_STAFF,
        skills=[common.SkillLevel(skill="cards", level=7)],
        groups=["day-shift"],
        languages=["en", "zh-CN"],
        capacity=[
            pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=3),
            pb.MediaCapacity(media=common.MEDIA_TYPE_VOICE, max_concurrent=1),
        ],
        expertise=["card_lost"],
        sales_conversion=0.2,
        attributes={"site": "shanghai"},
    )


def queue() -> pb.Queue:
    return pb.Queue(
        name="cards",
        display_name="Cards",
        required_skills=[common.SkillLevel(skill="cards", level=3)],
        priority=5,
        service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
        max_wait_seconds=120,
        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
        media=common.MEDIA_TYPE_CHAT,
        language="zh-CN",
    )


def template() -> pb.NotificationTemplate:
    return pb.NotificationTemplate(
        name="case-closed",
        channel=pb.DELIVERY_CHANNEL_WEBHOOK,
        body="Your case {{case_id}} is resolved, {{ customer_name }}.",
        locale="en",
    )


def rule() -> pb.NotificationRule:
    return pb.NotificationRule(
        name="closed-loop",
        interaction_closed=pb.InteractionClosedTrigger(resolutions=["resolved"]),
        template="case-closed",
        webhook=pb.WebhookTarget(url="https://hooks.example.test/x", signing_secret="s" * 32),
        enabled=True,
    )


def violated_fields(kind: Kind, message: Message) -> list[str]:
    """The fields named by validate(); empty when the message is valid."""
    try:
        validate(kind, message)
    except InvalidArgument as error:
        return [v.field for v in error.violations]
    return []


# A case is (id, the valid example, how to break it, the field that must be named).
Case = tuple[str, Callable[[], Message], Callable[[Message], object], str]


def cases(cases: list[Case]) -> list[object]:
    return [pytest.param(example, breaks, field, id=name) for name, example, breaks, field in cases]


def check_break(
    kind: Kind, example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    message = example()
    breaks(message)
    assert violated_fields(kind, message) == [field]
