"""The two ways of matching waiting contacts with agents who have room (pure, no I/O).

Per media, since room for a chat is not room for a call: with more contacts waiting than
agents with room (contact surplus) agents are the scarce side, and each agent, longest idle
first, takes the first contact in queue order it may take. Otherwise (agent surplus) each
contact in queue order takes its best-scored agent.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from lianluo.services.acd.agents import is_eligible
from lianluo.services.acd.overflow import DECISION_CANDIDATES
from lianluo.services.acd.pool import Place
from lianluo.services.acd.state import Contact

if TYPE_CHECKING:
    from lianluo.services.acd.dispatch import TenantRouting

CONTACT_SURPLUS, AGENT_SURPLUS = "contact_surplus", "agent_surplus"


def mode(r: TenantRouting, media: int) -> str:
    free = len(r.pool.free.get(media, ()))
    return CONTACT_SURPLUS if r.waiting.count(media) > free else AGENT_SURPLUS


def dispatch(r: TenantRouting, now: datetime) -> None:
    """Offer waiting contacts to agents with room until no eligible pair is left."""
    for media in r.waiting.media():
        progressed = True
        while progressed and r.waiting.count(media) and r.pool.free.get(media):
            if mode(r, media) == CONTACT_SURPLUS:
                progressed = each_agent_picks(r, media, now)
            else:
                progressed = each_contact_picks(r, media, now)


def each_agent_picks(r: TenantRouting, media: int, now: datetime) -> bool:
    """Contact surplus: one contact per agent per round, so that no agent takes a second
    while another with room waits for a first."""
    progressed = False
    for agent_id in r.pool.by_fairness(media):
        contact = best_contact(r, agent_id, media, now)
        if contact is not None:
            r.offer(contact, agent_id, r.rank(contact, now), now)
            progressed = True
    return progressed


def best_contact(r: TenantRouting, agent_id: str, media: int, now: datetime) -> Contact | None:
    """The first contact of `media` that the agent may take: from the queues of its routing
    profile's highest priority that has one, and within those in queue order."""
    if not r.pool.has_room(agent_id, media):
        return None
    view = r.pool.views[agent_id]
    costs = r.policy.capacity_cost
    skills = view.profile.skills
    tiers: dict[int, list[tuple[list[Place], float]]] = {}
    for queue, targeted, line in r.waiting.of(media):
        step = r.policy.step(view.profile.routing_profile, queue)
        if step is None:
            continue
        floor = {} if targeted else r.policy.queue(queue).floor_skills
        if any(skills.get(s, 0) < level for s, level in floor.items()):
            continue
        tiers.setdefault(step.priority, []).append((line, step.delay_seconds))
    for priority in sorted(tiers):
        best: Place | None = None
        for line, delay in tiers[priority]:
            for spot in line:
                if best is not None and spot >= best:
                    break
                contact = r.contacts[spot[1]]
                if delay and (now - contact.enqueued_at).total_seconds() < delay:
                    continue
                if is_eligible(view, r.ring(contact, now), media, contact.declined, costs):
                    best = spot
                    break
        if best is not None:
            return r.contacts[best[1]]
    return None


def each_contact_picks(r: TenantRouting, media: int, now: datetime) -> bool:
    """Agent surplus: each contact in queue order takes its best-scored agent."""
    progressed = False
    for spot in list(r.waiting.in_order(media)):
        if not r.pool.free.get(media):
            break
        contact = r.contacts[spot[1]]
        # The offer goes to the best, and the explanation shows the best few.
        ranking = r.rank(contact, now, DECISION_CANDIDATES)
        best = ranking.best()
        if best is not None:
            r.offer(contact, best.agent_id, ranking, now)
            progressed = True
    return progressed
