"""Business hours and the tenant's routing policy as configuration: what is valid, when a
tenant is open, and what the ACD does with a contact that arrives while it is closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from acd_builders import T0, available, decisions, profile, queue, request, routing
from google.protobuf import timestamp_pb2
from tenant_examples import tenant, violated_fields

from lianluo.common.v1 import common_pb2 as common
from lianluo.domain import hours
from lianluo.domain.routing import check_layer, layer_of, tenant_policy
from lianluo.events.v1 import routing_pb2
from lianluo.services.tenants.domain import TENANT
from lianluo.tenants.v1 import tenants_pb2 as pb

SHANGHAI = "Asia/Shanghai"
W0 = "tenant.business_hours.weekly[0]."


def office(*holidays: str) -> pb.BusinessHours:
    """Monday to Friday, 09:00 to 18:00 in Shanghai (UTC+8), with a lunch break on Fridays."""
    weekly = [pb.OpenWindow(day=d, opens="09:00", closes="18:00") for d in range(1, 5)]
    weekly += [
        pb.OpenWindow(day=5, opens="09:00", closes="12:00"),
        pb.OpenWindow(day=5, opens="13:00", closes="18:00"),
    ]
    return pb.BusinessHours(
        time_zone=SHANGHAI, weekly=weekly, holidays=[pb.Holiday(date=d) for d in holidays]
    )


def local(text: str) -> datetime:
    """A Shanghai wall-clock time as an aware UTC instant."""
    return datetime.fromisoformat(f"{text}+08:00").astimezone(UTC)


# ---------------------------------------------------------------- when open


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2030-01-07T09:00", hours.OPEN),  # Monday, at opening
        ("2030-01-07T17:59", hours.OPEN),
        ("2030-01-07T18:00", hours.CLOSED),  # closing time is already closed
        ("2030-01-07T08:59", hours.CLOSED),
        ("2030-01-11T12:30", hours.CLOSED),  # Friday lunch
        ("2030-01-11T13:00", hours.OPEN),
        ("2030-01-12T10:00", hours.CLOSED),  # Saturday
        ("2030-01-08T10:00", hours.HOLIDAY),  # a Tuesday made a holiday
    ],
)
def test_the_state_follows_the_local_week_and_holidays(at: str, expected: str) -> None:
    assert hours.state(office("2030-01-08"), local(at)) == expected


def test_the_state_is_read_in_the_tenant_zone_not_in_utc() -> None:
    # Monday 02:00 UTC is 10:00 in Shanghai: open there, though early in UTC.
    assert hours.state(office(), datetime(2030, 1, 7, 2, 0, tzinfo=UTC)) == hours.OPEN


def test_no_hours_is_always_open_and_holidays_alone_close_only_those_days() -> None:
    assert hours.state(pb.BusinessHours(), T0) == hours.OPEN
    only_holidays = pb.BusinessHours(time_zone=SHANGHAI, holidays=[pb.Holiday(date="2030-01-01")])
    assert hours.state(only_holidays, local("2030-01-01T12:00")) == hours.HOLIDAY
    assert hours.next_open(only_holidays, local("2030-01-01T12:00")) == local("2030-01-02T00:00")


@pytest.mark.parametrize(
    ("at", "opens"),
    [
        ("2030-01-07T10:00", "2030-01-07T10:00"),  # open now
        ("2030-01-07T07:00", "2030-01-07T09:00"),  # later the same day
        ("2030-01-11T12:10", "2030-01-11T13:00"),  # after lunch
        ("2030-01-11T19:00", "2030-01-14T09:00"),  # Friday evening: Monday
        ("2030-01-07T20:00", "2030-01-09T09:00"),  # Tuesday is a holiday: Wednesday
    ],
)
def test_next_open_is_the_first_opening_from_then(at: str, opens: str) -> None:
    assert hours.next_open(office("2030-01-08"), local(at)) == local(opens)


def test_a_tenant_that_never_opens_has_no_next_opening() -> None:
    closed = pb.BusinessHours(
        time_zone=SHANGHAI,
        weekly=[pb.OpenWindow(day=1, opens="09:00", closes="10:00")],
        holidays=[
            pb.Holiday(date=(datetime(2030, 1, 7) + timedelta(weeks=w)).date().isoformat())
            for w in range(60)
        ],
    )
    assert hours.next_open(closed, local("2030-01-07T11:00")) is None


# ---------------------------------------------------------------- what is valid


def with_hours(h: pb.BusinessHours) -> pb.Tenant:
    t = tenant()
    t.business_hours.CopyFrom(h)
    return t


@pytest.mark.parametrize(
    ("breaks", "field"),
    [
        (lambda h: setattr(h, "time_zone", "Mars/Olympus"), "tenant.business_hours.time_zone"),
        (lambda h: setattr(h, "time_zone", ""), "tenant.business_hours.time_zone"),
        (lambda h: setattr(h.weekly[0], "day", 8), W0 + "day"),
        (lambda h: setattr(h.weekly[0], "opens", "9am"), W0 + "opens"),
        (
            lambda h: setattr(h.weekly[0], "closes", "08:00"),
            W0 + "closes",
        ),
        (lambda h: h.holidays.add(date="2030-02-30"), "tenant.business_hours.holidays[0].date"),
    ],
)
def test_bad_business_hours_name_the_field(breaks: object, field: str) -> None:
    h = office()
    breaks(h)  # type: ignore[operator]
    assert violated_fields(TENANT, with_hours(h)) == [field]


def test_good_hours_and_policy_are_valid() -> None:
    t = with_hours(office("2030-10-01"))
    t.routing_policy.defaults.fairness = "load"
    t.routing_policy.queues["cards"].rings.add(name="wide", after_seconds=30, experts=True)
    assert violated_fields(TENANT, t) == []


@pytest.mark.parametrize(
    "breaks",
    [
        lambda p: setattr(p.defaults, "fairness", "random"),
        lambda p: setattr(p.defaults.weights, "affinity", -1.0),
        lambda p: setattr(p.queues["cards"], "reference_handle_seconds", 0),
        lambda p: p.queues["cards"].rings.add(after_seconds=0),
        lambda p: p.capacity_cost.__setitem__(1, 1.5),
        lambda p: p.routing_profiles["sales"].queues["cards"].__setattr__("delay_seconds", -1),
    ],
)
def test_a_routing_policy_the_acd_would_refuse_is_refused_when_set(breaks: object) -> None:
    t = tenant()
    breaks(t.routing_policy)  # type: ignore[operator]
    assert violated_fields(TENANT, t) == ["tenant.routing_policy"]


def test_the_tenant_policy_reads_as_the_same_layer_as_the_platform_setting() -> None:
    p = pb.RoutingPolicy()
    p.defaults.weights.affinity = 3.0
    p.defaults.aging_seconds = 0
    p.queues["cards"].rings.add(name="relaxed", after_seconds=30, lower_skills={"cards": 2})
    p.capacity_cost[2] = 0.34
    p.routing_profiles["sales"].queues["cards"].CopyFrom(
        pb.RoutingProfileStep(priority=2, delay_seconds=30)
    )
    layer = layer_of(p)
    check_layer(layer)
    resolved = tenant_policy([{"default": {"fairness": "load"}}, layer], [queue("cards")])
    cards = resolved.queue("cards")
    # The platform's fairness stays; the tenant's weight, aging off and ring are added.
    assert (cards.fairness, cards.weights.affinity, cards.aging_seconds) == ("load", 3.0, 0.0)
    assert [(r.name, r.after_seconds, dict(r.lower_skills)) for r in cards.rings] == [
        ("queue", 0, {}),
        ("relaxed", 30, {"cards": 2}),
    ]
    assert resolved.capacity_cost == {2: 0.34}
    assert resolved.held_back("sales", "cards", 10) != ""
    assert resolved.held_back("sales", "cards", 30) == ""


# ---------------------------------------------------------------- the ACD obeys


def overflows(r: object) -> list[routing_pb2.RoutingOverflow]:
    return [d.overflow for kind, d in r.changes.messages() if kind == "routing.overflow"]  # type: ignore[attr-defined]


SATURDAY = local("2030-01-12T10:00")


def test_a_contact_arriving_while_closed_takes_the_overflow_at_once_though_agents_are_free() -> (
    None
):
    cards = queue("cards", overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE))
    r = routing({"a": (profile("a"), available("a", SATURDAY))}, queues=[cards], hours=office())
    r.enqueue("i1", request(), cards, SATURDAY)
    r.dispatch(SATURDAY)
    (closed,) = overflows(r)
    assert closed.cause == routing_pb2.OVERFLOW_CAUSE_CLOSED
    assert closed.overflow.kind == pb.OVERFLOW_KIND_MESSAGE
    assert [k for k, _, _ in decisions(r)] == ["routing.overflow"]
    assert r.contacts == {}


def test_a_callback_taken_while_closed_is_due_when_the_tenant_opens() -> None:
    cards = queue("cards", overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_CALLBACK))
    r = routing({"a": (profile("a"), available("a", SATURDAY))}, queues=[cards], hours=office())
    r.enqueue("i1", request(callback_number="+8613800000000"), cards, SATURDAY)
    (callback,) = overflows(r)
    assert callback.cause == routing_pb2.OVERFLOW_CAUSE_CLOSED
    assert callback.callback_time.ToDatetime(UTC) == local("2030-01-14T09:00")
    r.changes.decisions.clear()
    r.dispatch(SATURDAY)
    assert decisions(r) == []


def test_open_hours_and_transfers_while_closed_route_as_usual() -> None:
    cards = queue("cards", overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE))
    monday = local("2030-01-07T10:00")
    r = routing({"a": (profile("a"), available("a", monday))}, queues=[cards], hours=office())
    r.enqueue("i1", request(), cards, monday)
    r.dispatch(monday)
    assert decisions(r) == [("routing.offer", "i1", "a")]
    # An agent working late hands a contact over: it is queued, not overflowed.
    late = routing({"a": (profile("a"), available("a", SATURDAY))}, queues=[cards], hours=office())
    late.enqueue("i2", request(), cards, SATURDAY, transferred_by="b")
    late.dispatch(SATURDAY)
    assert decisions(late) == [("routing.offer", "i2", "a")]


# ---------------------------------------------------------------- scheduled callbacks


def scheduled(at: datetime, agent: str = "a") -> common.RoutingRequirements:
    due = timestamp_pb2.Timestamp()
    due.FromDatetime(at)
    return request(
        callback_number="+8613800000000",
        target=common.RoutingTarget(agent_id=agent),
        not_before=due,
    )


def test_a_scheduled_callback_waits_out_of_line_then_goes_to_the_agent_who_promised_it() -> None:
    cards = queue("cards", max_wait_seconds=60)
    monday = local("2030-01-07T10:00")
    agents = {n: (profile(n), available(n, monday - timedelta(hours=1))) for n in ("a", "b")}
    r = routing(agents, queues=[cards], hours=office())
    due = monday + timedelta(hours=2)
    r.enqueue("cb", scheduled(due), cards, monday)
    r.dispatch(monday)
    # Both agents are free, and nobody is offered it before its time.
    assert decisions(r) == []
    assert r.next_deadline(monday) == due
    r.expire(due)
    r.dispatch(due)
    assert decisions(r) == [("routing.offer", "cb", "a")]


def test_a_callback_scheduled_for_closed_hours_is_due_when_the_tenant_opens() -> None:
    cards = queue("cards", max_wait_seconds=60)
    friday = local("2030-01-11T17:00")
    r = routing({"a": (profile("a"), available("a", friday))}, queues=[cards], hours=office())
    r.enqueue("cb", scheduled(local("2030-01-12T10:00")), cards, friday)
    r.dispatch(friday)
    # Saturday is closed: not an overflow, but Monday's opening.
    assert decisions(r) == []
    assert r.next_deadline(friday) == local("2030-01-14T09:00")
