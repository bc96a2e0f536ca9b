"""The records of one tenant's routing state and of what one step changed (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain.routing import DEFAULT_TENANT_POLICY, TenantPolicy
from lianluo.events.v1 import agent_pb2, routing_pb2
from lianluo.services.acd.agents import Customer, Needs, RingNeeds
from lianluo.services.acd.domain import Explanation
from lianluo.services.acd.pool import Line, Place, queue_key
from lianluo.tenants.v1 import tenants_pb2 as pb

# What happened to a contact, for the queue figures (stats.py).
ENTERED, ANSWERED, ABANDONED, OVERFLOWED, ENDED, RATED = (
    "entered",
    "answered",
    "abandoned",
    "overflowed",
    "ended",
    "rated",
)


ZERO = timedelta(0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    if moment.utcoffset() == ZERO:
        # What FromDatetime gives, without its time tuple: each offer takes two stamps.
        seconds = (moment - EPOCH) // SECOND
        return timestamp_pb2.Timestamp(seconds=seconds, nanos=moment.microsecond * 1000)
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


@dataclass
class Contact:
    """A waiting interaction; its needs and deadline are fixed when it enters a queue, and
    change only when it overflows."""

    interaction_id: str
    requirements: common.RoutingRequirements
    needs: Needs
    enqueued_at: datetime
    deadline: datetime
    overflow: pb.Overflow
    declined: set[str] = field(default_factory=set)
    offer_id: str | None = None
    # A callback waits out of line until then; it is not offered before.
    not_before: datetime | None = None
    # The queues whose overflow it took already: each is taken once, so overflows never loop.
    overflowed_from: tuple[str, ...] = ()
    # The agent who transferred it and still holds it, and whether they stay once another
    # agent accepts.
    transferred_by: str = ""
    stay: bool = False
    # Derived once: the ring requirements by ring index, and the customer the scoring reads.
    rings: dict[int, RingNeeds] = field(default_factory=dict, repr=False, compare=False)
    customer: Customer | None = field(default=None, repr=False, compare=False)

    def wait_seconds(self, now: datetime) -> int:
        return max(0, int((now - self.enqueued_at).total_seconds()))

    @property
    def in_line(self) -> bool:
        """Waiting to be offered: no pending offer, and not a callback that is not due yet."""
        return self.offer_id is None and self.not_before is None


# An explanation as decided, or as loaded with a pending offer (then already a message).
Explained = Explanation | acd.RoutingExplanation


def explanation_message(explained: Explained) -> acd.RoutingExplanation:
    return explained if isinstance(explained, acd.RoutingExplanation) else explained.message


@dataclass
class PendingOffer:
    offer: acd.Offer
    media: int
    explained: Explained

    @property
    def explanation(self) -> acd.RoutingExplanation:
        # Once built, the message replaces the ranking it came from: pending offers stay in
        # memory between steps, and a ranking holds every candidate.
        message = self.explained = explanation_message(self.explained)
        return message


@dataclass(frozen=True)
class Decision:
    """A decision on routing.decision as made; its message, with the explanation, is built
    when it is published."""

    interaction_id: str
    explained: Explained
    # The decision's one case (offer=, assign=, ...), built when the decision is made: an
    # offer's state changes afterwards, the message must carry it as it was.
    case: Mapping[str, Message]

    def message(self) -> routing_pb2.RoutingDecision:
        return routing_pb2.RoutingDecision(
            interaction_id=self.interaction_id,
            explanation=explanation_message(self.explained),
            **self.case,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Assignment:
    interaction_id: str
    agent_id: str
    media: int
    offer_id: str
    assigned_at: datetime


@dataclass
class Changes:
    """What one step (or one run of events) changed, for the repository to save, the outbox
    to publish and the routing figures to count: net of what the same step undid."""

    agents: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)
    removed_contacts: set[str] = field(default_factory=set)
    offers: dict[str, PendingOffer] = field(default_factory=dict)
    assigned: list[Assignment] = field(default_factory=list)
    released: list[Assignment] = field(default_factory=list)
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    agent_events: list[tuple[str, agent_pb2.AgentEvent]] = field(default_factory=list)
    contact_log: list[ContactLog] = field(default_factory=list)
    presence_log: list[PresenceLog] = field(default_factory=list)
    # How long each contact assigned in the step waited in the queue that answered it.
    waits: list[timedelta] = field(default_factory=list)

    def messages(self) -> list[tuple[str, routing_pb2.RoutingDecision]]:
        """The decisions as published, in the order they were made."""
        return [(event_type, d.message()) for event_type, d in self.decisions]


@dataclass(frozen=True)
class ContactLog:
    """One step in a contact's life in a queue, kept for the queue figures."""

    interaction_id: str
    queue: str
    event: str
    at: datetime
    agent_id: str = ""
    # The channel the contact came by (common.Channel), on its entry.
    channel: int = 0
    # The customer's rating, 1 to 5, on a "rated" step.
    score: int = 0


@dataclass(frozen=True)
class PresenceLog:
    """An agent's presence from `at` on, kept for occupancy."""

    agent_id: str
    presence: int
    at: datetime


def line_of(contact: Contact) -> Line:
    needs = contact.needs
    return (needs.media, needs.queue, bool(needs.agent_id or needs.experts_only))


def place(contact: Contact, policy: TenantPolicy) -> Place:
    """Where a contact stands in queue order: priority with aging, then first come."""
    step = policy.queue(contact.needs.queue).aging_step()
    return (queue_key(contact.enqueued_at, contact.needs.priority, step), contact.interaction_id)


def queue_order(
    contacts: Iterable[Contact], policy: TenantPolicy = DEFAULT_TENANT_POLICY
) -> list[Contact]:
    """Highest priority first, then first come first served; waiting raises priority."""
    return sorted(contacts, key=lambda c: place(c, policy))
