"""Who gets a contact and when: the ACD's filters, queue order and offer life cycle (no I/O)."""

from __future__ import annotations

import re
from datetime import UTC, timedelta

import pytest
from acd_builders import (
    CHAT,
    T0,
    VOICE,
    available,
    decisions,
    profile,
    queue,
    request,
    routing,
)

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import routing_pb2
from lianluo.services.acd.dispatch import queue_order
from lianluo.services.acd.domain import (
    LONGEST_IDLE,
    AgentProfile,
    AgentStatus,
    AgentView,
    Needs,
    needs_for,
    rank_agents,
    speaks,
)
from lianluo.services.acd.settings import AcdSettings
from lianluo.tenants.v1 import tenants_pb2 as pb

NEEDS = Needs(queue="cards", media=CHAT, skills={"cards": 3}, language="en", priority=5)


def view(p: AgentProfile, s: AgentStatus, in_use: dict[int, int] | None = None) -> AgentView:
    return AgentView(p, s, in_use or {})


# ---------------------------------------------------------------- filters and ranking


def test_only_available_skilled_speakers_with_free_capacity_are_candidates() -> None:
    agents = [
        view(profile("ok"), available("ok", T0)),
        view(profile("away"), AgentStatus("away", acd.PRESENCE_AWAY, last_idle_time=T0)),
        view(profile("full"), available("full", T0), {CHAT: 2}),
        view(profile("novice", skills={"cards": 2}), available("novice", T0)),
        view(profile("unskilled", skills={}), available("unskilled", T0)),
        view(profile("french", languages=("fr",)), available("french", T0)),
        view(profile("declined"), available("declined", T0)),
    ]
    ranking = rank_agents(NEEDS, agents, T0 + timedelta(seconds=5), frozenset({"declined"}))
    assert [c.agent_id for c in ranking.candidates] == ["ok"]
    reasons = {e.agent_id: (e.filter, e.detail) for e in ranking.excluded}
    assert reasons == {
        "away": (acd.HARD_FILTER_PRESENCE, "presence away"),
        "full": (acd.HARD_FILTER_CAPACITY, "chat 2 of 2 in use"),
        "novice": (acd.HARD_FILTER_SKILL, "skill cards level 2 below 3"),
        "unskilled": (acd.HARD_FILTER_SKILL, "no skill cards"),
        "french": (acd.HARD_FILTER_LANGUAGE, "does not speak en"),
        "declined": (acd.HARD_FILTER_DECLINED, "declined or let the offer time out"),
    }


def test_longest_idle_agent_ranks_first_and_the_feature_explains_it() -> None:
    agents = [
        view(profile("recent"), available("recent", T0 + timedelta(seconds=50))),
        view(profile("longest"), available("longest", T0)),
        view(profile("middle"), available("middle", T0 + timedelta(seconds=40))),
    ]
    ranking = rank_agents(NEEDS, agents, T0 + timedelta(seconds=60))
    assert [(c.agent_id, c.rank) for c in ranking.candidates] == [
        ("longest", 1),
        ("middle", 2),
        ("recent", 3),
    ]
    best, _, last = ranking.candidates
    idle = {c.agent_id: next(f for f in c.features if f.name == LONGEST_IDLE) for c in (best, last)}
    assert idle["longest"].value == pytest.approx(1.0)
    assert idle["recent"].value == pytest.approx(10 / 60)
    # Everything else is equal, so the score differs by the idle contribution alone.
    assert best.score - last.score == pytest.approx(idle["longest"].weight * (1 - 10 / 60))
    assert best.score == pytest.approx(sum(f.contribution for f in best.features))


def test_an_agent_who_just_took_a_contact_is_not_the_longest_idle() -> None:
    busy_since = available("a", T0)
    busy_since.last_assign_time = T0 + timedelta(seconds=30)
    agents = [view(profile("a"), busy_since, {CHAT: 1}), view(profile("b"), available("b", T0))]
    ranking = rank_agents(NEEDS, agents, T0 + timedelta(seconds=40))
    assert [c.agent_id for c in ranking.candidates] == ["b", "a"]


def test_capacity_is_per_media_and_a_session_limit_lowers_it() -> None:
    status = available("a", T0)
    status.limits = {CHAT: 1}
    a = view(profile("a"), status, {CHAT: 1})
    voice = Needs(queue="calls", media=VOICE, skills={}, language="", priority=5)
    assert rank_agents(NEEDS, [a], T0).best() is None
    best = rank_agents(voice, [a], T0).best()
    assert best is not None
    assert best.agent_id == "a"


def test_queue_and_request_requirements_merge_at_the_higher_level() -> None:
    request = common.RoutingRequirements(
        queue="cards",
        required_skills=[
            common.SkillLevel(skill="cards", level=6),
            common.SkillLevel(skill="vip", level=2),
        ],
        language="zh-CN",
    )
    needs = needs_for(queue(language="en"), request)
    assert needs.skills == {"cards": 6, "vip": 2}
    assert needs.language == "zh-CN"
    assert needs.priority == 5
    assert needs.media == CHAT
    assert needs_for(queue(), common.RoutingRequirements(priority=9)).priority == 9


@pytest.mark.parametrize(
    ("spoken", "wanted", "ok"),
    [
        (("en",), "en", True),
        (("zh",), "zh-CN", True),
        (("en-GB",), "en", True),
        (("fr",), "en", False),
    ],
)
def test_language_tags_match_exactly_or_by_narrowing(
    spoken: tuple[str, ...], wanted: str, ok: bool
) -> None:
    assert speaks(spoken, wanted) is ok


# ---------------------------------------------------------------- the tenant's routing


def test_waiting_contacts_go_by_priority_then_first_come() -> None:
    # Signed out, but able to take them: they wait rather than overflow.
    r = routing({"a": (profile("a"), AgentStatus("a"))})
    r.enqueue("early", request(), queue(), T0)
    r.enqueue("late-urgent", request(priority=9), queue(), T0 + timedelta(seconds=2))
    r.enqueue("later", request(), queue(), T0 + timedelta(seconds=1))
    order = [c.interaction_id for c in queue_order(r.contacts.values())]
    assert order == ["late-urgent", "early", "later"]


def test_the_longest_idle_agent_is_offered_and_accepting_assigns() -> None:
    r = routing(
        {
            "a": (profile("a"), available("a", T0 + timedelta(seconds=5))),
            "b": (profile("b"), available("b", T0)),
        }
    )
    now = T0 + timedelta(seconds=10)
    r.enqueue("i1", request(), queue(), now)
    r.dispatch(now)
    assert decisions(r) == [("routing.offer", "i1", "b")]
    offer = r.changes.offers["offer-1"].offer
    assert offer.expire_time.ToDatetime(UTC) == now + timedelta(seconds=20)
    assert r.answer("offer-1", "b", True, "", now)
    assert decisions(r) == [("routing.assign", "i1", "b")]
    assert "i1" not in r.contacts
    assert [a.agent_id for a in r.assignments] == ["b"]


def test_a_decline_offers_the_next_agent_never_the_decliner_again() -> None:
    r = routing(
        {
            "a": (profile("a"), available("a", T0 + timedelta(seconds=5))),
            "b": (profile("b"), available("b", T0)),
        }
    )
    now = T0 + timedelta(seconds=10)
    r.enqueue("i1", request(), queue(), now)
    r.dispatch(now)
    decisions(r)
    assert r.answer("offer-1", "b", False, "on a break", now)
    r.dispatch(now)
    assert decisions(r) == [("routing.offer_declined", "i1", "b"), ("routing.offer", "i1", "a")]
    assert r.answer("offer-2", "a", False, "", now)
    r.dispatch(now)
    assert decisions(r) == [("routing.offer_declined", "i1", "a")]
    assert r.contacts["i1"].declined == {"a", "b"}


def test_an_expired_offer_times_out_and_goes_to_the_next_agent() -> None:
    r = routing(
        {
            "a": (profile("a"), available("a", T0 + timedelta(seconds=5))),
            "b": (profile("b"), available("b", T0)),
        },
        timeout=3,
    )
    now = T0 + timedelta(seconds=10)
    r.enqueue("i1", request(), queue(), now)
    r.dispatch(now)
    decisions(r)
    r.expire(now + timedelta(seconds=2))
    assert decisions(r) == []
    assert r.next_deadline() == now + timedelta(seconds=3)
    later = now + timedelta(seconds=3)
    r.expire(later)
    r.dispatch(later)
    assert decisions(r) == [("routing.offer_timed_out", "i1", "b"), ("routing.offer", "i1", "a")]
    assert not r.answer("offer-1", "b", True, "", later)


def test_max_wait_overflows_as_the_queue_says_and_withdraws_the_offer() -> None:
    r = routing({"a": (profile("a"), available("a", T0))}, timeout=100)
    r.enqueue("i1", request(), queue(overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE)), T0)
    r.dispatch(T0)
    decisions(r)
    r.expire(T0 + timedelta(seconds=60))
    (withdrawn_kind, withdrawn), (kind, decision) = r.changes.messages()
    # The agent's desk is told first that the offer is gone.
    assert withdrawn_kind == "routing.offer_withdrawn"
    assert (withdrawn.offer_withdrawn.offer_id, withdrawn.offer_withdrawn.agent_id) == (
        "offer-1",
        "a",
    )
    assert kind == "routing.overflow"
    assert decision.overflow.cause == routing_pb2.OVERFLOW_CAUSE_MAX_WAIT
    assert decision.overflow.overflow.kind == pb.OVERFLOW_KIND_MESSAGE
    assert r.changes.offers["offer-1"].offer.state == acd.OFFER_STATE_WITHDRAWN
    assert r.contacts == {}
    assert r.offers == {}


def test_an_agent_at_capacity_gets_no_second_contact_until_one_ends() -> None:
    one_chat = profile("a", capacity={CHAT: 1})
    r = routing({"a": (one_chat, available("a", T0))})
    r.enqueue("i1", request(), queue(), T0)
    r.enqueue("i2", request(), queue(), T0 + timedelta(seconds=1))
    r.dispatch(T0)
    # The pending offer reserves the seat, so i2 waits even before i1 is accepted.
    assert decisions(r) == [("routing.offer", "i1", "a")]
    r.answer("offer-1", "a", True, "", T0)
    r.dispatch(T0)
    assert decisions(r) == [("routing.assign", "i1", "a")]
    later = T0 + timedelta(seconds=5)
    r.end_interaction("i1", later)
    r.dispatch(later)
    assert decisions(r) == [("routing.offer", "i2", "a")]
    assert [kind for kind, _ in r.changes.agent_events] == ["agent.wrap_up_done"]
    assert r.statuses["a"].last_idle_time == later


def test_an_abandoned_contact_leaves_the_queue_and_its_offer_is_withdrawn() -> None:
    r = routing({"a": (profile("a"), available("a", T0))})
    r.enqueue("i1", request(), queue(), T0)
    r.dispatch(T0)
    r.end_interaction("i1", T0)
    assert r.contacts == {}
    assert r.changes.offers["offer-1"].offer.state == acd.OFFER_STATE_WITHDRAWN
    assert r.next_deadline() is None


def test_becoming_available_starts_the_idle_clock_and_a_request_twice_queues_once() -> None:
    r = routing({"a": (profile("a"), AgentStatus("a"))})
    r.enqueue("i1", request(), queue(), T0)
    assert not r.enqueue("i1", request(), queue(), T0)
    r.dispatch(T0)
    assert decisions(r) == []
    later = T0 + timedelta(seconds=3)
    r.set_presence("a", acd.PRESENCE_AVAILABLE, "", {}, later)
    r.dispatch(later)
    assert decisions(r) == [("routing.offer", "i1", "a")]
    assert r.statuses["a"].last_idle_time == later


def test_a_request_for_an_unknown_queue_overflows_at_once() -> None:
    r = routing({})
    r.enqueue("i1", common.RoutingRequirements(queue="nope"), None, T0)
    (kind, decision), *_ = r.changes.messages()
    assert kind == "routing.overflow"
    assert decision.overflow.cause == routing_pb2.OVERFLOW_CAUSE_NO_ELIGIBLE_AGENT
    assert r.contacts == {}


def test_the_pool_knows_who_has_room_as_most_agents_fill_up_and_free_again() -> None:
    agents = {f"a{i:03d}": (profile(f"a{i:03d}"), available(f"a{i:03d}", T0)) for i in range(200)}
    r = routing(agents)
    busy = sorted(agents)[:190]
    for aid in busy:
        r.pool.take(aid, CHAT, 2)
    assert r.pool.free[CHAT] == set(sorted(agents)[190:])
    assert [v.agent_id for v in r.pool.free_views(CHAT)] == sorted(agents)[190:]
    for aid in busy[:5]:
        r.pool.take(aid, CHAT, -1)
    assert r.pool.free[CHAT] == set(busy[:5]) | set(sorted(agents)[190:])
    assert all(r.pool.has_room(aid, VOICE) for aid in agents)


# ---------------------------------------------------------------- several events, one save


def test_changes_of_several_events_are_net_of_what_a_later_event_undid() -> None:
    """The consumer applies a run of events to one state and saves its changes once: what
    the run assigned and then released is neither inserted nor deleted, and a contact that
    left the line and was queued again (a transfer) is saved, not deleted."""
    r = routing({"a": (profile("a"), available("a", T0)), "b": (profile("b"), available("b", T0))})
    r.enqueue("i1", request(), queue(), T0)
    r.dispatch(T0)
    (offer,) = list(r.offers.values())
    agent = offer.offer.agent_id
    assert r.answer(offer.offer.id, agent, True, "", T0)
    r.dispatch(T0)
    assert [a.interaction_id for a in r.changes.assigned] == ["i1"]
    assert "i1" in r.changes.removed_contacts

    # The agent hands it over: the contact is queued again, never offered back to them.
    assert r.enqueue("i1", request(), queue(), T0, transferred_by=agent)
    r.dispatch(T0)
    assert "i1" in r.changes.contacts
    assert "i1" not in r.changes.removed_contacts, "a saved run would delete the new contact"

    r.end_interaction("i1", T0)
    assert r.changes.assigned == [], "assigned and released in the run: nothing to store"
    assert r.changes.released == [], "never stored: nothing to delete"


# ---------------------------------------------------------------- the routing policy setting


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        ({"default": {"weights": {"fairness": -1}}}, "weights must be finite and not negative"),
        ({"default": {"weights": {"fairness": "inf"}}}, "weights must be finite and not negative"),
        ({"default": {"weights": {"speed": 1}}}, "unknown weights ['speed']"),
        ({"default": {"reference_handle_seconds": 0}}, "reference_handle_seconds must be above 0"),
    ],
)
def test_a_routing_policy_that_would_rank_wrongly_or_crash_stops_the_start(
    layer: dict[str, object], named: str
) -> None:
    """A zero reference handle time divided by zero in every ranking of the tenant, and a
    negative weight ranked the worse match first; both are refused with the setting's words."""
    with pytest.raises(ValueError, match=re.escape(named)):
        AcdSettings(
            database_url="postgresql://127.0.0.1/x",
            kafka_bootstrap_servers="127.0.0.1:9092",
            admin_key="a-real-admin-key-of-enough-length",
            routing_defaults=layer,
        )
