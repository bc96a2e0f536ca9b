"""The ACD's routing figures: each offer and its outcome counted once, and the wait from queue
entry to acceptance (no I/O: the figures are read from the process's registry)."""

from __future__ import annotations

from datetime import timedelta

from acd_builders import T0, available, profile, queue, request, routing
from prometheus_client import REGISTRY

from lianluo.services.acd import metrics
from lianluo.services.acd.dispatch import TenantRouting


def _figures() -> dict[str, float]:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return {
        "offers": value("lianluo_acd_offers_total"),
        **{
            outcome: value("lianluo_acd_offer_outcomes_total", outcome=outcome)
            for outcome in ("accepted", "declined", "timed_out", "withdrawn")
        },
        "overflows": value("lianluo_acd_overflows_total"),
        "assigned": value("lianluo_acd_time_to_assignment_seconds_count"),
        "waited": value("lianluo_acd_time_to_assignment_seconds_sum"),
        "within_20s": value("lianluo_acd_time_to_assignment_seconds_bucket", le="20.0"),
    }


def _saved(r: TenantRouting) -> None:
    """What the router does when it saves a step: count it; the next step starts afresh."""
    metrics.count_step(r.changes)
    r.begin({})


def test_offers_and_their_outcomes_are_counted_once_with_the_wait_to_acceptance() -> None:
    before = _figures()
    r = routing(
        {
            "a": (profile("a"), available("a", T0 + timedelta(seconds=5))),
            "b": (profile("b"), available("b", T0)),
            "c": (profile("c"), available("c", T0 + timedelta(seconds=7))),
        },
        timeout=10,
    )
    entered = T0 + timedelta(seconds=10)
    r.enqueue("i1", request(), queue(), entered)
    r.dispatch(entered)  # to b, idle the longest
    _saved(r)
    declined = entered + timedelta(seconds=4)
    assert r.answer("offer-1", "b", False, "on a break", declined)
    r.dispatch(declined)  # then to a
    _saved(r)
    timed_out = declined + timedelta(seconds=10)
    r.expire(timed_out)
    r.dispatch(timed_out)  # a never answered: to c
    _saved(r)
    accepted = timed_out + timedelta(seconds=3)
    assert r.answer("offer-3", "c", True, "", accepted)
    _saved(r)

    after = _figures()
    moved = {k: after[k] - before[k] for k in after}
    assert moved["offers"] == 3
    assert (moved["declined"], moved["timed_out"], moved["accepted"]) == (1, 1, 1)
    assert (moved["withdrawn"], moved["overflows"]) == (0, 0)
    # From the entry into the queue to the acceptance: 4 + 10 + 3 seconds.
    assert moved["assigned"] == 1
    assert moved["waited"] == 17
    assert moved["within_20s"] == 1
