"""Agents and contacts as the hard filters see them, and the rings that relax them (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from google.protobuf.descriptor import EnumDescriptor

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import QueuePolicy
from lianluo.tenants.v1 import tenants_pb2 as pb

# Agent attribute with the agent's own average handle time, for the handle-time feature.
HANDLE_SECONDS_ATTRIBUTE = "aht_seconds"
# Agent attribute naming the routing profile (the queues the agent takes, by priority and delay).
ROUTING_PROFILE_ATTRIBUTE = "routing_profile"
# Words of the customer's "value" attribute; a number 0 to 1 is read as it is.
VALUE_WORDS = {"low": 0.0, "medium": 0.5, "high": 1.0, "vip": 1.0}
EPSILON = 1e-9


@dataclass(frozen=True)
class AgentProfile:
    """What the tenant configured for an agent (from the `agent` kind of tenant.config)."""

    agent_id: str
    kind: int
    skills: Mapping[str, int]
    languages: tuple[str, ...]
    capacity: Mapping[int, int]
    expertise: frozenset[str] = frozenset()
    sales_conversion: float = 0.0
    handle_seconds: float | None = None
    routing_profile: str = ""

    @classmethod
    def from_config(cls, agent: pb.Agent) -> AgentProfile:
        handle = agent.attributes.get(HANDLE_SECONDS_ATTRIBUTE, "")
        try:
            handle_seconds: float | None = float(handle) if float(handle) > 0 else None
        except ValueError:
            handle_seconds = None
        return cls(
            agent_id=agent.id,
            kind=agent.kind,
            skills={s.skill: s.level for s in agent.skills},
            languages=tuple(agent.languages),
            capacity={c.media: c.max_concurrent for c in agent.capacity},
            expertise=frozenset(agent.expertise),
            sales_conversion=min(1.0, max(0.0, agent.sales_conversion)),
            handle_seconds=handle_seconds,
            routing_profile=agent.attributes.get(ROUTING_PROFILE_ATTRIBUTE, ""),
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

    def load(self, costs: Mapping[int, float]) -> float:
        """Share of the agent's capacity in use, 0 to 1: by media costs when the tenant sets
        them, otherwise the fullest media."""
        if costs:
            return min(1.0, sum(n * costs.get(m, 0.0) for m, n in self.in_use.items()))
        ratios = [n / most for m, n in self.in_use.items() if (most := self.max_concurrent(m))]
        return min(1.0, max(ratios, default=0.0))

    def fits(self, media: int, costs: Mapping[int, float]) -> bool:
        """Room for one more interaction of `media`: its own limit, then the shared load."""
        if self.free(media) <= 0:
            return False
        cost = costs.get(media)
        return cost is None or self.load(costs) + cost <= 1.0 + EPSILON


@dataclass(frozen=True)
class Needs:
    """What a contact needs from the agent who takes it: queue's and request's together."""

    queue: str
    media: int
    skills: Mapping[str, int]
    language: str
    priority: int
    # A target (common.RoutingTarget): one named agent, or experts (with an expertise).
    agent_id: str = ""
    experts_only: bool = False
    expertise: str = ""


def needs_for(queue: pb.Queue, requirements: common.RoutingRequirements) -> Needs:
    """Merge a queue's rules with a request: every skill at the higher level asked.

    A target replaces the skills: a named agent was chosen by whoever transferred, and experts
    are not skilled in the contact center's skills; a named agent need not share the queue's
    language either (the transferring agent knows whom they ask).
    """
    target = requirements.target
    skills = {s.skill: s.level for s in queue.required_skills}
    for s in requirements.required_skills:
        skills[s.skill] = max(s.level, skills.get(s.skill, 0))
    language = requirements.language or queue.language
    if target.agent_id or target.experts:
        skills = {}
    return Needs(
        queue=queue.name,
        media=requirements.media or queue.media,
        skills=skills,
        language="" if target.agent_id else language,
        priority=requirements.priority or queue.priority,
        agent_id=target.agent_id,
        experts_only=target.experts and not target.agent_id,
        expertise=target.expertise if target.experts and not target.agent_id else "",
    )


@dataclass(frozen=True)
class Customer:
    """What the scoring reads about the customer behind a contact."""

    preferred: tuple[str, ...] = ()
    intent: str = ""
    intent_confidence: float = 0.0
    value: float | None = None

    @classmethod
    def of(cls, requirements: common.RoutingRequirements) -> Customer:
        word = requirements.customer_attributes.get("value", "").strip().lower()
        value = VALUE_WORDS.get(word)
        if value is None and word:
            try:
                value = min(1.0, max(0.0, float(word)))
            except ValueError:
                value = None
        return cls(
            preferred=tuple(dict.fromkeys(requirements.preferred_agent_ids)),
            intent=requirements.intent,
            # A chosen intent carries 1; an unset confidence is read as a choice too.
            intent_confidence=requirements.intent_confidence or 1.0,
            value=value,
        )


NOBODY = Customer()


@dataclass(frozen=True)
class RingNeeds:
    """The requirements in force in one ring, and what they relaxed."""

    index: int
    name: str
    from_wait: int
    until_wait: int
    skills: Mapping[str, int]
    language: str
    experts: bool
    relaxations: tuple[str, ...]
    # The contact's target, unchanged by rings.
    agent_id: str = ""
    experts_only: bool = False
    expertise: str = ""


def ring_needs(needs: Needs, policy: QueuePolicy, index: int) -> RingNeeds:
    """`needs` as ring `index` relaxes them; each ring keeps the earlier rings' relaxations."""
    rings = policy.rings[: index + 1]
    dropped = {s for r in rings for s in r.drop_skills}
    caps: dict[str, int] = {}
    for r in rings:
        for skill, level in r.lower_skills.items():
            caps[skill] = min(level, caps.get(skill, level))
    skills: dict[str, int] = {}
    words: list[str] = []
    for skill, level in sorted(needs.skills.items()):
        if skill in dropped:
            words.append(f"{skill} not required")
        elif skill in caps and caps[skill] < level:
            skills[skill] = caps[skill]
            words.append(f"{skill} level {level} to {caps[skill]}")
        else:
            skills[skill] = level
    any_language = any(r.any_language for r in rings)
    if any_language and needs.language:
        words.append(f"any language instead of {needs.language}")
    experts = any(r.experts for r in rings) or bool(needs.agent_id) or needs.experts_only
    if experts and not needs.agent_id:
        words.append("experts across the company")
    ring = policy.rings[index]
    later = policy.rings[index + 1 :]
    return RingNeeds(
        index=index,
        name=ring.name,
        from_wait=ring.after_seconds,
        until_wait=later[0].after_seconds if later else 0,
        skills=skills,
        language="" if any_language else needs.language,
        experts=experts,
        relaxations=tuple(words),
        agent_id=needs.agent_id,
        experts_only=needs.experts_only,
        expertise=needs.expertise,
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

    @cached_property
    def message(self) -> acd.Exclusion:
        """Built once: the pool keeps the exclusions of agents without room, and decisions
        explain the same ones again and again."""
        return acd.Exclusion(agent_id=self.agent_id, filter=self.filter, detail=self.detail)  # type: ignore[arg-type]


def _enum_word(enum: EnumDescriptor, number: int) -> str:
    """ "PRESENCE_WRAP_UP" as "wrap_up", for explanations people read."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix).lower()


def off_target(profile: AgentProfile, ring: RingNeeds) -> str:
    """How the agent misses the contact's target, in words; empty when it does not."""
    if ring.agent_id:
        return "" if profile.agent_id == ring.agent_id else "not the agent the transfer names"
    if ring.experts_only:
        if profile.kind != pb.AGENT_KIND_EXPERT:
            return "only experts take it"
        if ring.expertise and ring.expertise not in profile.expertise:
            return f"no expertise {ring.expertise}"
    return ""


def is_eligible(
    agent: AgentView,
    ring: RingNeeds,
    media: int,
    declined: frozenset[str] | set[str],
    costs: Mapping[int, float],
) -> bool:
    """`exclusion(...) is None` without the words: the hot path of both routing modes."""
    if agent.status.presence != acd.PRESENCE_AVAILABLE or not agent.fits(media, costs):
        return False
    return suits(agent, ring, declined)


def suits(agent: AgentView, ring: RingNeeds, declined: frozenset[str] | set[str]) -> bool:
    """`is_eligible` for an agent known to be available with room."""
    profile = agent.profile
    if (ring.agent_id or ring.experts_only) and off_target(profile, ring):
        return False
    if profile.kind == pb.AGENT_KIND_EXPERT and not ring.experts:
        return False
    skills = profile.skills
    for skill, level in ring.skills.items():
        if skills.get(skill, 0) < level:
            return False
    if ring.language and not speaks(profile.languages, ring.language):
        return False
    return agent.agent_id not in declined


def unavailable(agent: AgentView, media: int, costs: Mapping[int, float]) -> Exclusion | None:
    """The filter of presence or capacity `agent` fails, or None when it has room for `media`:
    the first two filters of `exclusion`, which no ring changes."""
    if agent.status.presence != acd.PRESENCE_AVAILABLE:
        name = _enum_word(acd.Presence.DESCRIPTOR, agent.status.presence)
        return Exclusion(agent.agent_id, acd.HARD_FILTER_PRESENCE, f"presence {name}")
    if not agent.fits(media, costs):
        word = _enum_word(common.MediaType.DESCRIPTOR, media)
        used, most = agent.in_use.get(media, 0), agent.max_concurrent(media)
        detail = f"{word} {used} of {most} in use"
        if used < most:
            detail += f", load {agent.load(costs):.2f} leaves no room"
        return Exclusion(agent.agent_id, acd.HARD_FILTER_CAPACITY, detail)
    return None


def exclusion(
    agent: AgentView,
    ring: RingNeeds,
    media: int,
    declined: frozenset[str] | set[str],
    costs: Mapping[int, float],
) -> Exclusion | None:
    """The first hard filter `agent` fails in `ring`, or None when it is eligible."""
    aid = agent.agent_id
    found = unavailable(agent, media, costs)
    if found is not None:
        return found
    missed = off_target(agent.profile, ring)
    if missed:
        return Exclusion(aid, acd.HARD_FILTER_TARGET, missed)
    if agent.profile.kind == pb.AGENT_KIND_EXPERT and not ring.experts:
        return Exclusion(aid, acd.HARD_FILTER_KIND, f"experts not reachable in ring {ring.name}")
    for skill, level in sorted(ring.skills.items()):
        has = agent.profile.skills.get(skill, 0)
        if has < level:
            detail = f"skill {skill} level {has} below {level}" if has else f"no skill {skill}"
            return Exclusion(aid, acd.HARD_FILTER_SKILL, detail)
    if ring.language and not speaks(agent.profile.languages, ring.language):
        return Exclusion(aid, acd.HARD_FILTER_LANGUAGE, f"does not speak {ring.language}")
    if aid in declined:
        return Exclusion(aid, acd.HARD_FILTER_DECLINED, "declined or let the offer time out")
    return None
