"""The two ways of matching waiting contacts with agents who have room (pure, no I/O).

With more waiting contacts than agents with room (contact surplus) agents are the scarce
side: each agent, longest idle first, takes the first contact in queue order it may take.
Otherwise (agent surplus) each contact in queue order takes its best-scored agent.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from lianluo.services.acd.agents import is_eligible
from lianluo.services.acd.pool import Place
from lianluo.services.acd.state import Contact

if TYPE_CHECKING:
    from lianluo.services.acd.dispatch import TenantRouting

CONTACT_SURPLUS, AGENT_SURPLUS = "contact_surplus", "agent_surplus"


def mode(r: TenantRouting) -> str:
    return CONTACT_SURPLUS if r.waiting.count > len(r.pool.free) else AGENT_SURPLUS


def dispatch(r: TenantRouting, now: datetime) -> None:
    """Offer waiting contacts to agents with room until no eligible pair is left."""
    progressed = True
    while progressed and r.waiting.count and r.pool.free:
        if mode(r) == CONTACT_SURPLUS:
            progressed = each_agent_picks(r, now)
        else:
            progressed = each_contact_picks(r, now)


def each_agent_picks(r: TenantRouting, now: datetime) -> bool:
    """Contact surplus: each agent with room, longest idle first, takes the first contact
    in queue order it is eligible for; one each per round so that no agent takes two
    while another waits for one."""
    progressed = False
    for agent_id in r.pool.by_fairness():
        contact = best_contact(r, agent_id, now)
        if contact is not None:
            r.offer(contact, agent_id, r.rank(contact, now), now)
            progressed = True
    return progressed


def best_contact(r: TenantRouting, agent_id: str, now: datetime) -> Contact | None:
    """The first contact in queue order (across queues) that the agent may take."""
    if agent_id not in r.pool.free:
        return None
    view = r.pool.views[agent_id]
    costs = r.policy.capacity_cost
    best: Place | None = None
    for name in sorted(r.waiting.queues):
        for spot in r.waiting.queues[name]:
            if best is not None and spot >= best:
                break
            contact = r.contacts[spot[1]]
            ring = r.ring(contact, now)
            if is_eligible(view, ring, contact.needs.media, contact.declined, costs):
                best = spot
                break
    return r.contacts[best[1]] if best is not None else None


def each_contact_picks(r: TenantRouting, now: datetime) -> bool:
    """Agent surplus: each contact in queue order takes its best-scored agent."""
    progressed = False
    for spot in list(r.waiting.in_order()):
        if not r.pool.free:
            break
        contact = r.contacts[spot[1]]
        ranking = r.rank(contact, now)
        best = ranking.best()
        if best is not None:
            r.offer(contact, best.agent_id, ranking, now)
            progressed = True
    return progressed
