"""What a tenant administrator is told about a bad tenant, agent, queue or flow document: every
bad field named, all at once (tenants service domain, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from google.protobuf.message import Message
from tenant_examples import (
    Case,
    agent,
    cases,
    check_break,
    queue,
    rule,
    template,
    tenant,
    violated_fields,
)

from lianluo.common.v1 import common_pb2 as common
from lianluo.runtime.errors import InvalidArgument
from lianluo.services.tenants.domain import (
    AGENT,
    FLOW,
    QUEUE,
    RULE,
    TEMPLATE,
    TENANT,
    Kind,
    validate,
)
from lianluo.tenants.v1 import tenants_pb2 as pb

EXAMPLES: list[tuple[Kind, Callable[[], Message]]] = [
    (TENANT, tenant),
    (AGENT, agent),
    (QUEUE, queue),
    (TEMPLATE, template),
    (RULE, rule),
]


@pytest.mark.parametrize(("kind", "example"), EXAMPLES, ids=lambda v: getattr(v, "name", ""))
def test_the_valid_example_passes(kind: Kind, example: Callable[[], Message]) -> None:
    assert violated_fields(kind, example()) == []


# ---------------------------------------------------------------- tenant

TENANT_CASES: list[Case] = [
    ("upper-case name", tenant, lambda t: setattr(t, "name", "Acme"), "tenant.name"),
    ("two-letter name", tenant, lambda t: setattr(t, "name", "ab"), "tenant.name"),
    ("name starting with digit", tenant, lambda t: setattr(t, "name", "1acme"), "tenant.name"),
    ("41-letter name", tenant, lambda t: setattr(t, "name", "a" * 41), "tenant.name"),
    (
        "long display name",
        tenant,
        lambda t: setattr(t, "display_name", "x" * 201),
        "tenant.display_name",
    ),
    ("no plan", tenant, lambda t: setattr(t, "plan", pb.PLAN_UNSPECIFIED), "tenant.plan"),
    (
        "zero sessions",
        tenant,
        lambda t: setattr(t, "expected_concurrent_sessions", 0),
        "tenant.expected_concurrent_sessions",
    ),
    (
        "too many sessions",
        tenant,
        lambda t: setattr(t, "expected_concurrent_sessions", 1_000_001),
        "tenant.expected_concurrent_sessions",
    ),
    ("no channels", tenant, lambda t: t.ClearField("channels"), "tenant.channels"),
    (
        "unset channel",
        tenant,
        lambda t: t.channels.append(common.CHANNEL_UNSPECIFIED),
        "tenant.channels[2]",
    ),
    (
        "channel twice",
        tenant,
        lambda t: t.channels.append(common.CHANNEL_WEB),
        "tenant.channels",
    ),
]


@pytest.mark.parametrize(("example", "breaks", "field"), cases(TENANT_CASES))
def test_a_bad_tenant_field_is_named(
    example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    check_break(TENANT, example, breaks, field)


def test_tenant_limits_are_inclusive() -> None:
    t = tenant()
    t.name = "a" * 40
    t.display_name = "x" * 200
    t.expected_concurrent_sessions = 1_000_000

    assert violated_fields(TENANT, t) == []


def test_an_empty_tenant_gets_every_missing_field_in_one_error() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate(TENANT, pb.Tenant())

    fields = [v.field for v in raised.value.violations]
    assert fields == [
        "tenant.name",
        "tenant.plan",
        "tenant.expected_concurrent_sessions",
        "tenant.channels",
    ]
    for field in fields:
        assert field in raised.value.message


# ---------------------------------------------------------------- agent

AGENT_CASES: list[Case] = [
    ("name with space", agent, lambda a: setattr(a, "name", "agent 7"), "agent.name"),
    ("empty name", agent, lambda a: setattr(a, "name", ""), "agent.name"),
    ("121-character name", agent, lambda a: setattr(a, "name", "a" * 121), "agent.name"),
    ("no kind", agent, lambda a: setattr(a, "kind", pb.AGENT_KIND_UNSPECIFIED), "agent.kind"),
    (
        "upper-case skill",
        agent,
        lambda a: a.skills.add(skill="Loans", level=3),
        "agent.skills[1].skill",
    ),
    (
        "skill twice",
        agent,
        lambda a: a.skills.add(skill="cards", level=3),
        "agent.skills[1].skill",
    ),
    ("skill level 0", agent, lambda a: setattr(a.skills[0], "level", 0), "agent.skills[0].level"),
    (
        "skill level 11",
        agent,
        lambda a: setattr(a.skills[0], "level", 11),
        "agent.skills[0].level",
    ),
    ("bad group", agent, lambda a: a.groups.append("Night Shift"), "agent.groups[1]"),
    ("bad language", agent, lambda a: a.languages.append("english"), "agent.languages[2]"),
    ("no capacity", agent, lambda a: a.ClearField("capacity"), "agent.capacity"),
    (
        "unset media",
        agent,
        lambda a: a.capacity.add(max_concurrent=1),
        "agent.capacity[2].media",
    ),
    (
        "media twice",
        agent,
        lambda a: a.capacity.add(media=common.MEDIA_TYPE_CHAT, max_concurrent=1),
        "agent.capacity[2].media",
    ),
    (
        "zero concurrency",
        agent,
        lambda a: setattr(a.capacity[0], "max_concurrent", 0),
        "agent.capacity[0].max_concurrent",
    ),
    (
        "101 concurrency",
        agent,
        lambda a: setattr(a.capacity[0], "max_concurrent", 101),
        "agent.capacity[0].max_concurrent",
    ),
    ("bad expertise", agent, lambda a: a.expertise.append("Card Lost"), "agent.expertise[1]"),
    (
        "conversion over 1",
        agent,
        lambda a: setattr(a, "sales_conversion", 1.5),
        "agent.sales_conversion",
    ),
    (
        "negative conversion",
        agent,
        lambda a: setattr(a, "sales_conversion", -0.1),
        "agent.sales_conversion",
    ),
    (
        "NaN conversion",
        agent,
        lambda a: setattr(a, "sales_conversion", math.nan),
        "agent.sales_conversion",
    ),
    (
        "51 attributes",
        agent,
        lambda a: a.attributes.update({f"k{i}": "v" for i in range(50)}),
        "agent.attributes",
    ),
    (
        "bad attribute name",
        agent,
        lambda a: a.attributes.update({"Site": "x"}),
        "agent.attributes[Site]",
    ),
    (
        "long attribute value",
        agent,
        lambda a: a.attributes.update({"site": "x" * 501}),
        "agent.attributes[site]",
    ),
]


@pytest.mark.parametrize(("example", "breaks", "field"), cases(AGENT_CASES))
def test_a_bad_agent_field_is_named(
    example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    check_break(AGENT, example, breaks, field)


def test_an_agent_with_many_problems_hears_of_all_of_them() -> None:
    a = agent()
    a.name = "two words"
    a.kind = pb.AGENT_KIND_UNSPECIFIED
    a.skills[0].level = 0
    a.ClearField("capacity")

    assert violated_fields(AGENT, a) == [
        "agent.name",
        "agent.kind",
        "agent.skills[0].level",
        "agent.capacity",
    ]


# ---------------------------------------------------------------- queue


def _overflow_to(target: str) -> Callable[[Message], object]:
    def breaks(q: Message) -> None:
        assert isinstance(q, pb.Queue)
        q.overflow.CopyFrom(pb.Overflow(kind=pb.OVERFLOW_KIND_QUEUE, target_queue=target))

    return breaks


QUEUE_CASES: list[Case] = [
    ("bad name", queue, lambda q: setattr(q, "name", "Cards!"), "queue.name"),
    (
        "required skill level",
        queue,
        lambda q: setattr(q.required_skills[0], "level", 0),
        "queue.required_skills[0].level",
    ),
    ("priority 0", queue, lambda q: setattr(q, "priority", 0), "queue.priority"),
    ("priority 11", queue, lambda q: setattr(q, "priority", 11), "queue.priority"),
    (
        "threshold 0",
        queue,
        lambda q: setattr(q.service_level, "threshold_seconds", 0),
        "queue.service_level.threshold_seconds",
    ),
    (
        "threshold over an hour",
        queue,
        lambda q: setattr(q.service_level, "threshold_seconds", 3601),
        "queue.service_level.threshold_seconds",
    ),
    (
        "target 101 percent",
        queue,
        lambda q: setattr(q.service_level, "target_percent", 101),
        "queue.service_level.target_percent",
    ),
    ("no max wait", queue, lambda q: setattr(q, "max_wait_seconds", 0), "queue.max_wait_seconds"),
    (
        "max wait over a day",
        queue,
        lambda q: setattr(q, "max_wait_seconds", 86_401),
        "queue.max_wait_seconds",
    ),
    ("no overflow", queue, lambda q: q.ClearField("overflow"), "queue.overflow.kind"),
    ("overflow to nothing", queue, _overflow_to(""), "queue.overflow.target_queue"),
    ("overflow to itself", queue, _overflow_to("cards"), "queue.overflow.target_queue"),
    ("no media", queue, lambda q: setattr(q, "media", 0), "queue.media"),
    ("bad language", queue, lambda q: setattr(q, "language", "zh_CN"), "queue.language"),
]


@pytest.mark.parametrize(("example", "breaks", "field"), cases(QUEUE_CASES))
def test_a_bad_queue_field_is_named(
    example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    check_break(QUEUE, example, breaks, field)


def test_a_queue_may_overflow_to_another_queue_and_needs_no_language() -> None:
    q = queue()
    _overflow_to("cards-overflow")(q)
    q.language = ""

    assert violated_fields(QUEUE, q) == []


# ---------------------------------------------------------------- flow document


def test_a_flow_document_reports_its_name_and_node_problems_under_flow() -> None:
    f = pb.Flow(
        name="Main Flow",
        entry_node="menu",
        nodes=[
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(prompt="Press 1", choices=[pb.MenuChoice(digit="x", next="bye")]),
            ),
            pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye")),
        ],
    )

    assert violated_fields(FLOW, f) == ["flow.name", "flow.nodes[0].menu.choices[0].digit"]


NEWLINE_CASES = [
    (TENANT, tenant, lambda t: setattr(t, "name", "acme-bank\n"), "tenant.name"),
    (QUEUE, queue, lambda q: setattr(q, "name", "cards\n"), "queue.name"),
    (AGENT, agent, lambda a: setattr(a, "name", "agent.007\n"), "agent.name"),
    (
        RULE,
        rule,
        lambda r: r.email.CopyFrom(pb.EmailTarget(from_address="ops@example.test\n")),
        "rule.email.from_address",
    ),
]


@pytest.mark.parametrize(
    ("kind", "example", "breaks", "field"),
    NEWLINE_CASES,
    ids=["tenant.name", "queue.name", "agent.name", "rule.email.from_address"],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(
    kind: Kind, example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    check_break(kind, example, breaks, field)
