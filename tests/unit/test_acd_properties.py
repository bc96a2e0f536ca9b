"""Routing invariants over random tenants and random event sequences (hypothesis, no I/O)."""

from __future__ import annotations

import random
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import (
    FAIRNESS,
    FIRST_RING,
    QueuePolicy,
    RingRule,
    TenantPolicy,
    Weights,
)
from lianluo.services.acd.agents import speaks
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.domain import (
    AgentProfile,
    AgentStatus,
    AgentView,
    Customer,
    Needs,
    Ranking,
    rank_agents,
)
from lianluo.services.acd.state import place, queue_order
from lianluo.tenants.v1 import tenants_pb2 as pb

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
CHAT, VOICE = common.MEDIA_TYPE_CHAT, common.MEDIA_TYPE_VOICE
KINDS = (pb.AGENT_KIND_STAFF, pb.AGENT_KIND_EXPERT, pb.AGENT_KIND_CROWD)

levels = st.integers(min_value=0, max_value=10)
agent_specs = st.tuples(
    levels,  # cards
    levels,  # billing
    st.sampled_from([("en",), ("zh",), ("en", "zh-CN")]),
    st.sampled_from(KINDS),
    st.integers(min_value=1, max_value=3),  # chats
    st.integers(min_value=0, max_value=1),  # voice
    st.booleans(),  # available
    st.integers(min_value=0, max_value=300),  # idle since, seconds before T0
)
contact_specs = st.tuples(
    st.integers(min_value=1, max_value=10),  # priority
    st.integers(min_value=0, max_value=120),  # arrives after T0, seconds
    st.sampled_from([CHAT, VOICE]),
    st.sampled_from(["", "en", "zh"]),
    st.integers(min_value=0, max_value=8),  # billing level the request adds
)
ring_specs = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=4),  # cards level from this ring
        st.booleans(),  # drop billing
        st.booleans(),  # any language
        st.booleans(),  # experts
    ),
    max_size=5,
)
operations = st.lists(
    st.tuples(
        st.sampled_from(["dispatch", "accept", "decline", "end", "wait"]),
        st.integers(0, 50),
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class World:
    agents: list[tuple[int, ...]]
    contacts: list[tuple[int, ...]]
    rings: list[tuple[int, bool, bool, bool]]
    aging: float
    shared_capacity: bool


worlds = st.builds(
    World,
    st.lists(agent_specs, min_size=1, max_size=8),
    st.lists(contact_specs, min_size=1, max_size=10),
    ring_specs,
    st.sampled_from([0.0, 15.0, 60.0]),
    st.booleans(),
)


def policy_of(world: World) -> TenantPolicy:
    rings = [FIRST_RING] + [
        RingRule(
            name=f"ring-{i + 1}",
            after_seconds=20 * (i + 1),
            drop_skills=("billing",) if drop else (),
            lower_skills={"cards": cards},
            any_language=anywhere,
            experts=experts,
        )
        for i, (cards, drop, anywhere, experts) in enumerate(world.rings)
    ]
    queue_policy = QueuePolicy(rings=tuple(rings), aging_seconds=world.aging)
    costs = {VOICE: 1.0, CHAT: 0.34} if world.shared_capacity else {}
    return TenantPolicy(queues={"cards": queue_policy}, capacity_cost=costs)


def routing_of(world: World, shuffle: int | None = None) -> TenantRouting:
    profiles, statuses = {}, {}
    for i, (cards, billing, langs, kind, chats, voice, up, idle) in enumerate(world.agents):
        aid = f"a{i}"
        profiles[aid] = AgentProfile(
            agent_id=aid,
            kind=kind,
            skills={"cards": cards, "billing": billing},
            languages=langs,
            capacity={CHAT: chats, VOICE: voice},
        )
        presence = acd.PRESENCE_AVAILABLE if up else acd.PRESENCE_AWAY
        since = T0 - timedelta(seconds=idle)
        statuses[aid] = AgentStatus(aid, presence, last_idle_time=since)
    if shuffle is not None:
        # The same tenant, loaded in another order: decisions must not depend on it.
        keys = list(profiles)
        random.Random(shuffle).shuffle(keys)
        profiles = {k: profiles[k] for k in keys}
        statuses = {k: statuses[k] for k in reversed(keys)}
    ids = count(1)
    return TenantRouting(
        "tenant",
        profiles=profiles,
        statuses=statuses,
        contacts={},
        offers={},
        assignments=[],
        offer_timeout=timedelta(seconds=30),
        policy=policy_of(world),
        new_id=lambda: f"offer-{next(ids)}",
    )


QUEUE = pb.Queue(
    name="cards",
    required_skills=[common.SkillLevel(skill="cards", level=5)],
    priority=5,
    max_wait_seconds=200,
    media=CHAT,
)


def enqueue_all(r: TenantRouting, world: World) -> None:
    for i, (priority, after, media, language, billing) in sorted(
        enumerate(world.contacts), key=lambda x: x[1][1]
    ):
        request = common.RoutingRequirements(
            queue="cards",
            priority=priority,
            media=media,
            language=language,
            required_skills=[common.SkillLevel(skill="billing", level=billing)] if billing else [],
        )
        r.enqueue(f"c{i}", request, QUEUE, T0 + timedelta(seconds=after))


def check_capacity(r: TenantRouting) -> None:
    costs = r.policy.capacity_cost
    for view in r.agent_views():
        for media, used in view.in_use.items():
            assert used <= view.max_concurrent(media), (view.agent_id, media, used)
        if costs:
            load = sum(n * costs.get(m, 0.0) for m, n in view.in_use.items())
            assert load <= 1.0 + 1e-9, (view.agent_id, load)


def check_offers_eligible(r: TenantRouting, now: datetime) -> None:
    """Recompute eligibility from first principles for every offer just made."""
    for kind, decision in r.changes.messages():
        if kind != "routing.offer":
            continue
        offer = decision.offer.offer
        contact = r.contacts[offer.interaction_id]
        agent = r.pool.views[offer.agent_id]
        ring = decision.explanation.ring
        policy = r.policy.queue("cards")
        assert ring.index == policy.ring_at((now - contact.enqueued_at).total_seconds())
        rules = policy.rings[: ring.index + 1]
        assert agent.status.presence == acd.PRESENCE_AVAILABLE
        assert offer.agent_id not in contact.declined
        if agent.profile.kind == pb.AGENT_KIND_EXPERT:
            assert any(rule.experts for rule in rules)
        for skill, level in contact.needs.skills.items():
            if any(skill in rule.drop_skills for rule in rules):
                continue
            floor = min([level] + [rule.lower_skills.get(skill, level) for rule in rules])
            assert agent.profile.skills.get(skill, 0) >= floor, (skill, floor)
        if contact.needs.language and not any(rule.any_language for rule in rules):
            assert speaks(agent.profile.languages, contact.needs.language)


def check_queue_order(r: TenantRouting, waiting_before: list[str], now: datetime) -> None:
    """No contact takes an agent that a contact ahead of it in queue order could have taken
    (same media, so room for one is room for the other) while that contact got nothing."""
    offers = {
        d.interaction_id: d.offer.offer.agent_id
        for k, d in r.changes.messages()
        if k == "routing.offer"
    }
    for later_id, agent_id in offers.items():
        later = r.contacts[later_id]
        for earlier_id in waiting_before:
            earlier = r.contacts.get(earlier_id)
            if earlier is None or earlier_id in offers or earlier.needs.media != later.needs.media:
                continue
            if place(earlier, r.policy) >= place(later, r.policy):
                continue
            ring = r.ring(earlier, now)
            view = r.pool.views[agent_id]
            has_skills = all(view.profile.skills.get(s, 0) >= lvl for s, lvl in ring.skills.items())
            speaks_it = not ring.language or speaks(view.profile.languages, ring.language)
            expert_ok = view.profile.kind != pb.AGENT_KIND_EXPERT or ring.experts
            eligible = has_skills and speaks_it and expert_ok and agent_id not in earlier.declined
            assert not eligible, f"{later_id} took {agent_id} ahead of {earlier_id}"


def play(r: TenantRouting, world: World, ops: list[tuple[str, int]]) -> list[bytes]:
    """Run the operations, checking the invariants after each; return every decision."""
    enqueue_all(r, world)
    now = T0 + timedelta(seconds=120)
    out: list[bytes] = []
    for op, k in ops:
        waiting_before = [c.interaction_id for c in r.contacts.values() if c.offer_id is None]
        if op == "dispatch":
            r.dispatch(now)
            check_offers_eligible(r, now)
            check_queue_order(r, waiting_before, now)
        elif op in ("accept", "decline") and r.offers:
            pending = sorted(r.offers.values(), key=lambda p: p.offer.id)[k % len(r.offers)]
            r.answer(pending.offer.id, pending.offer.agent_id, op == "accept", "", now)
        elif op == "end" and r.assignments:
            r.end_interaction(r.assignments[k % len(r.assignments)].interaction_id, now)
        elif op == "wait":
            now += timedelta(seconds=k)
            r.expire(now)
        check_capacity(r)
        out += [
            kind.encode() + d.SerializeToString(deterministic=True)
            for kind, d in r.changes.messages()
        ]
        r.changes.decisions.clear()
    return out


@settings(max_examples=300, deadline=None)
@given(worlds, operations)
def test_capacity_eligibility_and_queue_order_hold_through_any_sequence(
    world: World, ops: list[tuple[str, int]]
) -> None:
    play(routing_of(world), world, ops)


@settings(max_examples=150, deadline=None)
@given(worlds, operations, st.integers(0, 1000))
def test_the_same_inputs_give_the_same_decisions_whatever_the_load_order(
    world: World, ops: list[tuple[str, int]], seed: int
) -> None:
    assert play(routing_of(world), world, ops) == play(routing_of(world, seed), world, ops)


@settings(max_examples=200, deadline=None)
@given(worlds, st.lists(st.integers(1, 10), min_size=2, max_size=10))
def test_a_higher_priority_never_waits_behind_a_lower_one_that_came_no_earlier(
    world: World, priorities: list[int]
) -> None:
    r = routing_of(world)
    for i, p in enumerate(priorities):
        request = common.RoutingRequirements(queue="cards", priority=p)
        r.enqueue(f"c{i}", request, QUEUE, T0 + timedelta(seconds=i))
    order = queue_order(r.contacts.values(), r.policy)
    for i, ahead in enumerate(order):
        for behind in order[i + 1 :]:
            assert not (
                behind.needs.priority > ahead.needs.priority
                and behind.enqueued_at <= ahead.enqueued_at
            )


# ---------------------------------------------------------------- the bounded ranking

# Few distinct values, so that scores and idle times tie often; most agents are eligible, so
# that the bound has many to skip.
ranked_agents = st.tuples(
    st.integers(2, 10),  # cards
    st.integers(0, 10),  # billing
    st.sampled_from([("en",)] * 5 + [("zh",)]),
    st.sampled_from([pb.AGENT_KIND_STAFF] * 6 + list(KINDS)),
    st.sampled_from([0, 0, 0, 0, 1, 2]),  # chats in use, of 2
    st.sampled_from([True] * 5 + [False]),  # available
    st.one_of(st.none(), st.sampled_from([0, 30, 60, 300])),  # idle since, seconds before now
    st.sampled_from([None, 60.0, 300.0, 600.0]),  # handle seconds
    st.sampled_from([0.0, 0.25, 1.0]),  # sales conversion
    st.booleans(),  # expertise in the intent
)
# cards, billing, languages, kind, chats in use, available, idle, handle, conversion, expert
RankedAgent = tuple[
    int, int, tuple[str, ...], int, int, bool, int | None, float | None, float, bool
]
weight_values = st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0])
ranked_weights = st.one_of(
    st.just(astuple(Weights())),
    st.tuples(weight_values, weight_values, weight_values, weight_values, weight_values),
    # A negative weight: the bound does not hold, the whole ranking is scored.
    st.tuples(weight_values, st.just(-0.5), weight_values, weight_values, weight_values),
)
customers = st.builds(
    lambda preferred, intent, confidence, value: Customer(
        preferred=tuple(dict.fromkeys(f"a{i}" for i in preferred)),
        intent="card_lost" if intent else "",
        intent_confidence=confidence,
        value=value,
    ),
    st.lists(st.integers(0, 40), max_size=3),
    st.booleans(),
    st.sampled_from([0.5, 1.0]),
    st.sampled_from([None, 0.0, 0.5, 1.0]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(ranked_agents, min_size=8, max_size=40),
    customers,
    ranked_weights,
    st.sampled_from(FAIRNESS),
    st.booleans(),  # shared capacity
    st.sets(st.integers(0, 40), max_size=4),  # declined
    st.integers(1, 10),  # best
    st.integers(0, 12),  # exclusions explained
)
def test_the_bounded_ranking_is_the_head_of_the_whole_ranking(
    agents: list[RankedAgent],
    customer: Customer,
    weights: tuple[float, float, float, float, float],
    fairness: str,
    shared: bool,
    declined_ids: set[int],
    best: int,
    exclusions: int,
) -> None:
    """The whole ranking scores every eligible agent: the reference for the bounded one."""
    now = T0 + timedelta(seconds=600)
    views = []
    for i, spec in enumerate(agents):
        cards, billing, langs, kind, chats, up, idle, handle, conversion, expert = spec
        aid = f"a{i}"
        profile = AgentProfile(
            agent_id=aid,
            kind=kind,
            skills={"cards": cards, "billing": billing},
            languages=langs,
            capacity={CHAT: 2, VOICE: 1},
            expertise=frozenset({"card_lost"}) if expert else frozenset(),
            sales_conversion=conversion,
            handle_seconds=handle,
        )
        since = None if idle is None else now - timedelta(seconds=idle)
        presence = acd.PRESENCE_AVAILABLE if up else acd.PRESENCE_AWAY
        status = AgentStatus(aid, presence, last_idle_time=since)
        views.append(AgentView(profile, status, {CHAT: chats} if chats else {}))
    skill_fit, fair, affinity, profile_fit, handle_time = weights
    policy = QueuePolicy(
        weights=Weights(skill_fit, fair, affinity, profile_fit, handle_time), fairness=fairness
    )
    needs = Needs(queue="cards", media=CHAT, skills={"cards": 3}, language="en", priority=5)
    declined = frozenset(f"a{i}" for i in declined_ids)
    costs: dict[int, float] = {VOICE: 1.0, CHAT: 0.34} if shared else {}

    def rank(best: int | None = None, exclusions: int = 100) -> Ranking:
        return rank_agents(
            needs,
            views,
            now,
            declined,
            policy=policy,
            customer=customer,
            costs=costs,
            exclusions=exclusions,
            best=best,
        )

    whole = rank()
    bounded = rank(best=best, exclusions=exclusions)
    assert bounded.scored == whole.scored[:best]
    assert bounded.excluded == whole.excluded[:exclusions]
    assert bounded.excluded_count == whole.excluded_count
