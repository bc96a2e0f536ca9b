"""Where a contact goes when its queue's max wait passes or nobody could ever take it (pure).

The queue's overflow says where: kept as a message (the interaction ends), another queue,
experts across the company, or a callback (the customer leaves a number and the contact
waits out of line, then enters its queue again as an outbound call). Each queue's overflow
is taken once per contact, so overflows never loop; one that cannot be carried out (no such
target queue, no number to call back, experts already tried) keeps the contact as a message.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from lianluo.common.v1 import common_pb2 as common
from lianluo.domain import hours
from lianluo.events.v1 import routing_pb2
from lianluo.services.acd.agents import needs_for, off_target, qualifies, ring_needs
from lianluo.services.acd.domain import Explanation
from lianluo.services.acd.state import ENTERED, OVERFLOWED, Contact, line_of, place, stamp
from lianluo.tenants.v1 import tenants_pb2 as pb

if TYPE_CHECKING:
    from lianluo.services.acd.dispatch import TenantRouting

OVERFLOW = "routing.overflow"
# Decisions carry the best few candidates and the first few exclusions (all are counted).
DECISION_CANDIDATES = 10
# A flow may collect the number to call back under this variable.
CALLBACK_VARIABLE = "callback_number"


def callback_number(requirements: common.RoutingRequirements) -> str:
    return requirements.callback_number or requirements.collected_data.get(CALLBACK_VARIABLE, "")


def overflow(r: TenantRouting, contact: Contact, cause: int, now: datetime) -> None:
    """Carry out the overflow of the contact's queue, and publish it as a decision."""
    queue = contact.needs.queue
    kind = contact.overflow.kind
    target = r.queues.get(contact.overflow.target_queue) if kind == pb.OVERFLOW_KIND_QUEUE else None
    number = callback_number(contact.requirements)
    if (
        queue in contact.overflowed_from
        or (kind == pb.OVERFLOW_KIND_QUEUE and (target is None or target.name == queue))
        or (kind == pb.OVERFLOW_KIND_CALLBACK and not number)
        or (kind == pb.OVERFLOW_KIND_EXPERTS and contact.needs.experts_only)
        or kind == pb.OVERFLOW_KIND_UNSPECIFIED
    ):
        kind = pb.OVERFLOW_KIND_MESSAGE
    # The explanation shows why nobody took it in the ring it reached.
    ranking = r.rank(contact, now, DECISION_CANDIDATES)
    explanation = Explanation(
        contact.needs, ranking, contact.wait_seconds(now), DECISION_CANDIDATES
    )
    r.withdraw(contact, now)
    done = routing_pb2.RoutingOverflow(cause=cause, overflow=pb.Overflow(kind=kind))  # type: ignore[arg-type]
    if kind != pb.OVERFLOW_KIND_EXPERTS:
        r.log(contact, OVERFLOWED, now)
    if kind == pb.OVERFLOW_KIND_MESSAGE:
        r.remove_contact(contact.interaction_id)
    else:
        contact.overflowed_from = (*contact.overflowed_from, queue)
        if kind == pb.OVERFLOW_KIND_QUEUE:
            assert target is not None
            done.overflow.target_queue = target.name
            move(r, contact, target, now, entered=True)
        elif kind == pb.OVERFLOW_KIND_EXPERTS:
            # Universal service: the same queue, now for experts anywhere in the company.
            contact.requirements.target.experts = True
            move(r, contact, r.queues[queue], now, entered=False)
        else:
            policy = r.policy.queue(queue)
            due = now + timedelta(seconds=policy.callback_after_seconds)
            # Nobody would answer the call before the tenant opens.
            due = max(due, hours.next_open(r.hours, due) or due)
            contact.requirements.callback_number = number
            contact.requirements.media = common.MEDIA_TYPE_VOICE
            move(r, contact, r.queues[queue], now, entered=False, not_before=due)
            done.callback_time.CopyFrom(stamp(due))
            done.callback_number = number
    r.decide(OVERFLOW, contact.interaction_id, explanation, overflow=done)


def move(
    r: TenantRouting,
    contact: Contact,
    queue: pb.Queue,
    now: datetime,
    *,
    entered: bool,
    not_before: datetime | None = None,
) -> None:
    """Put the contact in `queue` with needs, deadline and overflow of that queue; a contact
    that `entered` it starts its wait there (it counts as entering the queue)."""
    r.waiting.remove(line_of(contact), place(contact, r.policy))
    contact.requirements.queue = queue.name
    contact.needs = needs_for(queue, contact.requirements)
    contact.rings.clear()
    contact.customer = None
    if entered:
        contact.enqueued_at = now
        r.log(contact, ENTERED, now)
    contact.not_before = not_before
    contact.deadline = (not_before or now) + timedelta(seconds=queue.max_wait_seconds)
    contact.overflow = queue.overflow
    if contact.in_line:
        r.waiting.add(line_of(contact), place(contact, r.policy))
    r.changes.contacts.add(contact.interaction_id)


def call_back(r: TenantRouting, now: datetime) -> None:
    """Callbacks that are due enter their queue again, as outbound calls."""
    for contact in [c for c in r.contacts.values() if c.not_before and c.not_before <= now]:
        contact.not_before = None
        contact.enqueued_at = now
        r.log(contact, ENTERED, now)
        r.waiting.add(line_of(contact), place(contact, r.policy))
        r.changes.contacts.add(contact.interaction_id)


def anyone_could(r: TenantRouting, contact: Contact) -> bool:
    """Whether any configured agent could take the contact once its last ring is reached,
    whatever their presence and load now: if nobody could, waiting is pointless."""
    needs = contact.needs
    policy = r.policy.queue(needs.queue)
    ring = ring_needs(needs, policy, len(policy.rings) - 1)
    skills = tuple(sorted(ring.skills.items()))
    key: tuple[object, ...] = (needs.queue, needs.media, skills, ring.language, ring.experts)
    key += (ring.agent_id, ring.experts_only, ring.expertise)
    found = r.could.get(key)
    if found is None:
        relaxed = replace(needs, skills=ring.skills, language=ring.language)
        found = r.could[key] = any(
            view.profile.capacity.get(needs.media, 0) > 0
            and not off_target(view.profile, ring)
            and (ring.experts or view.profile.kind != pb.AGENT_KIND_EXPERT)
            and qualifies(view.profile, relaxed)
            and r.policy.step(view.profile.routing_profile, needs.queue) is not None
            for view in r.pool.views.values()
        )
    return found
