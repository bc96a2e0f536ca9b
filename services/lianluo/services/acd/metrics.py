"""The ACD's routing figures for Prometheus (the runtime's endpoint serves them).

They are counted when the owning replica saves a step: a step whose transaction then fails is
applied again and counted again, which a consumer's retry after an outage makes rare.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from lianluo.services.acd.dispatch import (
    ASSIGN,
    OFFER,
    OFFER_DECLINED,
    OFFER_TIMED_OUT,
    OFFER_WITHDRAWN,
    OVERFLOW,
)
from lianluo.services.acd.state import Changes

# A contact waits seconds to minutes; past an hour it is +Inf.
WAIT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

OFFERS = Counter("lianluo_acd_offers", "Offers of a contact made to an agent")
OFFER_OUTCOMES = Counter(
    "lianluo_acd_offer_outcomes",
    "Offers that ended, by outcome: accepted, declined, timed_out or withdrawn",
    ["outcome"],
)
OVERFLOWS = Counter(
    "lianluo_acd_overflows", "Contacts sent where their queue's overflow says (any cause)"
)
TIME_TO_ASSIGNMENT = Histogram(
    "lianluo_acd_time_to_assignment_seconds",
    "From a contact's entry into the queue that answered it to an agent's acceptance",
    buckets=WAIT_BUCKETS,
)
_OUTCOMES = {
    ASSIGN: "accepted",
    OFFER_DECLINED: "declined",
    OFFER_TIMED_OUT: "timed_out",
    OFFER_WITHDRAWN: "withdrawn",
}
for _outcome in _OUTCOMES.values():
    # Every outcome's series exists from 0, so that a rate sees its first occurrence.
    OFFER_OUTCOMES.labels(_outcome)


def count_step(changes: Changes) -> None:
    """Count the decisions and assignments of one saved step."""
    for event_type, _ in changes.decisions:
        if event_type == OFFER:
            OFFERS.inc()
        elif event_type == OVERFLOW:
            OVERFLOWS.inc()
        elif (outcome := _OUTCOMES.get(event_type)) is not None:
            OFFER_OUTCOMES.labels(outcome).inc()
    for wait in changes.waits:
        TIME_TO_ASSIGNMENT.observe(wait.total_seconds())
