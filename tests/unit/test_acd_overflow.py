"""Universal service: overflow to a queue, to experts and as a callback, transfers to a named
agent or an expert, and routing profiles' priorities and delays across queues (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, timedelta

from acd_builders import CHAT, T0, VOICE, available, decisions, profile, queue, request, routing

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import tenant_policy
from lianluo.events.v1 import routing_pb2
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.state import ANSWERED, ENDED, ENTERED, OVERFLOWED
from lianluo.tenants.v1 import tenants_pb2 as pb

MESSAGE, CALLBACK = pb.OVERFLOW_KIND_MESSAGE, pb.OVERFLOW_KIND_CALLBACK
TO_QUEUE, EXPERTS = pb.OVERFLOW_KIND_QUEUE, pb.OVERFLOW_KIND_EXPERTS


def overflow_to(kind: int, target: str = "") -> pb.Overflow:
    return pb.Overflow(kind=kind, target_queue=target)  # type: ignore[arg-type]


def expert(agent_id: str, *expertise: str) -> object:
    return replace(
        profile(agent_id, skills={}), kind=pb.AGENT_KIND_EXPERT, expertise=frozenset(expertise)
    )


def overflows(r: TenantRouting) -> list[routing_pb2.RoutingOverflow]:
    return [d.overflow for kind, d in r.changes.messages() if kind == "routing.overflow"]


def log(r: TenantRouting) -> list[tuple[str, str, str]]:
    return [(e.interaction_id, e.queue, e.event) for e in r.changes.contact_log]


# ---------------------------------------------------------------- overflow


def test_past_max_wait_a_contact_moves_to_the_target_queue_and_its_agents() -> None:
    cards = queue("cards", max_wait_seconds=30, overflow=overflow_to(TO_QUEUE, "general"))
    general = queue(
        "general", required_skills=[], max_wait_seconds=90, overflow=overflow_to(MESSAGE)
    )
    # Busy agent a is the only one skilled in cards; b takes only general contacts.
    busy = replace(available("a", T0), presence=acd.PRESENCE_BUSY)
    b = profile("b", skills={})
    r = routing({"a": (profile("a"), busy), "b": (b, available("b", T0))}, queues=[cards, general])
    r.enqueue("i1", request(), cards, T0)
    r.dispatch(T0)
    assert decisions(r) == []
    later = T0 + timedelta(seconds=30)
    r.expire(later)
    (moved,) = overflows(r)
    assert (moved.overflow.kind, moved.overflow.target_queue) == (TO_QUEUE, "general")
    assert moved.cause == routing_pb2.OVERFLOW_CAUSE_MAX_WAIT
    contact = r.contacts["i1"]
    assert contact.requirements.queue == "general"
    assert contact.deadline == later + timedelta(seconds=90)
    assert log(r)[-2:] == [("i1", "cards", OVERFLOWED), ("i1", "general", ENTERED)]
    r.changes.decisions.clear()
    r.dispatch(later)
    assert decisions(r) == [("routing.offer", "i1", "b")]


def test_each_queue_overflows_a_contact_once_so_queues_that_point_at_each_other_end() -> None:
    a = queue("a", required_skills=[], max_wait_seconds=10, overflow=overflow_to(TO_QUEUE, "b"))
    b = queue("b", required_skills=[], max_wait_seconds=10, overflow=overflow_to(TO_QUEUE, "a"))
    away = replace(available("x", T0), presence=acd.PRESENCE_AWAY)
    r = routing({"x": (profile("x"), away)}, queues=[a, b])
    r.enqueue("i1", request(queue="a"), a, T0)
    r.expire(T0 + timedelta(seconds=10))
    r.expire(T0 + timedelta(seconds=20))
    r.expire(T0 + timedelta(seconds=30))
    kinds = [(o.overflow.kind, o.overflow.target_queue) for o in overflows(r)]
    # a to b, b to a, then a again: already taken, so the contact is kept as a message.
    assert kinds == [(TO_QUEUE, "b"), (TO_QUEUE, "a"), (MESSAGE, "")]
    assert r.contacts == {}


def test_an_overflow_to_experts_reaches_experts_across_the_company_ranked_by_expertise() -> None:
    cards = queue("cards", max_wait_seconds=20, overflow=overflow_to(EXPERTS))
    away = replace(available("a", T0), presence=acd.PRESENCE_AWAY)
    agents = {
        "a": (profile("a"), away),
        "e1": (expert("e1", "travel"), available("e1", T0)),
        "e2": (expert("e2", "card_lost"), available("e2", T0 + timedelta(seconds=5))),
    }
    # Rings stop short of experts, so only the overflow reaches them.
    policy = tenant_policy([{"queues": {"cards": {"rings": []}}}], [cards])
    r = routing(agents, queues=[cards], policy=policy)
    r.enqueue("i1", request(intent="card_lost"), cards, T0)
    r.dispatch(T0)
    assert decisions(r) == []
    r.expire(T0 + timedelta(seconds=20))
    (to_experts,) = overflows(r)
    assert to_experts.overflow.kind == EXPERTS
    r.changes.decisions.clear()
    r.dispatch(T0 + timedelta(seconds=20))
    # The expert whose expertise is the customer's intent, though the other was idle longer.
    assert decisions(r) == [("routing.offer", "i1", "e2")]
    # Still the cards queue's contact: experts widen who serves it, it did not leave.
    assert OVERFLOWED not in [e for _, _, e in log(r)]


def test_a_callback_keeps_the_number_then_queues_again_as_an_outbound_call() -> None:
    cards = queue("cards", max_wait_seconds=30, overflow=overflow_to(CALLBACK))
    voice = profile("v")
    busy = replace(available("v", T0), presence=acd.PRESENCE_BUSY)
    policy = tenant_policy([{"default": {"callback_after_seconds": 600}}], [cards])
    r = routing({"v": (voice, busy)}, queues=[cards], policy=policy)
    r.enqueue("i1", request(callback_number="+8613800000000"), cards, T0)
    overflow_at = T0 + timedelta(seconds=30)
    r.expire(overflow_at)
    (callback,) = overflows(r)
    assert callback.overflow.kind == CALLBACK
    assert callback.callback_number == "+8613800000000"
    due = overflow_at + timedelta(seconds=600)
    assert callback.callback_time.ToDatetime(UTC) == due
    # Out of line until due: an agent who frees up now is not offered it.
    r.set_presence("v", acd.PRESENCE_AVAILABLE, "", {}, overflow_at)
    r.dispatch(overflow_at)
    assert [k for k, _, _ in decisions(r)] == ["routing.overflow"]
    assert r.next_deadline(overflow_at) == due
    r.expire(due)
    r.dispatch(due)
    assert decisions(r) == [("routing.offer", "i1", "v")]
    offer = r.changes.offers["offer-1"].offer
    assert offer.requirements.media == VOICE
    assert offer.requirements.callback_number == "+8613800000000"
    assert log(r)[-2:] == [("i1", "cards", OVERFLOWED), ("i1", "cards", ENTERED)]


def test_a_callback_without_a_number_is_kept_as_a_message() -> None:
    cards = queue("cards", max_wait_seconds=30, overflow=overflow_to(CALLBACK))
    away = replace(available("a", T0), presence=acd.PRESENCE_AWAY)
    r = routing({"a": (profile("a"), away)}, queues=[cards])
    r.enqueue("i1", request(), cards, T0)
    r.expire(T0 + timedelta(seconds=30))
    assert [o.overflow.kind for o in overflows(r)] == [MESSAGE]
    assert r.contacts == {}


def test_a_flow_collected_callback_number_is_used() -> None:
    cards = queue("cards", max_wait_seconds=30, overflow=overflow_to(CALLBACK))
    away = replace(available("a", T0), presence=acd.PRESENCE_AWAY)
    r = routing({"a": (profile("a"), away)}, queues=[cards])
    r.enqueue("i1", request(collected_data={"callback_number": "+861012345"}), cards, T0)
    r.expire(T0 + timedelta(seconds=30))
    assert [o.callback_number for o in overflows(r)] == ["+861012345"]


def test_when_nobody_could_ever_take_a_contact_it_overflows_at_once() -> None:
    # The only agent lacks the skill; waiting for the max wait would help nobody.
    cards = queue("cards", overflow=overflow_to(MESSAGE))
    r = routing({"a": (profile("a", skills={"loans": 9}), available("a", T0))}, queues=[cards])
    r.enqueue("i1", request(), cards, T0)
    (now,) = overflows(r)
    assert now.cause == routing_pb2.OVERFLOW_CAUSE_NO_ELIGIBLE_AGENT
    assert r.contacts == {}
    # Signed out but skilled: it could take it later, so the contact waits.
    r2 = routing({"a": (profile("a"), available("a", T0))}, queues=[cards])
    r2.set_presence("a", acd.PRESENCE_OFFLINE, "", {}, T0)
    r2.enqueue("i1", request(), cards, T0)
    assert overflows(r2) == [] and "i1" in r2.contacts


# ---------------------------------------------------------------- transfers


def assigned(r: TenantRouting, interaction: str, agent: str) -> None:
    r.enqueue(interaction, request(), queue(), T0)
    r.dispatch(T0)
    offer_id = r.contacts[interaction].offer_id
    assert offer_id is not None and r.answer(offer_id, agent, True, "", T0)
    r.changes.decisions.clear()
    r.changes.contact_log.clear()


def test_a_transfer_to_a_named_agent_offers_only_them_then_releases_the_one_who_handed_over() -> (
    None
):
    agents = {
        aid: (profile(aid, capacity={CHAT: 1}), available(aid, T0 + timedelta(seconds=i)))
        for i, aid in enumerate(["a", "b", "c"])
    }
    r = routing(agents)
    assigned(r, "i1", "a")
    now = T0 + timedelta(seconds=10)
    target = common.RoutingTarget(agent_id="c")
    assert r.enqueue("i1", request(target=target, note="wants a refund"), queue(), now, "a")
    r.dispatch(now)
    # b was idle longer, but the transfer names c.
    assert decisions(r) == [("routing.offer", "i1", "c")]
    offer = r.changes.offers["offer-2"].offer
    assert offer.requirements.note == "wants a refund"
    ranking = r.rank(r.contacts["i1"], now)
    assert {e.agent_id: e.filter for e in ranking.excluded}["b"] == acd.HARD_FILTER_TARGET
    assert r.answer("offer-2", "c", True, "", now)
    (assign,) = [d.assign for k, d in r.changes.messages() if k == "routing.assign"]
    assert (assign.agent_id, assign.released_agent_id) == ("c", "a")
    assert [a.agent_id for a in r.assignments] == ["c"]
    assert r.pool.has_room("a", CHAT)
    assert ("i1", "", ENDED) in log(r) and ("i1", "cards", ANSWERED) in log(r)


def test_a_consult_keeps_the_transferring_agent() -> None:
    r = routing({aid: (profile(aid), available(aid, T0)) for aid in ["a", "b"]})
    assigned(r, "i1", "a")
    r.enqueue("i1", request(target=common.RoutingTarget(agent_id="b")), queue(), T0, "a", True)
    r.dispatch(T0)
    assert r.answer("offer-2", "b", True, "", T0)
    assert sorted(a.agent_id for a in r.assignments) == ["a", "b"]


def test_only_the_agent_holding_an_interaction_can_transfer_it() -> None:
    r = routing({aid: (profile(aid), available(aid, T0)) for aid in ["a", "b"]})
    assigned(r, "i1", "a")
    assert not r.enqueue("i1", request(), queue(), T0)
    assert not r.enqueue("i1", request(), queue(), T0, "b")
    assert r.enqueue("i1", request(), queue(), T0, "a")
    r.dispatch(T0)
    # Never back to the agent who handed it over.
    assert decisions(r) == [("routing.offer", "i1", "b")]


def test_a_transfer_to_an_expertise_reaches_only_experts_who_have_it() -> None:
    agents = {
        "a": (profile("a"), available("a", T0)),
        "s": (profile("s"), available("s", T0)),
        "e1": (expert("e1", "travel"), available("e1", T0)),
        "e2": (expert("e2", "mortgage"), available("e2", T0 + timedelta(seconds=1))),
    }
    r = routing(agents)
    assigned(r, "i1", "a")
    target = common.RoutingTarget(experts=True, expertise="mortgage")
    r.enqueue("i1", request(target=target), queue(), T0, "a")
    r.dispatch(T0)
    assert decisions(r) == [("routing.offer", "i1", "e2")]


# ---------------------------------------------------------------- routing profiles


PROFILES = {
    "routing_profiles": {
        # Sales agents take sales first and help with cards after a 30 s wait.
        "sales": {"sales": {"priority": 1}, "cards": {"priority": 2, "delay_seconds": 30}},
    }
}


def sales_agent(agent_id: str) -> object:
    return replace(profile(agent_id), routing_profile="sales")


def test_a_routing_profile_takes_its_first_priority_queue_before_an_older_contact_elsewhere() -> (
    None
):
    cards, sales = queue("cards", required_skills=[]), queue("sales", required_skills=[])
    policy = tenant_policy([PROFILES], [cards, sales])
    away = replace(available("x", T0), presence=acd.PRESENCE_AWAY)
    r = routing(
        {"s": (sales_agent("s"), away), "x": (profile("x"), away)},
        queues=[cards, sales],
        policy=policy,
    )
    r.enqueue("old-cards", request(queue="cards"), cards, T0)
    r.enqueue("new-sales", request(queue="sales"), sales, T0 + timedelta(seconds=40))
    # Two contacts, one agent: contact surplus, the agent picks by its profile.
    now = T0 + timedelta(seconds=41)
    r.set_presence("s", acd.PRESENCE_AVAILABLE, "", {}, now)
    r.dispatch(now)
    assert decisions(r)[0] == ("routing.offer", "new-sales", "s")


def test_a_routing_profile_delay_holds_a_queue_back_and_says_so() -> None:
    cards = queue("cards", required_skills=[])
    policy = tenant_policy([PROFILES], [cards])
    r = routing({"s": (sales_agent("s"), available("s", T0))}, queues=[cards], policy=policy)
    r.enqueue("i1", request(), cards, T0)
    r.dispatch(T0)
    assert decisions(r) == []
    ranking = r.rank(r.contacts["i1"], T0)
    (held,) = ranking.excluded
    assert held.filter == acd.HARD_FILTER_ROUTING_PROFILE
    assert held.detail == "routing profile sales takes cards after 30 s"
    # The timer wakes when the delay passes, and the agent is offered it then.
    due = r.next_deadline(T0)
    assert due == T0 + timedelta(seconds=30)
    r.expire(due)
    r.dispatch(due)
    assert decisions(r) == [("routing.offer", "i1", "s")]


def test_an_agent_whose_profile_lacks_the_queue_is_never_offered_it() -> None:
    loans = queue("loans", required_skills=[])
    policy = tenant_policy([PROFILES], [loans])
    r = routing(
        {
            "s": (sales_agent("s"), available("s", T0)),
            "x": (profile("x"), available("x", T0 + timedelta(seconds=1))),
        },
        queues=[loans],
        policy=policy,
    )
    r.enqueue("i1", request(queue="loans"), loans, T0)
    r.dispatch(T0)
    assert decisions(r) == [("routing.offer", "i1", "x")]
