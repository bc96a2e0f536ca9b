"""Live queue figures from the current routing state (pure, no I/O)."""

from __future__ import annotations

from datetime import datetime

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.domain import needs_for, qualifies
from lianluo.tenants.v1 import tenants_pb2 as pb


def queue_figures(queue: pb.Queue, routing: TenantRouting, now: datetime) -> acd.QueueFigures:
    """Waiting contacts and the queue's agents now.

    This version keeps no history of answered, abandoned or overflowed contacts, so service
    level, ASA, AHT, abandonment, occupancy, the window counts and the Erlang C advice stay zero.
    """
    waiting = [c for c in routing.contacts.values() if c.needs.queue == queue.name]
    needs = needs_for(queue, common.RoutingRequirements())
    available = busy = 0
    for agent in routing.agent_views():
        if not qualifies(agent.profile, needs) or agent.max_concurrent(needs.media) <= 0:
            continue
        presence = agent.status.presence
        if presence == acd.PRESENCE_AVAILABLE and agent.free(needs.media) > 0:
            available += 1
        elif presence in (acd.PRESENCE_AVAILABLE, acd.PRESENCE_BUSY, acd.PRESENCE_WRAP_UP):
            # Signed in and working: at full capacity, on something else, or in wrap-up.
            busy += 1
    return acd.QueueFigures(
        queue=queue.name,
        waiting=len(waiting),
        longest_wait_seconds=max((c.wait_seconds(now) for c in waiting), default=0),
        service_level=queue.service_level,
        agents_available=available,
        agents_busy=busy,
    )
