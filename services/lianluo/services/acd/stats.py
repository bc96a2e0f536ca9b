"""Live queue figures from the routing state and the contact and presence logs (pure, no I/O).

The definitions (docs/routing.md) follow Amazon Connect and Genesys Cloud:
service level = answered within the threshold / (answered + abandoned after the threshold);
ASA = mean wait of answered contacts; AHT = mean time from answer to end (no wrap-up phase
yet); abandonment = abandoned / entered; occupancy = time agents held at least one contact /
time they were signed in and not away. Counts and averages cover the window, by when each
event happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.services.acd.agents import needs_for, qualifies
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.erlang import agents_needed
from lianluo.services.acd.state import (
    ABANDONED,
    ANSWERED,
    ENDED,
    ENTERED,
    OVERFLOWED,
    ContactLog,
    PresenceLog,
)
from lianluo.tenants.v1 import tenants_pb2 as pb

WORKING = (acd.PRESENCE_AVAILABLE, acd.PRESENCE_BUSY, acd.PRESENCE_WRAP_UP)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at <= self.end

    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def clip(self, a: datetime, b: datetime) -> float:
        return max(0.0, (min(b, self.end) - max(a, self.start)).total_seconds())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def history_figures(
    queue: pb.Queue,
    contacts: Iterable[ContactLog],
    presence: Iterable[PresenceLog],
    agent_ids: set[str],
    window: Window,
) -> acd.QueueFigures:
    """The window's figures for one queue from what happened to its contacts and agents."""
    entered: dict[str, datetime] = {}
    answered: dict[str, tuple[datetime, str]] = {}
    out = acd.QueueFigures(queue=queue.name, service_level=queue.service_level)
    waits: list[float] = []
    handles: list[float] = []
    within = late_abandons = 0
    threshold = queue.service_level.threshold_seconds
    handling: dict[str, list[tuple[datetime, datetime]]] = {}
    for e in sorted(contacts, key=lambda e: (e.at, e.interaction_id)):
        if e.event == ENTERED and e.queue == queue.name:
            entered[e.interaction_id] = e.at
            out.entered += e.at in window
        elif e.queue not in (queue.name, ""):
            continue  # the same interaction in another queue (after an overflow or transfer)
        elif e.event == ANSWERED and e.interaction_id in entered:
            answered[e.interaction_id] = (e.at, e.agent_id)
            if e.at in window:
                wait = (e.at - entered[e.interaction_id]).total_seconds()
                out.answered += 1
                waits.append(wait)
                within += wait <= threshold
        elif e.event == ABANDONED and e.interaction_id in entered and e.at in window:
            out.abandoned += 1
            late_abandons += (e.at - entered[e.interaction_id]).total_seconds() > threshold
        elif e.event == OVERFLOWED and e.interaction_id in entered and e.at in window:
            out.overflowed += 1
        elif e.event == ENDED and e.interaction_id in answered:
            start, agent_id = answered[e.interaction_id]
            if e.at in window:
                handles.append((e.at - start).total_seconds())
            handling.setdefault(agent_id, []).append((start, e.at))
    counted = out.answered + late_abandons
    out.service_level_percent = 100.0 * within / counted if counted else 0.0
    out.asa_seconds = _mean(waits)
    out.aht_seconds = _mean(handles)
    out.abandonment_percent = 100.0 * out.abandoned / out.entered if out.entered else 0.0
    busy = sum(_union_seconds(handling.get(a, []), window) for a in agent_ids)
    signed_in = sum(_working_seconds(presence, a, window) for a in agent_ids)
    out.occupancy_percent = min(100.0, 100.0 * busy / signed_in) if signed_in else 0.0
    _advise(out, queue, window)
    return out


def _union_seconds(spans: list[tuple[datetime, datetime]], window: Window) -> float:
    """Time covered by at least one span: three chats at once are one busy agent, not three."""
    total, reach = 0.0, window.start
    for a, b in sorted(spans):
        a = max(a, reach)
        if b > a:
            total += window.clip(a, b)
            reach = b
    return total


def _working_seconds(presence: Iterable[PresenceLog], agent_id: str, window: Window) -> float:
    changes = sorted((p.at, p.presence) for p in presence if p.agent_id == agent_id)
    if not changes:
        return 0.0  # no presence known in the window: never signed in
    total = 0.0
    for (at, state), (until, _) in zip(changes, [*changes[1:], (window.end, 0)], strict=True):
        if state in WORKING:
            total += window.clip(at, until)
    return total


def _advise(out: acd.QueueFigures, queue: pb.Queue, window: Window) -> None:
    """Erlang C advice at the arrival rate and AHT observed in the window."""
    rate = out.entered / window.seconds() if window.seconds() > 0 else 0.0
    level = queue.service_level
    found = agents_needed(
        rate, out.aht_seconds, level.threshold_seconds, level.target_percent / 100
    )
    if found is None:
        return
    out.erlang_c.CopyFrom(
        acd.ErlangCAdvice(
            arrival_rate_per_hour=rate * 3600,
            aht_seconds=out.aht_seconds,
            traffic_erlangs=found.traffic_erlangs,
            agents_needed=found.agents,
            wait_probability=found.wait_probability,
            expected_service_level_percent=100 * found.service_level,
            expected_asa_seconds=found.asa_seconds,
        )
    )


def queue_figures(
    queue: pb.Queue,
    routing: TenantRouting,
    now: datetime,
    contacts: Iterable[ContactLog] = (),
    presence: Iterable[PresenceLog] = (),
    window_seconds: int = 900,
) -> acd.QueueFigures:
    """The queue's figures over the window, with the waiting contacts and agents now."""
    needs = needs_for(queue, common.RoutingRequirements())
    available = busy = 0
    agent_ids: set[str] = set()
    for agent in routing.agent_views():
        if not qualifies(agent.profile, needs) or agent.max_concurrent(needs.media) <= 0:
            continue
        agent_ids.add(agent.agent_id)
        state = agent.status.presence
        if state == acd.PRESENCE_AVAILABLE and agent.free(needs.media) > 0:
            available += 1
        elif state in WORKING:
            # Signed in and working: at full capacity, on something else, or in wrap-up.
            busy += 1
    window = Window(now - timedelta(seconds=window_seconds), now)
    out = history_figures(queue, contacts, presence, agent_ids, window)
    ours = [c for c in routing.contacts.values() if c.needs.queue == queue.name]
    waiting = [c for c in ours if c.not_before is None]
    out.waiting = len(waiting)
    out.callbacks_scheduled = len(ours) - len(waiting)
    out.longest_wait_seconds = max((c.wait_seconds(now) for c in waiting), default=0)
    out.agents_available = available
    out.agents_busy = busy
    return out
