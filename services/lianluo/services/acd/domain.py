"""The recommender: who may take a contact, how each candidate scores, and why (pure, no I/O).

`rank_agents` is the seam: the hard filters of the contact's current ring remove agents, each
survivor gets five features from 0 to 1 (skill fit, fairness, affinity, profile fit, handle
time), and the policy's weights turn them into one score. `explain` turns the ranking into
the RoutingExplanation that Recommend returns and every decision carries.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from heapq import merge
from itertools import islice

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import DEFAULT_POLICY, LONGEST_IDLE, LOWEST_LOAD, QueuePolicy
from lianluo.services.acd.agents import (
    NOBODY,
    AgentProfile,
    AgentStatus,
    AgentView,
    Customer,
    Exclusion,
    Needs,
    RingNeeds,
    exclusion,
    is_eligible,
    needs_for,
    qualifies,
    ring_needs,
    speaks,
    suits,
)

__all__ = [
    "LONGEST_IDLE",
    "LOWEST_LOAD",
    "NOBODY",
    "AgentProfile",
    "AgentStatus",
    "AgentView",
    "Candidate",
    "Customer",
    "Exclusion",
    "Explanation",
    "Feature",
    "Needs",
    "Ranking",
    "explain",
    "needs_for",
    "qualifies",
    "rank_agents",
    "ring_needs",
    "speaks",
]

SKILL_FIT, AFFINITY, PROFILE_FIT, HANDLE_TIME = (
    "skill_fit",
    "affinity",
    "profile_fit",
    "handle_time",
)
MAX_EXCLUSIONS = 100
MAX_LEVEL = 10
NO_COSTS: Mapping[int, float] = {}


@dataclass(frozen=True)
class Feature:
    name: str
    value: float
    weight: float

    @property
    def contribution(self) -> float:
        return self.value * self.weight


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    kind: int
    rank: int
    features: tuple[Feature, ...]

    @property
    def score(self) -> float:
        return sum(f.contribution for f in self.features)


# (score, agent id, kind, feature values): cheap to sort; Candidates are built on demand.
Scored = tuple[float, str, int, tuple[float, ...]]


@dataclass(frozen=True)
class Ranking:
    """Eligible agents best first (all, or the best few), the agents the hard filters removed,
    and the ring."""

    scored: tuple[Scored, ...]
    names: tuple[str, ...]
    weights: tuple[float, ...]
    excluded: tuple[Exclusion, ...]
    excluded_count: int
    ring: RingNeeds

    def top(self, n: int) -> tuple[Candidate, ...]:
        return tuple(self._candidate(i, s) for i, s in enumerate(self.scored[:n]))

    @cached_property
    def candidates(self) -> tuple[Candidate, ...]:
        return self.top(len(self.scored))

    def best(self) -> Candidate | None:
        return self._candidate(0, self.scored[0]) if self.scored else None

    def candidate(self, agent_id: str) -> Candidate | None:
        i = self.index(agent_id)
        return None if i is None else self._candidate(i, self.scored[i])

    def index(self, agent_id: str) -> int | None:
        for i, s in enumerate(self.scored):
            if s[1] == agent_id:
                return i
        return None

    def message(self, index: int) -> acd.Candidate:
        """The candidate at `index` (0 is the best) as explanations and offers carry it; the
        same figures as its Candidate, without building one."""
        _, agent_id, kind, values = self.scored[index]
        contributions = [v * w for v, w in zip(values, self.weights, strict=True)]
        return acd.Candidate(
            agent_id=agent_id,
            kind=kind,  # type: ignore[arg-type]
            rank=index + 1,
            score=sum(contributions),
            features=[
                acd.FeatureScore(name=n, value=v, weight=w, contribution=c)
                for n, v, w, c in zip(self.names, values, self.weights, contributions, strict=True)
            ],
        )

    def _candidate(self, index: int, scored: Scored) -> Candidate:
        features = tuple(
            Feature(n, v, w) for n, v, w in zip(self.names, scored[3], self.weights, strict=True)
        )
        return Candidate(agent_id=scored[1], kind=scored[2], rank=index + 1, features=features)

    def with_excluded(
        self, more: Iterable[Iterable[Exclusion]], count: int, limit: int = MAX_EXCLUSIONS
    ) -> Ranking:
        """Add exclusions found outside the agents ranked: lists each in agent id order, the
        first `limit` of all kept in that order, and `count` more counted."""
        merged = merge(self.excluded, *more, key=lambda e: e.agent_id)
        return Ranking(
            self.scored,
            self.names,
            self.weights,
            tuple(islice(merged, limit)),
            self.excluded_count + count,
            self.ring,
        )


def _skill_fit(profile: AgentProfile, wanted: Mapping[str, int]) -> float:
    """How skilled the agent is in what the contact needs, by level out of 10."""
    if not wanted:
        return 1.0
    return sum(min(profile.skills.get(s, 0), MAX_LEVEL) for s in wanted) / (MAX_LEVEL * len(wanted))


def _profile_fit(profile: AgentProfile, customer: Customer) -> float:
    """The intent against the agent's expertise, the customer's value against sales conversion."""
    parts: list[float] = []
    if customer.intent:
        parts.append(customer.intent_confidence if customer.intent in profile.expertise else 0.0)
    if customer.value is not None:
        parts.append(customer.value * profile.sales_conversion)
    return sum(parts) / len(parts) if parts else 0.0


def rank_agents(
    needs: Needs,
    agents: Iterable[AgentView],
    now: datetime,
    declined: frozenset[str] | set[str] = frozenset(),
    *,
    policy: QueuePolicy = DEFAULT_POLICY,
    customer: Customer = NOBODY,
    ring: RingNeeds | None = None,
    costs: Mapping[int, float] = NO_COSTS,
    exclusions: int = MAX_EXCLUSIONS,
    best: int | None = None,
    with_room: bool = False,
) -> Ranking:
    """Filter `agents` by the ring's hard filters and rank the rest by weighted features.

    Ties go to the lower agent id, so the order never depends on the order of `agents`;
    exclusions keep the order of `agents` (callers pass them by id): the first `exclusions`
    are explained, all are counted. Given `best`, the ranking holds only the best that many
    candidates: the same, in the same order, as the first of the whole ranking. `with_room`
    says that every agent is available with room for the media (the pool's agents with room):
    only the other filters are checked then.
    """
    ring = ring or ring_needs(needs, policy, 0)
    media = needs.media
    affinity = {aid: 1.0 - i / len(customer.preferred) for i, aid in enumerate(customer.preferred)}
    by_load = policy.fairness == LOWEST_LOAD
    rows: list[Row] = []
    excluded: list[Exclusion] = []
    count = 0
    for agent in agents:
        if not (
            suits(agent, ring, declined)
            if with_room
            else is_eligible(agent, ring, media, declined, costs)
        ):
            count += 1
            if len(excluded) < exclusions:
                out = exclusion(agent, ring, media, declined, costs)
                if out is not None:
                    excluded.append(out)
            continue
        if by_load:
            fairness = 1.0 - agent.load(costs)
        else:
            since = agent.status.idle_since()
            fairness = max(0.0, (now - since).total_seconds()) if since else 0.0
        handle = agent.profile.handle_seconds or policy.reference_handle_seconds
        rows.append((agent, fairness, affinity.get(agent.agent_id, 0.0), handle))
    # Longest idle and handle time are relative to the best candidate: 1 for the agent idle
    # longest, and for the one expected to finish soonest.
    longest = max((r[1] for r in rows), default=0.0)
    fastest = min((r[3] for r in rows), default=0.0)
    w = policy.weights
    weights = (w.skill_fit, w.fairness, w.affinity, w.profile_fit, w.handle_time)
    ws, wf, wa, wp, wh = weights

    def fairness_of(row: Row) -> float:
        if by_load:
            return row[1]
        return row[1] / longest if longest > 0 else 1.0

    def score(row: Row) -> Scored:
        agent, _, near, handle = row
        profile = agent.profile
        fit = _profile_fit(profile, customer)
        skill, fair, speed = _skill_fit(profile, needs.skills), fairness_of(row), fastest / handle
        values = (skill, fair, near, fit, speed)
        # Summed as sum() would, from 0 and left to right: the same float, and no generator.
        total = 0.0 + skill * ws + fair * wf + near * wa + fit * wp + speed * wh
        return (total, agent.agent_id, profile.kind, values)

    # The bound needs weights of at least 0 and a handle-time feature of at most 1.
    if best is None or len(rows) <= best or min(weights) < 0 or fastest <= 0:
        scored = [score(row) for row in rows]
    else:
        scored = _best_scored(rows, best, score, fairness_of, weights, customer)
    scored.sort(key=lambda s: (-s[0], s[1]))
    names = (SKILL_FIT, policy.fairness, AFFINITY, PROFILE_FIT, HANDLE_TIME)
    kept = tuple(scored if best is None else scored[:best])
    return Ranking(kept, names, weights, tuple(excluded), count, ring)


# An eligible agent before scoring: (agent, fairness before scaling, affinity, handle seconds).
Row = tuple[AgentView, float, float, float]


def _best_scored(
    rows: list[Row],
    n: int,
    score: Callable[[Row], Scored],
    fairness_of: Callable[[Row], float],
    weights: tuple[float, ...],
    customer: Customer,
) -> list[Scored]:
    """Scores for a subset of `rows` that holds the best `n` of them (branch and bound).

    Weights are not negative and every feature but fairness is at most 1, so an agent scores
    at most the sum of its fairness and the other features at their most. Preferred agents
    are scored first; the others have affinity 0, and are scored most fair first until the
    most that the next one can score is below the n-th best score found: no agent after it
    can then enter the best n, whatever the ties. The ceiling is summed as `score` sums, and
    rounding is monotonic, so no computed score exceeds its computed ceiling.
    """
    preferred = [row for row in rows if row[2]]
    others = sorted((row for row in rows if not row[2]), key=fairness_of, reverse=True)
    scored = [score(row) for row in preferred]
    kth = heapq.nlargest(n, (s[0] for s in scored))
    heapq.heapify(kth)
    fit = _profile_fit_ceiling(customer, [row[0].profile.sales_conversion for row in others])
    ws, wf, wa, wp, wh = weights
    for row in others:
        if len(kth) == n:
            ceiling = 0.0 + 1.0 * ws + fairness_of(row) * wf + 0.0 * wa + fit * wp + 1.0 * wh
            if ceiling < kth[0]:
                break
        found = score(row)
        scored.append(found)
        if len(kth) < n:
            heapq.heappush(kth, found[0])
        elif found[0] > kth[0]:
            heapq.heapreplace(kth, found[0])
    return scored


def _profile_fit_ceiling(customer: Customer, conversions: list[float]) -> float:
    """The most `_profile_fit` gives any of the agents with these sales conversions."""
    parts: list[float] = []
    if customer.intent:
        parts.append(max(customer.intent_confidence, 0.0))
    if customer.value is not None:
        pick = max if customer.value >= 0 else min
        parts.append(customer.value * pick(conversions, default=0.0))
    return sum(parts) / len(parts) if parts else 0.0


# ---------------------------------------------------------------- explanation (proto)


@dataclass(frozen=True)
class Explanation:
    """What a decision's explanation says, as the ranking left it: its message costs more to
    build than the decision, so it is built once, when the decision is published or saved.
    Everything it reads is immutable, so building it later gives the same message."""

    needs: Needs
    ranking: Ranking
    wait_seconds: int
    max_candidates: int

    @cached_property
    def message(self) -> acd.RoutingExplanation:
        return explain(self.needs, self.ranking, self.wait_seconds, self.max_candidates)


def explain(
    needs: Needs, ranking: Ranking, wait_seconds: int, max_candidates: int = 100
) -> acd.RoutingExplanation:
    """The explanation carried by Recommend and by every routing decision."""
    ring = ranking.ring
    return acd.RoutingExplanation(
        queue=needs.queue,
        wait_seconds=wait_seconds,
        ring=acd.Ring(
            index=ring.index,
            name=ring.name,
            from_wait_seconds=ring.from_wait,
            until_wait_seconds=ring.until_wait,
            required_skills=[
                common.SkillLevel(skill=s, level=lvl) for s, lvl in sorted(ring.skills.items())
            ],
            relaxations=ring.relaxations,
        ),
        candidates=[ranking.message(i) for i in range(min(max_candidates, len(ranking.scored)))],
        excluded=[e.message for e in ranking.excluded[:MAX_EXCLUSIONS]],
        excluded_count=ranking.excluded_count,
    )
