"""In-process routing decisions of one large tenant: rate, p50 and p99 (not a timed test).

Run: .venv/bin/python loadtest/bench/acd_decisions.py [--agents 10000] [--waiting 5000]

Contact surplus (the target): every agent holds one chat and 5,000 contacts wait. Each step
ends one agent's chat, and the decision is the dispatch that follows: the freed agent picks
its contact and the offer is made. The decision keeps its explanation as plain data; the
messages (the offer's decision with its explanation) are built when published, so they are
timed apart, right after the decision, and reported both ways. The offer is then accepted
and a new contact arrives, so the tenant stays at its size. Agent surplus: agents with room
and a contact arriving, which ranks every agent with room; reported for scale, without a
target.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from itertools import count

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import tenant_policy
from lianluo.events.v1.routing_pb2 import RoutingDecision
from lianluo.services.acd.dispatch import Assignment, TenantRouting
from lianluo.services.acd.domain import AgentProfile, AgentStatus
from lianluo.tenants.v1 import tenants_pb2 as pb

CHAT, VOICE = common.MEDIA_TYPE_CHAT, common.MEDIA_TYPE_VOICE
T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
SKILLS = ("cards", "loans", "billing", "travel")
TARGET_P99_MS, TARGET_RATE = 2.0, 20_000


def queues() -> dict[str, pb.Queue]:
    return {
        s: pb.Queue(
            name=s,
            required_skills=[common.SkillLevel(skill=s, level=3)],
            priority=5,
            max_wait_seconds=3600,
            media=CHAT,
        )
        for s in SKILLS
    }


def tenant(agents: int, rng: random.Random) -> TenantRouting:
    profiles, statuses = {}, {}
    for i in range(agents):
        aid = f"agent-{i:05d}"
        skills = {s: rng.randint(3, 10) for s in rng.sample(SKILLS, 2)}
        profiles[aid] = AgentProfile(
            agent_id=aid,
            kind=pb.AGENT_KIND_STAFF,
            skills=skills,
            languages=("en",) if i % 3 else ("en", "zh-CN"),
            capacity={CHAT: 1, VOICE: 1},
            expertise=frozenset({"card_lost"} if i % 5 == 0 else ()),
            sales_conversion=rng.random(),
        )
        since = T0 - timedelta(seconds=rng.randint(0, 600))
        statuses[aid] = AgentStatus(aid, acd.PRESENCE_AVAILABLE, last_idle_time=since)
    ids = count(1)
    return TenantRouting(
        "bench",
        profiles=profiles,
        statuses=statuses,
        contacts={},
        offers={},
        assignments=[],
        offer_timeout=timedelta(seconds=20),
        # Resolved as the router does, so each queue knows its required skills.
        policy=tenant_policy([], list(queues().values())),
        new_id=lambda: f"offer-{next(ids)}",
    )


def request(rng: random.Random, skill: str) -> common.RoutingRequirements:
    return common.RoutingRequirements(
        queue=skill,
        priority=rng.randint(1, 10),
        intent="card_lost" if rng.random() < 0.3 else "",
        customer_attributes={"value": rng.choice(["low", "medium", "high"])},
        preferred_agent_ids=[f"agent-{rng.randrange(10000):05d}"] if rng.random() < 0.2 else [],
    )


def fill(r: TenantRouting, waiting: int, rng: random.Random, now: datetime) -> None:
    """Every agent holds one chat, then `waiting` contacts queue behind them."""
    for aid in r.pool.ids:
        r.hold(Assignment(f"held-{aid}", aid, CHAT, f"o-{aid}", now))
    qs = queues()
    for i in range(waiting):
        skill = rng.choice(SKILLS)
        r.enqueue(f"w-{i}", request(rng, skill), qs[skill], now - timedelta(seconds=i % 300))


# Per step: the decision (dispatch), and building its messages as publishing does.
Timings = tuple[list[float], list[float]]


def decide(r: TenantRouting, now: datetime, times: Timings) -> list[RoutingDecision]:
    start = time.perf_counter()
    r.dispatch(now)
    decided = time.perf_counter()
    offers = [d for k, d in r.changes.messages() if k == "routing.offer"]
    built = time.perf_counter()
    times[0].append(decided - start)
    times[1].append(built - decided)
    return offers


def contact_surplus(agents: int, waiting: int, steps: int) -> Timings:
    rng = random.Random(7)
    now = T0
    r = tenant(agents, rng)
    fill(r, waiting, rng, now)
    qs = queues()
    times: Timings = ([], [])
    for step in range(steps):
        now += timedelta(milliseconds=5)
        held = r.assignments[rng.randrange(len(r.assignments))]
        r.end_interaction(held.interaction_id, now)
        offers = decide(r, now, times)
        assert len(offers) == 1, f"step {step}: {len(offers)} offers"
        offer = offers[0].offer.offer
        r.answer(offer.id, offer.agent_id, True, "", now)
        skill = rng.choice(SKILLS)
        r.enqueue(f"n-{step}", request(rng, skill), qs[skill], now)
        r.changes = type(r.changes)()
    assert r.waiting.count(CHAT) == waiting
    return times


def agent_surplus(agents: int, free: int, steps: int) -> Timings:
    """`free` agents with room and nobody waiting; each arrival ranks them all."""
    rng = random.Random(11)
    now = T0
    r = tenant(agents, rng)
    fill(r, 0, rng, now)
    for held in list(r.assignments[:free]):
        r.release(held.interaction_id, None, now)
    qs = queues()
    times: Timings = ([], [])
    for step in range(steps):
        now += timedelta(milliseconds=5)
        skill = rng.choice(SKILLS)
        r.enqueue(f"a-{step}", request(rng, skill), qs[skill], now)
        offer = decide(r, now, times)[0].offer.offer
        r.answer(offer.id, offer.agent_id, True, "", now)
        r.end_interaction(offer.interaction_id, now)
        r.changes = type(r.changes)()
    return times


def report(name: str, times: Timings, target: bool) -> bool:
    print(f"{name}: {len(times[0])} decisions")
    decided = figures("decision", times[0], target)
    with_messages = [a + b for a, b in zip(*times, strict=True)]
    built = figures("decision and its messages built", with_messages, target)
    return decided and built


def figures(what: str, times: list[float], target: bool) -> bool:
    ms = sorted(t * 1000 for t in times)
    p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99) - 1]
    rate = len(ms) / (sum(ms) / 1000)
    print(f"  {what}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {ms[-1]:.3f} ms")
    print(f"    rate {rate:,.0f} decisions/s on one core")
    if not target:
        return True
    ok_p99, ok_rate = p99 < TARGET_P99_MS, rate >= TARGET_RATE
    print(f"    target p99 < {TARGET_P99_MS} ms: {'MET' if ok_p99 else 'MISSED'}")
    print(f"    target >= {TARGET_RATE:,} decisions/s: {'MET' if ok_rate else 'MISSED'}")
    return ok_p99 and ok_rate


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=5_000)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--free", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    title = f"contact surplus, {args.agents} agents, {args.waiting} waiting"
    met = report(title, contact_surplus(args.agents, args.waiting, args.steps), True)
    title = f"agent surplus, {args.agents} agents, {args.free} with room"
    report(title, agent_surplus(args.agents, args.free, args.steps // 5), False)
    print(f"verdict: {'targets met' if met else 'targets missed'}")


if __name__ == "__main__":
    main()
