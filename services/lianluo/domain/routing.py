"""How a tenant wants its queues routed: weights, fairness, rings, aging, capacity costs (pure).

A policy comes from built-in defaults, then the platform's layer (the ACD's `routing_defaults`
setting), then the tenant's own (`Tenant.routing_policy`, set through UpdateTenant and read
from `tenant.config`), each layer overriding only what it names, and within a layer its
`default`, then its entry for the queue. The tenants service checks a tenant's layer with the
same rules before storing it, so the ACD never meets one it cannot read.

When no rings are configured they are derived from the queue, so a tenant that configures
nothing routes as before: one ring with the queue's requirements, then overflow.

Routing profiles (as in Amazon Connect) say which queues an agent takes, in which priority
and after which delay; an agent names one with the attribute "routing_profile". An agent
without one takes every queue the hard filters let it, all at priority 1 without delay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from itertools import pairwise
from typing import Any

from google.protobuf.json_format import MessageToDict

from lianluo.tenants.v1 import tenants_pb2 as pb

Layer = Mapping[str, Any]

MAX_RINGS = 6
LONGEST_IDLE = "longest_idle"
LOWEST_LOAD = "load"
FAIRNESS = (LONGEST_IDLE, LOWEST_LOAD)
# Aging off means priority always wins; a huge step keeps one ordering formula for both.
NO_AGING = 1e9


@dataclass(frozen=True)
class Weights:
    """How much each feature counts; features are 0 to 1, so a weight is its maximum share."""

    skill_fit: float = 0.2
    fairness: float = 1.0
    # Preferred agents count more than idle time: a returning customer's agent is worth a wait.
    affinity: float = 2.0
    profile_fit: float = 0.5
    handle_time: float = 0.1


@dataclass(frozen=True)
class RingRule:
    """From `after_seconds` of wait, what relaxes compared with the queue's requirements."""

    name: str
    after_seconds: int
    drop_skills: tuple[str, ...] = ()
    # Skill -> the highest level still required from this ring on.
    lower_skills: Mapping[str, int] = field(default_factory=dict)
    any_language: bool = False
    experts: bool = False


FIRST_RING = RingRule(name="queue", after_seconds=0)


@dataclass(frozen=True)
class QueuePolicy:
    """Everything the scoring and the queue order need for one queue."""

    weights: Weights = Weights()
    fairness: str = LONGEST_IDLE
    # Ring 0 first; each later ring's relaxations add to the earlier ones'.
    rings: tuple[RingRule, ...] = (FIRST_RING,)
    # A contact waiting this many seconds longer counts as one priority level higher.
    aging_seconds: float = 60.0
    # An agent without a handle-time figure is expected to take this long.
    reference_handle_seconds: float = 300.0
    # The queue's own required skills as the last ring leaves them: every contact of the
    # queue needs at least these, so an agent without them can skip the whole queue.
    floor_skills: Mapping[str, int] = field(default_factory=dict)
    # A callback overflow queues the contact again, as an outbound call, after this long.
    callback_after_seconds: float = 300.0

    def ring_at(self, wait_seconds: float) -> int:
        index = 0
        for i, ring in enumerate(self.rings):
            if ring.after_seconds <= wait_seconds:
                index = i
        return index

    def aging_step(self) -> float:
        return self.aging_seconds if self.aging_seconds > 0 else NO_AGING


DEFAULT_POLICY = QueuePolicy()


@dataclass(frozen=True)
class ProfileStep:
    """One queue of a routing profile: 1 is the highest priority; the delay is how long a
    contact must have waited before agents of the profile are offered it."""

    priority: int = 1
    delay_seconds: float = 0.0


ANY_QUEUE = ProfileStep()
# Profile name -> queue name -> step; a queue missing from a profile is not taken by its agents.
RoutingProfiles = Mapping[str, Mapping[str, ProfileStep]]


@dataclass(frozen=True)
class TenantPolicy:
    """A tenant's queue policies, routing profiles and the capacity cost of each media."""

    queues: Mapping[str, QueuePolicy] = field(default_factory=dict)
    default: QueuePolicy = DEFAULT_POLICY
    # Media -> the share of an agent's whole capacity one interaction takes (1 voice = 1.0,
    # 1 chat = 0.34). Media without a cost are limited only by their own max_concurrent.
    capacity_cost: Mapping[int, float] = field(default_factory=dict)
    profiles: RoutingProfiles = field(default_factory=dict)

    def queue(self, name: str) -> QueuePolicy:
        return self.queues.get(name, self.default)

    def step(self, profile: str, queue: str) -> ProfileStep | None:
        """How an agent of `profile` takes `queue`; None when it does not take it at all."""
        if not profile or profile not in self.profiles:
            return ANY_QUEUE
        return self.profiles[profile].get(queue)

    def held_back(self, profile: str, queue: str, wait_seconds: float) -> str:
        """Why an agent of `profile` may not take a contact of `queue` that has waited
        `wait_seconds`, in words; empty when it may."""
        step = self.step(profile, queue)
        if step is None:
            return f"routing profile {profile} does not take {queue}"
        if wait_seconds < step.delay_seconds:
            return f"routing profile {profile} takes {queue} after {step.delay_seconds:g} s"
        return ""

    def delays(self, queue: str) -> set[float]:
        """The delays the profiles give `queue`: when a contact's set of agents grows."""
        return {
            s.delay_seconds
            for p in self.profiles.values()
            if (s := p.get(queue)) is not None and s.delay_seconds > 0
        }


DEFAULT_TENANT_POLICY = TenantPolicy()


def derived_rings(queue: pb.Queue) -> tuple[RingRule, ...]:
    """Rings for a queue that configures none: its requirements, then experts when its
    overflow goes to them (from half the max wait, so they get a chance before overflow)."""
    if queue.overflow.kind == pb.OVERFLOW_KIND_EXPERTS:
        half = max(1, queue.max_wait_seconds // 2)
        return (FIRST_RING, RingRule(name="experts", after_seconds=half, experts=True))
    return (FIRST_RING,)


def _floor(queue: pb.Queue, policy: QueuePolicy) -> dict[str, int]:
    dropped = {s for r in policy.rings for s in r.drop_skills}
    floor: dict[str, int] = {}
    for s in queue.required_skills:
        if s.skill not in dropped:
            caps = [r.lower_skills[s.skill] for r in policy.rings if s.skill in r.lower_skills]
            floor[s.skill] = min([s.level, *caps])
    return floor


def _rings(specs: list[Mapping[str, Any]]) -> tuple[RingRule, ...]:
    rings = [FIRST_RING] + [
        RingRule(
            name=str(s.get("name", f"ring-{i + 1}")),
            after_seconds=int(s["after_seconds"]),
            drop_skills=tuple(s.get("drop_skills", ())),
            lower_skills={str(k): int(v) for k, v in dict(s.get("lower_skills", {})).items()},
            any_language=bool(s.get("any_language", False)),
            experts=bool(s.get("experts", False)),
        )
        for i, s in enumerate(specs)
    ]
    if len(rings) > MAX_RINGS:
        raise ValueError(f"at most {MAX_RINGS} rings, the queue's own included")
    if any(b.after_seconds <= a.after_seconds for a, b in pairwise(rings)):
        raise ValueError("rings must start at increasing waits after 0")
    return tuple(rings)


def overlay(base: QueuePolicy, spec: Mapping[str, Any]) -> QueuePolicy:
    """`base` with what `spec` (one layer of the setting) names."""
    out = base
    if "weights" in spec:
        weights = {str(k): float(v) for k, v in dict(spec["weights"]).items()}
        unknown = set(weights) - {f.name for f in fields(Weights)}
        if unknown:
            raise ValueError(f"unknown weights {sorted(unknown)}")
        # Scores add features of at most 1 times their weights; a negative or infinite weight
        # would make a worse match rank first or every score equal.
        if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
            raise ValueError("weights must be finite and not negative")
        out = replace(out, weights=replace(out.weights, **weights))
    if "fairness" in spec:
        if spec["fairness"] not in FAIRNESS:
            raise ValueError(f"fairness must be one of {FAIRNESS}")
        out = replace(out, fairness=spec["fairness"])
    if "rings" in spec:
        out = replace(out, rings=_rings(list(spec["rings"])))
    if "aging_seconds" in spec:
        aging = float(spec["aging_seconds"])
        if not (math.isfinite(aging) and aging >= 0):
            raise ValueError("aging_seconds must not be negative")
        out = replace(out, aging_seconds=aging)
    if "reference_handle_seconds" in spec:
        reference = float(spec["reference_handle_seconds"])
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError("reference_handle_seconds must be above 0")
        out = replace(out, reference_handle_seconds=reference)
    if "callback_after_seconds" in spec:
        after = float(spec["callback_after_seconds"])
        if after < 0:
            raise ValueError("callback_after_seconds must not be negative")
        out = replace(out, callback_after_seconds=after)
    return out


def routing_profiles(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, ProfileStep]]:
    """{profile: {queue: {"priority": 1.., "delay_seconds": 0..}}} read and checked."""
    out: dict[str, dict[str, ProfileStep]] = {}
    for name, queues in spec.items():
        steps: dict[str, ProfileStep] = {}
        for queue, step in dict(queues).items():
            unknown = set(step) - {"priority", "delay_seconds"}
            if unknown:
                raise ValueError(f"routing profile {name}: unknown keys {sorted(unknown)}")
            found = ProfileStep(int(step.get("priority", 1)), float(step.get("delay_seconds", 0)))
            if found.priority < 1 or found.delay_seconds < 0:
                raise ValueError(
                    f"routing profile {name}, queue {queue}: priority from 1, delay not negative"
                )
            steps[str(queue)] = found
        out[str(name)] = steps
    return out


def layer_of(policy: pb.RoutingPolicy) -> dict[str, Any]:
    """A tenant's `routing_policy` as a layer: the same keys as the platform's setting."""
    found = MessageToDict(policy, preserving_proto_field_name=True)
    layer: dict[str, Any] = {}
    if "defaults" in found:
        layer["default"] = found["defaults"]
    for key in ("queues", "capacity_cost"):
        if key in found:
            layer[key] = found[key]
    if "routing_profiles" in found:
        layer["routing_profiles"] = {
            name: profile.get("queues", {}) for name, profile in found["routing_profiles"].items()
        }
    return layer


def tenant_policy(layers: list[Layer], queues: list[pb.Queue]) -> TenantPolicy:
    """Resolve the layers (the platform's, then the tenant's) for a tenant's queues.

    A layer: {"default": spec, "queues": {name: spec}, "capacity_cost": {media number: cost},
    "routing_profiles": {name: {queue: step}}}, a spec being what `overlay` reads and a step
    what `routing_profiles` reads.
    """
    default = DEFAULT_POLICY
    costs: dict[int, float] = {}
    profiles: dict[str, dict[str, ProfileStep]] = {}
    for layer in layers:
        default = overlay(default, layer.get("default", {}))
        costs.update({int(k): float(v) for k, v in dict(layer.get("capacity_cost", {})).items()})
        profiles.update(routing_profiles(dict(layer.get("routing_profiles", {}))))
    resolved: dict[str, QueuePolicy] = {}
    for q in queues:
        policy = (
            replace(default, rings=derived_rings(q)) if default.rings == (FIRST_RING,) else default
        )
        for layer in layers:
            policy = overlay(policy, dict(layer.get("queues", {})).get(q.name, {}))
        resolved[q.name] = replace(policy, floor_skills=_floor(q, policy))
    return TenantPolicy(queues=resolved, default=default, capacity_cost=costs, profiles=profiles)


def check_layer(layer: Layer) -> None:
    """Resolve every part of a layer once; raises ValueError naming what breaks a rule."""
    unknown = set(layer) - {"default", "queues", "capacity_cost", "routing_profiles"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    overlay(DEFAULT_POLICY, layer.get("default", {}))
    for name, spec in dict(layer.get("queues", {})).items():
        try:
            overlay(DEFAULT_POLICY, spec)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"queue {name}: {error}") from error
    routing_profiles(dict(layer.get("routing_profiles", {})))
    for media, cost in dict(layer.get("capacity_cost", {})).items():
        if int(media) <= 0 or not 0 < float(cost) <= 1:
            raise ValueError("capacity_cost maps a media number to a cost above 0, at most 1")
