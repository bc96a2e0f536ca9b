"""Indexes that keep each routing decision small (pure, no I/O).

A decision must not look at every agent and every waiting contact of a large tenant: the
agent pool knows which agents have room for something, and the waiting line keeps contacts
in queue order per queue. Both are updated by each change rather than rebuilt.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from datetime import datetime
from heapq import merge

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.services.acd.agents import (
    AgentProfile,
    AgentStatus,
    AgentView,
    Exclusion,
    RingNeeds,
    exclusion,
    unavailable,
)

# Sorts agents without an idle time (never idle yet) first.
NEVER = datetime.min
# Below this many agents a set's table is small enough to walk as it is.
COMPACT_FROM = 64


class AgentPool:
    """Every configured agent's view, the capacity each one uses, and who has room."""

    def __init__(
        self,
        profiles: Mapping[str, AgentProfile],
        statuses: dict[str, AgentStatus],
        costs: Mapping[int, float],
    ) -> None:
        self.costs = costs
        self.ids = sorted(profiles)
        self.in_use: dict[str, dict[int, int]] = {}
        self.views: dict[str, AgentView] = {}
        for aid in self.ids:
            status = statuses.setdefault(aid, AgentStatus(aid))
            self.views[aid] = AgentView(profiles[aid], status, self.in_use.setdefault(aid, {}))
        # Per media, the available agents with room for one more interaction of it.
        self.free: dict[int, set[str]] = {}
        # Per media, the most agents its set held since it was last compacted.
        self._peak: dict[int, int] = {}
        # Agent -> media -> why it has no room, in words: decisions explain the same first
        # agents without room again and again, and only `touch` can change the words.
        self._why: dict[str, dict[int, Exclusion | None]] = {}

    def take(self, agent_id: str, media: int, n: int = 1) -> None:
        """`n` more (or fewer, when negative) interactions of `media` held or reserved."""
        per_media = self.in_use.setdefault(agent_id, {})
        per_media[media] = per_media.get(media, 0) + n
        if per_media[media] <= 0:
            del per_media[media]
        self.touch(agent_id)

    def touch(self, agent_id: str) -> None:
        """Recompute whether the agent has room, after its presence or load changed."""
        view = self.views.get(agent_id)
        if view is None:
            return
        self._why.pop(agent_id, None)
        up = view.status.presence == acd.PRESENCE_AVAILABLE
        for media in view.profile.capacity:
            free = self.free.setdefault(media, set())
            if up and view.fits(media, self.costs):
                free.add(agent_id)
                if len(free) > self._peak.get(media, 0):
                    self._peak[media] = len(free)
            elif agent_id in free:
                free.discard(agent_id)
                self._compact(media, free)

    def _compact(self, media: int, free: set[str]) -> None:
        """A set never shrinks its table, and iterating it walks the whole table: with 10,000
        agents free once and one free now, each walk cost tens of microseconds. Copying the set
        when it holds under an eighth of its peak keeps walks in proportion to its size, for a
        copy's cost spread over the removals that led to it."""
        peak = self._peak.get(media, 0)
        if peak > COMPACT_FROM and len(free) * 8 < peak:
            self.free[media] = set(free)
            self._peak[media] = len(free)

    def touch_all(self) -> None:
        for aid in self.ids:
            self.touch(aid)

    def has_room(self, agent_id: str, media: int) -> bool:
        return agent_id in self.free.get(media, ())

    def free_views(self, media: int) -> list[AgentView]:
        """Agents with room for `media`, by id."""
        return [self.views[aid] for aid in sorted(self.free.get(media, ()))]

    def by_fairness(self, media: int) -> list[str]:
        """Agents with room for `media`, the longest idle first: in contact surplus they
        choose first."""

        def idle(aid: str) -> tuple[datetime, str]:
            since = self.views[aid].status.idle_since()
            return (since.replace(tzinfo=None) if since else NEVER, aid)

        return sorted(self.free.get(media, ()), key=idle)

    def unavailable_exclusions(
        self, ring: RingNeeds, media: int, limit: int
    ) -> tuple[list[Exclusion], int]:
        """The first `limit` agents without room, by id, with why, and how many there are."""
        out: list[Exclusion] = []
        free = self.free.get(media, set())
        for aid in self.ids:
            if len(out) >= limit:
                break
            if aid not in free:
                found = self.why(aid, media)
                if found is None:
                    found = exclusion(self.views[aid], ring, media, frozenset(), self.costs)
                if found is not None:
                    out.append(found)
        return out, len(self.views) - len(free)

    def why(self, agent_id: str, media: int) -> Exclusion | None:
        """Why the agent has no room for `media` (its presence or its load), or None."""
        known = self._why.setdefault(agent_id, {})
        if media not in known:
            known[media] = unavailable(self.views[agent_id], media, self.costs)
        return known[media]


# (queue key, interaction id): the key folds priority and aging into one number, see `key`.
Place = tuple[float, str]


def queue_key(enqueued_at: datetime, priority: int, aging_step: float) -> float:
    """Earlier is served first. Aging adds one priority level per `aging_step` seconds of wait:
    priority + wait / step = priority + (now - enqueued) / step, whose order over contacts is
    that of enqueued / step - priority at any `now`; so the order never needs re-sorting."""
    return enqueued_at.timestamp() - priority * aging_step


# (media, queue name, targeted): contacts of one media compete for the same agents' room.
# Contacts with a target (a named agent, experts) wait apart: the queue's skills do not apply.
Line = tuple[int, str, bool]


class WaitingLine:
    """Contacts waiting without an offer, per media and queue, in queue order."""

    def __init__(self) -> None:
        self.lines: dict[Line, list[Place]] = {}
        self.counts: dict[int, int] = {}
        # `of` per media, until a line is added: every decision walks the queues' lines.
        self._of: dict[int, list[tuple[str, bool, list[Place]]]] = {}

    def add(self, line_id: Line, place: Place) -> None:
        line = self.lines.get(line_id)
        if line is None:
            line = self.lines[line_id] = []
            self._of.clear()
        i = bisect_left(line, place)
        if i < len(line) and line[i] == place:
            return
        line.insert(i, place)
        self.counts[line_id[0]] = self.counts.get(line_id[0], 0) + 1

    def remove(self, line_id: Line, place: Place) -> None:
        line = self.lines.get(line_id, [])
        i = bisect_left(line, place)
        if i < len(line) and line[i] == place:
            del line[i]
            self.counts[line_id[0]] -= 1

    def count(self, media: int) -> int:
        return self.counts.get(media, 0)

    def media(self) -> list[int]:
        return sorted(m for m, n in self.counts.items() if n)

    def of(self, media: int) -> list[tuple[str, bool, list[Place]]]:
        """The queues' lines of one media, by queue name: (queue, targeted, line)."""
        found = self._of.get(media)
        if found is None:
            found = [(k[1], k[2], self.lines[k]) for k in sorted(self.lines) if k[0] == media]
            self._of[media] = found
        return found

    def in_order(self, media: int) -> Iterator[Place]:
        """Every contact of `media` waiting across queues, in queue order."""
        return merge(*(line for _, _, line in self.of(media)))
