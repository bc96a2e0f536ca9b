"""Routing rules of the ACD: who may take a contact, and in which order (pure, no I/O).

`rank_agents` is the recommender's seam: it applies the hard filters to every agent and ranks
the survivors, returning the ranking with its reasons. This version ranks by one feature,
longest idle; later features (skill fit, load, affinity, profile fit) plug in here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.descriptor import EnumDescriptor

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import tenants_pb2 as pb

LONGEST_IDLE = "longest_idle"
# The single ring of this version: the queue's own requirements, then overflow at max wait.
RING_NAME = "queue"
MAX_EXCLUSIONS = 100


@dataclass(frozen=True)
class AgentProfile:
    """What the tenant configured for an agent (from the `agent` kind of tenant.config)."""

    agent_id: str
    kind: int
    skills: Mapping[str, int]
    languages: tuple[str, ...]
    capacity: Mapping[int, int]

    @classmethod
    def from_config(cls, agent: pb.Agent) -> AgentProfile:
        return cls(
            agent_id=agent.id,
            kind=agent.kind,
            skills={s.skill: s.level for s in agent.skills},
            languages=tuple(agent.languages),
            capacity={c.media: c.max_concurrent for c in agent.capacity},
        )


@dataclass
class AgentStatus:
    """The routing state of one agent, owned by the ACD."""

    agent_id: str
    presence: int = acd.PRESENCE_OFFLINE
    reason: str = ""
    # Session limits set by SetPresence; a media absent here keeps its configured capacity.
    limits: dict[int, int] = field(default_factory=dict)
    change_time: datetime | None = None
    # When the agent became available or last finished an interaction.
    last_idle_time: datetime | None = None
    # When the agent last took an interaction: someone who just took one is not idle.
    last_assign_time: datetime | None = None

    def idle_since(self) -> datetime | None:
        times = [t for t in (self.last_idle_time, self.last_assign_time) if t is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class AgentView:
    """An agent as the filters see it: configuration, state and the capacity in use."""

    profile: AgentProfile
    status: AgentStatus
    # Interactions held plus offers pending, per media: a pending offer reserves capacity so
    # that an acceptance always fits.
    in_use: Mapping[int, int]

    @property
    def agent_id(self) -> str:
        return self.profile.agent_id

    def max_concurrent(self, media: int) -> int:
        configured = self.profile.capacity.get(media, 0)
        return min(configured, self.status.limits.get(media, configured))

    def free(self, media: int) -> int:
        return self.max_concurrent(media) - self.in_use.get(media, 0)


@dataclass(frozen=True)
class Needs:
    """What a contact needs from the agent who takes it: queue's and request's together."""

    queue: str
    media: int
    skills: Mapping[str, int]
    language: str
    priority: int


def needs_for(queue: pb.Queue, requirements: common.RoutingRequirements) -> Needs:
    """Merge a queue's rules with a request: every skill at the higher level asked."""
    skills = {s.skill: s.level for s in queue.required_skills}
    for s in requirements.required_skills:
        skills[s.skill] = max(s.level, skills.get(s.skill, 0))
    return Needs(
        queue=queue.name,
        media=requirements.media or queue.media,
        skills=skills,
        language=requirements.language or queue.language,
        priority=requirements.priority or queue.priority,
    )


def speaks(languages: Iterable[str], wanted: str) -> bool:
    """True when one tag matches `wanted`, or one is the other narrowed ("zh" and "zh-CN")."""
    w = wanted.lower()
    for tag in languages:
        t = tag.lower()
        if t == w or w.startswith(t + "-") or t.startswith(w + "-"):
            return True
    return False


def qualifies(profile: AgentProfile, needs: Needs) -> bool:
    """Whether the agent has every skill and the language `needs` asks, whatever their state."""
    skilled = all(profile.skills.get(s, 0) >= level for s, level in needs.skills.items())
    return skilled and (not needs.language or speaks(profile.languages, needs.language))


@dataclass(frozen=True)
class Exclusion:
    agent_id: str
    filter: int
    detail: str


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


@dataclass(frozen=True)
class Ranking:
    """Eligible agents best first, and every agent the hard filters removed."""

    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]

    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def _enum_word(enum: EnumDescriptor, number: int) -> str:
    """ "PRESENCE_WRAP_UP" as "wrap_up", for explanations people read."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix).lower()


def exclusion(agent: AgentView, needs: Needs, declined: frozenset[str]) -> Exclusion | None:
    """The first hard filter `agent` fails for `needs`, or None when it is eligible."""
    aid = agent.agent_id
    if agent.status.presence != acd.PRESENCE_AVAILABLE:
        name = _enum_word(acd.Presence.DESCRIPTOR, agent.status.presence)
        return Exclusion(aid, acd.HARD_FILTER_PRESENCE, f"presence {name}")
    if agent.free(needs.media) <= 0:
        media = _enum_word(common.MediaType.DESCRIPTOR, needs.media)
        used, most = agent.in_use.get(needs.media, 0), agent.max_concurrent(needs.media)
        detail = f"{media} {used} of {most} in use"
        return Exclusion(aid, acd.HARD_FILTER_CAPACITY, detail)
    for skill, level in sorted(needs.skills.items()):
        has = agent.profile.skills.get(skill, 0)
        if has < level:
            detail = f"skill {skill} level {has} below {level}" if has else f"no skill {skill}"
            return Exclusion(aid, acd.HARD_FILTER_SKILL, detail)
    if needs.language and not speaks(agent.profile.languages, needs.language):
        return Exclusion(aid, acd.HARD_FILTER_LANGUAGE, f"does not speak {needs.language}")
    if aid in declined:
        return Exclusion(aid, acd.HARD_FILTER_DECLINED, "declined or let the offer time out")
    return None


def rank_agents(
    needs: Needs, agents: Iterable[AgentView], now: datetime, declined: frozenset[str] = frozenset()
) -> Ranking:
    """Filter `agents` for `needs` and rank the eligible ones, longest idle first."""
    eligible: list[tuple[float, AgentView]] = []
    excluded: list[Exclusion] = []
    for agent in sorted(agents, key=lambda a: a.agent_id):
        out = exclusion(agent, needs, declined)
        if out is not None:
            excluded.append(out)
            continue
        since = agent.status.idle_since()
        eligible.append((max(0.0, (now - since).total_seconds()) if since else 0.0, agent))
    # Longest idle first; the agent id breaks ties so the order never depends on input order.
    eligible.sort(key=lambda pair: (-pair[0], pair[1].agent_id))
    longest = eligible[0][0] if eligible else 0.0
    candidates = tuple(
        Candidate(
            agent_id=agent.agent_id,
            kind=agent.profile.kind,
            rank=i + 1,
            features=(Feature(LONGEST_IDLE, idle / longest if longest > 0 else 1.0, 1.0),),
        )
        for i, (idle, agent) in enumerate(eligible)
    )
    return Ranking(candidates, tuple(excluded))


# ---------------------------------------------------------------- explanation (proto)


def candidate_message(candidate: Candidate) -> acd.Candidate:
    return acd.Candidate(
        agent_id=candidate.agent_id,
        kind=candidate.kind,  # type: ignore[arg-type]
        rank=candidate.rank,
        score=candidate.score,
        features=[
            acd.FeatureScore(
                name=f.name, value=f.value, weight=f.weight, contribution=f.contribution
            )
            for f in candidate.features
        ],
    )


def explain(
    needs: Needs, ranking: Ranking, wait_seconds: int, max_candidates: int = 100
) -> acd.RoutingExplanation:
    """The explanation carried by Recommend and by every routing decision."""
    return acd.RoutingExplanation(
        queue=needs.queue,
        wait_seconds=wait_seconds,
        ring=acd.Ring(
            index=0,
            name=RING_NAME,
            required_skills=[
                common.SkillLevel(skill=s, level=lvl) for s, lvl in sorted(needs.skills.items())
            ],
        ),
        candidates=[candidate_message(c) for c in ranking.candidates[:max_candidates]],
        excluded=[
            acd.Exclusion(agent_id=e.agent_id, filter=e.filter, detail=e.detail)  # type: ignore[arg-type]
            for e in ranking.excluded[:MAX_EXCLUSIONS]
        ],
        excluded_count=len(ranking.excluded),
    )
