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
from dataclasses import dataclass, field
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
    RATED,
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


@dataclass
class Tally:
    """What happened to contacts in a window, summed over queues: counts, waits of answered
    contacts, handle times, and the spans each agent handled."""

    entered: int = 0
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0
    within: int = 0
    late_abandons: int = 0
    waits: list[float] = field(default_factory=list)
    handles: list[float] = field(default_factory=list)
    handling: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    # The customers' ratings (CSAT, 1 to 5) given in the window.
    ratings: list[int] = field(default_factory=list)

    @property
    def service_level_percent(self) -> float:
        counted = self.answered + self.late_abandons
        return 100.0 * self.within / counted if counted else 0.0

    @property
    def abandonment_percent(self) -> float:
        return 100.0 * self.abandoned / self.entered if self.entered else 0.0


def tally(
    queue: str,
    threshold: int,
    contacts: Iterable[ContactLog],
    window: Window,
    into: Tally | None = None,
    agent_id: str = "",
) -> Tally:
    """Add to `into` what happened in the window to the contacts of one queue; with
    `agent_id`, only their answers and handling."""
    out = into if into is not None else Tally()
    entered: dict[str, datetime] = {}
    answered: dict[str, tuple[datetime, str]] = {}
    handled_by: dict[str, str] = {}
    for e in sorted(contacts, key=lambda e: (e.at, e.interaction_id)):
        if e.event == ENTERED and e.queue == queue:
            entered[e.interaction_id] = e.at
            out.entered += e.at in window and not agent_id
        elif e.queue not in (queue, ""):
            continue  # the same interaction in another queue (after an overflow or transfer)
        elif e.event == ANSWERED and e.interaction_id in entered:
            if agent_id and e.agent_id != agent_id:
                continue
            answered[e.interaction_id] = (e.at, e.agent_id)
            handled_by[e.interaction_id] = e.agent_id
            if e.at in window:
                wait = (e.at - entered[e.interaction_id]).total_seconds()
                out.answered += 1
                out.waits.append(wait)
                out.within += wait <= threshold
        elif e.event == RATED and e.interaction_id in entered:
            # A rating counts for each queue the contact waited in, and for who answered it.
            if e.at in window and (not agent_id or handled_by.get(e.interaction_id) == agent_id):
                out.ratings.append(e.score)
        elif agent_id and e.event in (ABANDONED, OVERFLOWED):
            continue
        elif e.event == ABANDONED and e.interaction_id in entered and e.at in window:
            out.abandoned += 1
            out.late_abandons += (e.at - entered[e.interaction_id]).total_seconds() > threshold
        elif e.event == OVERFLOWED and e.interaction_id in entered and e.at in window:
            out.overflowed += 1
        elif e.event == ENDED and e.interaction_id in answered:
            start, agent = answered.pop(e.interaction_id)
            if e.at in window:
                out.handles.append((e.at - start).total_seconds())
            out.handling.setdefault(agent, []).append((start, e.at))
    return out


def history_figures(
    queue: pb.Queue,
    contacts: Iterable[ContactLog],
    presence: Iterable[PresenceLog],
    agent_ids: set[str],
    window: Window,
) -> acd.QueueFigures:
    """The window's figures for one queue from what happened to its contacts and agents."""
    t = tally(queue.name, queue.service_level.threshold_seconds, contacts, window)
    out = acd.QueueFigures(
        queue=queue.name,
        service_level=queue.service_level,
        entered=t.entered,
        answered=t.answered,
        abandoned=t.abandoned,
        overflowed=t.overflowed,
        service_level_percent=t.service_level_percent,
        asa_seconds=_mean(t.waits),
        aht_seconds=_mean(t.handles),
        abandonment_percent=t.abandonment_percent,
    )
    busy = sum(_union_seconds(t.handling.get(a, []), window) for a in agent_ids)
    signed_in = sum(_working_seconds(presence, a, window) for a in agent_ids)
    out.occupancy_percent = min(100.0, 100.0 * busy / signed_in) if signed_in else 0.0
    _advise(out, queue, window)
    return out


def report(
    queues: list[pb.Queue],
    contacts: list[ContactLog],
    window: Window,
    group_by: int,
) -> list[acd.ReportRow]:
    """The window's figures by queue, by agent (who answered) or by channel (each contact's
    own), with the definitions of the live figures, summed over the queues given."""
    groups: dict[str, list[ContactLog]] = {}
    if group_by == acd.REPORT_GROUPING_QUEUE:
        groups = {q.name: contacts for q in queues}
    elif group_by == acd.REPORT_GROUPING_CHANNEL:
        channel = {c.interaction_id: c.channel for c in contacts if c.event == ENTERED}
        for c in contacts:
            key = common.Channel.Name(channel.get(c.interaction_id, 0))  # type: ignore[arg-type]
            groups.setdefault(key, []).append(c)
    else:
        agents = sorted({c.agent_id for c in contacts if c.event == ANSWERED and c.agent_id})
        groups = {a: contacts for a in agents}
    rows = []
    for key, members in sorted(groups.items()):
        t = Tally()
        for q in queues:
            if group_by == acd.REPORT_GROUPING_QUEUE and q.name != key:
                continue
            agent = key if group_by == acd.REPORT_GROUPING_AGENT else ""
            tally(q.name, q.service_level.threshold_seconds, members, window, t, agent)
        rows.append(
            acd.ReportRow(
                key=key,
                entered=t.entered,
                answered=t.answered,
                abandoned=t.abandoned,
                overflowed=t.overflowed,
                service_level_percent=0.0
                if group_by == acd.REPORT_GROUPING_AGENT
                else t.service_level_percent,
                asa_seconds=_mean(t.waits),
                aht_seconds=_mean(t.handles),
                abandonment_percent=t.abandonment_percent,
                rated=len(t.ratings),
                csat_average=_mean([float(r) for r in t.ratings]),
            )
        )
    return rows


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
