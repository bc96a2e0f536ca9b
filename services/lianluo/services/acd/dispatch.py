"""One tenant's routing state and how each fact changes it (pure, no I/O).

The owning replica loads a `TenantRouting` from the acd schema, applies one event or timer
tick, calls `dispatch`, then persists `changes` and publishes its decisions in one
transaction. Nothing here reads a clock or a database: time comes in as `now`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.domain import hours
from lianluo.domain.routing import DEFAULT_TENANT_POLICY, TenantPolicy
from lianluo.events.v1 import agent_pb2, routing_pb2
from lianluo.services.acd import matching, overflow
from lianluo.services.acd.agents import Customer, RingNeeds, ring_needs
from lianluo.services.acd.domain import (
    MAX_EXCLUSIONS,
    AgentProfile,
    AgentStatus,
    AgentView,
    Exclusion,
    Explanation,
    Needs,
    Ranking,
    needs_for,
    rank_agents,
)
from lianluo.services.acd.pool import AgentPool, WaitingLine
from lianluo.services.acd.state import (
    ABANDONED,
    ANSWERED,
    ENDED,
    ENTERED,
    RATED,
    Assignment,
    Changes,
    Contact,
    ContactLog,
    Decision,
    Explained,
    PendingOffer,
    PresenceLog,
    line_of,
    place,
    queue_order,
    stamp,
)
from lianluo.tenants.v1 import tenants_pb2 as pb

__all__ = ["Assignment", "Changes", "Contact", "PendingOffer", "TenantRouting", "queue_order"]

# Envelope types on routing.decision and agent.event (docs/events.md).
OFFER = "routing.offer"
ASSIGN = "routing.assign"
OFFER_DECLINED = "routing.offer_declined"
OFFER_TIMED_OUT = "routing.offer_timed_out"
OFFER_WITHDRAWN = "routing.offer_withdrawn"
OVERFLOW = overflow.OVERFLOW
WRAP_UP_DONE = "agent.wrap_up_done"
# Decisions carry the best few candidates and the first few exclusions (all are counted):
# explaining 100 excluded agents would cost more than the decision. Recommend shows 100.
DECISION_CANDIDATES = DECISION_EXCLUSIONS = overflow.DECISION_CANDIDATES


class TenantRouting:
    """A tenant's agents, waiting contacts, pending offers and assignments."""

    def __init__(
        self,
        tenant_id: str,
        *,
        profiles: Mapping[str, AgentProfile],
        statuses: dict[str, AgentStatus],
        contacts: dict[str, Contact],
        offers: dict[str, PendingOffer],
        assignments: list[Assignment],
        offer_timeout: timedelta,
        answer_grace: timedelta = timedelta(0),
        answered: Mapping[str, datetime] | None = None,
        policy: TenantPolicy = DEFAULT_TENANT_POLICY,
        queues: Mapping[str, pb.Queue] | None = None,
        business_hours: pb.BusinessHours | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.tenant_id = tenant_id
        # When new contacts are taken (domain.hours); unset is always open.
        self.hours = business_hours or pb.BusinessHours()
        # The tenant's queues by name: where overflows go.
        self.queues = dict(queues or {})
        # Whether anyone could ever take contacts of given needs (overflow.anyone_could).
        self.could: dict[tuple[object, ...], bool] = {}
        self.profiles = profiles
        self.statuses = statuses
        self.contacts = contacts
        self.offers = offers
        self.offer_timeout = offer_timeout
        # An answer recorded before expiry is on its way through agent.event; the offer waits
        # this long for it instead of timing out under the agent's click.
        self.answer_grace = answer_grace
        self.answered = dict(answered or {})
        self.policy = policy
        self._new_id = new_id
        self.changes = Changes()
        self.pool = AgentPool(profiles, statuses, policy.capacity_cost)
        # Interaction -> agent -> what they hold: looked up by interaction at every end.
        self.held: dict[str, dict[str, Assignment]] = {}
        for a in assignments:
            self.hold(a)
        for p in offers.values():
            self.pool.take(p.offer.agent_id, p.media)
        self.pool.touch_all()
        self.waiting = WaitingLine()
        for contact in contacts.values():
            if contact.in_line:
                self.waiting.add(line_of(contact), place(contact, policy))

    @property
    def assignments(self) -> list[Assignment]:
        return [a for per_agent in self.held.values() for a in per_agent.values()]

    def hold(self, assignment: Assignment) -> None:
        """The agent holds the interaction: its capacity is taken."""
        self.held.setdefault(assignment.interaction_id, {})[assignment.agent_id] = assignment
        self.pool.in_use.setdefault(assignment.agent_id, {})
        self.pool.take(assignment.agent_id, assignment.media)

    def begin(self, answered: Mapping[str, datetime]) -> None:
        """Start a new step on state kept from the last one: nothing changed yet."""
        self.changes = Changes()
        self.answered = dict(answered)

    # ------------------------------------------------------------------ views

    def status(self, agent_id: str) -> AgentStatus:
        return self.statuses.get(agent_id) or AgentStatus(agent_id)

    def agent_views(self) -> list[AgentView]:
        """Every configured agent with the capacity its interactions and offers take, by id."""
        return [self.pool.views[aid] for aid in self.pool.ids]

    def ring(self, contact: Contact, now: datetime) -> RingNeeds:
        policy = self.policy.queue(contact.needs.queue)
        index = policy.ring_at((now - contact.enqueued_at).total_seconds())
        found = contact.rings.get(index)
        if found is None:
            found = contact.rings[index] = ring_needs(contact.needs, policy, index)
        return found

    def rank(self, contact: Contact, now: datetime, best: int | None = None) -> Ranking:
        """The agents for a waiting contact, best first (all, or the `best` first); those who
        declined it are excluded."""
        if contact.customer is None:
            contact.customer = Customer.of(contact.requirements)
        ring = self.ring(contact, now)
        wait = (now - contact.enqueued_at).total_seconds()
        return self.recommend(
            contact.needs,
            contact.customer,
            ring,
            contact.declined,
            now,
            wait,
            DECISION_EXCLUSIONS,
            best,
        )

    def recommend(
        self,
        needs: Needs,
        customer: Customer,
        ring: RingNeeds,
        declined: set[str] | frozenset[str],
        now: datetime,
        wait_seconds: float = 0.0,
        exclusions: int = MAX_EXCLUSIONS,
        best: int | None = None,
    ) -> Ranking:
        """Rank the agents with room whose routing profile takes the queue by now (all, or the
        `best` first); those without room, and those the profile holds back, are counted and
        the first explained."""
        views = self.pool.free_views(needs.media)
        held: list[Exclusion] = []
        if self.policy.profiles:
            views, held = self._profiled(views, needs.queue, wait_seconds)
        ranking = rank_agents(
            needs,
            views,
            now,
            declined,
            policy=self.policy.queue(needs.queue),
            customer=customer,
            ring=ring,
            costs=self.policy.capacity_cost,
            exclusions=exclusions,
            best=best,
            with_room=True,
        )
        more, count = self.pool.unavailable_exclusions(ring, needs.media, exclusions)
        return ranking.with_excluded((held[:exclusions], more), len(held) + count, exclusions)

    def _profiled(
        self, views: list[AgentView], queue: str, wait_seconds: float
    ) -> tuple[list[AgentView], list[Exclusion]]:
        """The agents whose routing profile takes `queue` after `wait_seconds`, and why the
        others are held back."""
        kept: list[AgentView] = []
        held: list[Exclusion] = []
        for view in views:
            why = self.policy.held_back(view.profile.routing_profile, queue, wait_seconds)
            if why:
                held.append(Exclusion(view.agent_id, acd.HARD_FILTER_ROUTING_PROFILE, why))
            else:
                kept.append(view)
        return kept, held

    def next_deadline(self, now: datetime | None = None) -> datetime | None:
        """When a timer must next look at this tenant: an offer expiry, a max wait, or (given
        `now`) the next ring that widens for a contact still waiting without an offer."""
        times = [c.deadline for c in self.contacts.values()]
        times += [c.not_before for c in self.contacts.values() if c.not_before]
        times += [self._expiry(p) for p in self.offers.values()]
        if now is not None:
            for c in self.contacts.values():
                if not c.in_line:
                    continue
                # Rings widen, and routing profiles' delays pass: both may make a match.
                waits: list[float] = [
                    r.after_seconds for r in self.policy.queue(c.needs.queue).rings[1:]
                ]
                waits += sorted(self.policy.delays(c.needs.queue))
                ahead = [
                    at
                    for wait in waits
                    if now < (at := c.enqueued_at + timedelta(seconds=wait)) < c.deadline
                ]
                if ahead:
                    times.append(min(ahead))
        return min(times) if times else None

    def _expiry(self, pending: PendingOffer) -> datetime:
        expire = pending.offer.expire_time.ToDatetime(UTC)
        return expire + self.answer_grace if pending.offer.id in self.answered else expire

    # ------------------------------------------------------------------ facts

    def enqueue(
        self,
        interaction_id: str,
        requirements: common.RoutingRequirements,
        queue: pb.Queue | None,
        now: datetime,
        transferred_by: str = "",
        stay: bool = False,
    ) -> bool:
        """Queue a contact; False when it is already waiting, or assigned and not being
        transferred by an agent who holds it."""
        if interaction_id in self.contacts:
            return False
        holders = self.held.get(interaction_id)
        if holders and transferred_by not in holders:
            return False
        if queue is None:
            # Nobody can ever be eligible for a queue the tenant does not have; the customer
            # is not left waiting, the contact is kept as a message.
            self.decide(
                OVERFLOW,
                interaction_id,
                acd.RoutingExplanation(queue=requirements.queue),
                overflow=routing_pb2.RoutingOverflow(
                    cause=routing_pb2.OVERFLOW_CAUSE_NO_ELIGIBLE_AGENT,
                    overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
                ),
            )
            return True
        due = self._scheduled(requirements, now)
        contact = Contact(
            interaction_id=interaction_id,
            requirements=requirements,
            needs=needs_for(queue, requirements),
            enqueued_at=now,
            deadline=(due or now) + timedelta(seconds=queue.max_wait_seconds),
            overflow=queue.overflow,
            # Never offered back to the agent who hands it over.
            declined={transferred_by} if transferred_by else set(),
            transferred_by=transferred_by,
            stay=stay,
            not_before=due,
        )
        self.contacts[interaction_id] = contact
        self.changes.contacts.add(interaction_id)
        # Queued again (a transfer) after leaving the line in the same run of events.
        self.changes.removed_contacts.discard(interaction_id)
        if due is not None:
            # It enters its queue when due (overflow.call_back), as a callback overflow does.
            return True
        self.waiting.add(line_of(contact), place(contact, self.policy))
        self.log(contact, ENTERED, now)
        # A transfer is an agent's hand-over, taken whatever the hours; a new contact that
        # arrives while closed goes where the queue's overflow says, without waiting.
        if not transferred_by and hours.state(self.hours, now) != hours.OPEN:
            overflow.overflow(self, contact, routing_pb2.OVERFLOW_CAUSE_CLOSED, now)
        elif not overflow.anyone_could(self, contact):
            overflow.overflow(self, contact, routing_pb2.OVERFLOW_CAUSE_NO_ELIGIBLE_AGENT, now)
        return True

    def _scheduled(
        self, requirements: common.RoutingRequirements, now: datetime
    ) -> datetime | None:
        """When a scheduled callback is due, never before the tenant opens; None when the
        contact is not one, or is due already."""
        if not requirements.HasField("not_before"):
            return None
        due = requirements.not_before.ToDatetime(UTC)
        due = hours.next_open(self.hours, due) or due
        return due if due > now else None

    def set_presence(
        self, agent_id: str, presence: int, reason: str, limits: dict[int, int], now: datetime
    ) -> None:
        status = self.statuses.setdefault(agent_id, AgentStatus(agent_id))
        if presence != status.presence:
            status.change_time = now
            self.changes.presence_log.append(PresenceLog(agent_id, presence, now))
            if presence == acd.PRESENCE_AVAILABLE:
                status.last_idle_time = now
        status.presence = presence
        status.reason = reason
        status.limits = dict(limits)
        self.pool.touch(agent_id)
        self.changes.agents.add(agent_id)

    def answer(
        self, offer_id: str, agent_id: str, accept: bool, reason: str, now: datetime
    ) -> bool:
        """Apply an agent's answer; False when the offer is no longer pending for them."""
        pending = self.offers.get(offer_id)
        if pending is None or pending.offer.agent_id != agent_id:
            return False
        contact = self.contacts.get(pending.offer.interaction_id)
        if contact is None:
            return False
        if accept:
            self._close(pending, acd.OFFER_STATE_ACCEPTED, now)
            assignment = Assignment(contact.interaction_id, agent_id, pending.media, offer_id, now)
            self.hold(assignment)
            self.changes.assigned.append(assignment)
            self.changes.waits.append(now - contact.enqueued_at)
            self.statuses.setdefault(agent_id, AgentStatus(agent_id)).last_assign_time = now
            self.changes.agents.add(agent_id)
            self.log(contact, ANSWERED, now, agent_id)
            self.remove_contact(contact.interaction_id)
            # A transfer: the agent who handed it over leaves now, unless they stay.
            leaving = "" if contact.stay else contact.transferred_by
            if leaving:
                self._hand_back(contact.interaction_id, leaving, now)
            self.decide(
                ASSIGN,
                contact.interaction_id,
                pending.explained,
                assign=routing_pb2.RoutingAssign(
                    offer_id=offer_id,
                    agent_id=agent_id,
                    agent_kind=pending.offer.candidate.kind,
                    released_agent_id=leaving,
                ),
            )
        else:
            pending.offer.decline_reason = reason
            self._close(pending, acd.OFFER_STATE_DECLINED, now)
            self._back_to_waiting(contact, agent_id)
            self.decide(
                OFFER_DECLINED,
                contact.interaction_id,
                pending.explained,
                offer_declined=routing_pb2.RoutingOfferEnded(
                    offer_id=offer_id, agent_id=agent_id, reason=reason
                ),
            )
        return True

    def release(self, interaction_id: str, agent_id: str | None, now: datetime) -> list[Assignment]:
        """Free the capacity an interaction held (for every agent, or for one)."""
        holders = self.held.get(interaction_id, {})
        released = [a for a in holders.values() if agent_id in (None, a.agent_id)]
        for a in released:
            del holders[a.agent_id]
            # Assigned and released in one run of events: never stored, nothing to delete.
            fresh = next((i for i, b in enumerate(self.changes.assigned) if b is a), None)
            if fresh is None:
                self.changes.released.append(a)
            else:
                del self.changes.assigned[fresh]
            self.statuses.setdefault(a.agent_id, AgentStatus(a.agent_id)).last_idle_time = now
            self.pool.take(a.agent_id, a.media, -1)
            self.changes.agents.add(a.agent_id)
        if not holders:
            self.held.pop(interaction_id, None)
        return released

    def end_interaction(self, interaction_id: str, now: datetime) -> None:
        """The interaction ended: free its agents, or drop it from the queue (abandoned)."""
        self._hand_back(interaction_id, None, now)
        contact = self.contacts.get(interaction_id)
        if contact is not None:
            self.withdraw(contact, now)
            self.log(contact, ABANDONED, now)
            self.remove_contact(interaction_id)

    def rate(self, interaction_id: str, score: int, now: datetime) -> None:
        """The customer rated the conversation: kept for the reports' CSAT."""
        self.changes.contact_log.append(ContactLog(interaction_id, "", RATED, now, score=score))

    def _hand_back(self, interaction_id: str, agent_id: str | None, now: datetime) -> None:
        """An agent (or every agent, given None) is done with the interaction."""
        for a in self.release(interaction_id, agent_id, now):
            # No wrap-up phase yet: the end of the conversation ends the after-contact work.
            event = agent_pb2.AgentEvent(
                agent_id=a.agent_id,
                wrap_up_done=agent_pb2.AgentWrapUpDone(interaction_id=interaction_id),
            )
            self.changes.agent_events.append((WRAP_UP_DONE, event))
            self.changes.contact_log.append(ContactLog(interaction_id, "", ENDED, now, a.agent_id))

    def expire(self, now: datetime) -> None:
        """Queue due callbacks, overflow contacts past their queue's max wait, then time out
        expired offers."""
        overflow.call_back(self, now)
        due = [c for c in self.contacts.values() if c.deadline <= now]
        for contact in queue_order(due, self.policy):
            overflow.overflow(self, contact, routing_pb2.OVERFLOW_CAUSE_MAX_WAIT, now)
        for pending in list(self.offers.values()):
            if self._expiry(pending) > now:
                continue
            agent_id = pending.offer.agent_id
            self._close(pending, acd.OFFER_STATE_TIMED_OUT, now)
            waiting = self.contacts.get(pending.offer.interaction_id)
            if waiting is not None:
                self._back_to_waiting(waiting, agent_id)
            self.decide(
                OFFER_TIMED_OUT,
                pending.offer.interaction_id,
                pending.explained,
                offer_timed_out=routing_pb2.RoutingOfferEnded(
                    offer_id=pending.offer.id, agent_id=agent_id
                ),
            )

    # ------------------------------------------------------------------ decisions

    def dispatch(self, now: datetime) -> None:
        """Offer waiting contacts to agents with room until no eligible pair is left."""
        matching.dispatch(self, now)

    def offer(self, contact: Contact, agent_id: str, ranking: Ranking, now: datetime) -> None:
        index = ranking.index(agent_id)
        assert index is not None, "offers go only to ranked, hence eligible, agents"
        offer = acd.Offer(
            id=self._new_id(),
            tenant_id=self.tenant_id,
            interaction_id=contact.interaction_id,
            agent_id=agent_id,
            state=acd.OFFER_STATE_PENDING,
            requirements=contact.requirements,
            candidate=ranking.message(index),
            offer_time=stamp(now),
            expire_time=stamp(now + self.offer_timeout),
        )
        explanation = Explanation(
            contact.needs, ranking, contact.wait_seconds(now), DECISION_CANDIDATES
        )
        pending = PendingOffer(offer, contact.needs.media, explanation)
        self.offers[offer.id] = pending
        self.changes.offers[offer.id] = pending
        self.pool.take(agent_id, pending.media)
        self.waiting.remove(line_of(contact), place(contact, self.policy))
        contact.offer_id = offer.id
        self.changes.contacts.add(contact.interaction_id)
        self.decide(
            OFFER, contact.interaction_id, explanation, offer=routing_pb2.RoutingOffer(offer=offer)
        )

    # ------------------------------------------------------------------ helpers

    def decide(
        self,
        event_type: str,
        interaction_id: str,
        explanation: Explained,
        **case: Message,
    ) -> None:
        self.changes.decisions.append((event_type, Decision(interaction_id, explanation, case)))

    def log(self, contact: Contact, event: str, now: datetime, agent_id: str = "") -> None:
        entry = ContactLog(
            contact.interaction_id,
            contact.needs.queue,
            event,
            now,
            agent_id,
            contact.requirements.channel if event == ENTERED else 0,
        )
        self.changes.contact_log.append(entry)

    def _close(self, pending: PendingOffer, state: int, now: datetime) -> None:
        pending.offer.state = state  # type: ignore[assignment]
        pending.offer.close_time.CopyFrom(stamp(now))
        if self.offers.pop(pending.offer.id, None) is not None:
            self.pool.take(pending.offer.agent_id, pending.media, -1)
        self.changes.offers[pending.offer.id] = pending

    def _back_to_waiting(self, contact: Contact, agent_id: str) -> None:
        contact.declined.add(agent_id)
        contact.offer_id = None
        self.waiting.add(line_of(contact), place(contact, self.policy))
        self.changes.contacts.add(contact.interaction_id)

    def withdraw(self, contact: Contact, now: datetime) -> None:
        """Take the contact's pending offer back; the agent's desk is told (offer_withdrawn)."""
        if contact.offer_id is not None and contact.offer_id in self.offers:
            pending = self.offers[contact.offer_id]
            self._close(pending, acd.OFFER_STATE_WITHDRAWN, now)
            self.decide(
                OFFER_WITHDRAWN,
                contact.interaction_id,
                pending.explained,
                offer_withdrawn=routing_pb2.RoutingOfferEnded(
                    offer_id=pending.offer.id, agent_id=pending.offer.agent_id
                ),
            )
        contact.offer_id = None

    def remove_contact(self, interaction_id: str) -> None:
        contact = self.contacts.pop(interaction_id, None)
        if contact is not None:
            self.waiting.remove(line_of(contact), place(contact, self.policy))
        self.changes.contacts.discard(interaction_id)
        self.changes.removed_contacts.add(interaction_id)
