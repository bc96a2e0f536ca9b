"""Erlang C staffing (pure): the chance to wait, service level and ASA for N agents."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_AGENTS = 10_000


@dataclass(frozen=True)
class Staffing:
    traffic_erlangs: float
    agents: int
    wait_probability: float
    service_level: float  # 0 to 1
    asa_seconds: float


def wait_probability(traffic: float, agents: int) -> float:
    """Erlang C: the chance an arrival waits, with `traffic` erlangs offered to `agents`.

    Computed through the Erlang B recurrence, which stays stable where A^N / N! overflows.
    """
    if agents <= traffic:
        return 1.0
    blocking = 1.0
    for k in range(1, agents + 1):
        blocking = traffic * blocking / (k + traffic * blocking)
    return agents * blocking / (agents - traffic * (1 - blocking))


def staffing(traffic: float, agents: int, aht: float, threshold: float) -> Staffing:
    """Erlang C figures for `agents` at `traffic` erlangs, AHT and a service-level threshold."""
    pw = wait_probability(traffic, agents)
    if agents <= traffic:
        return Staffing(traffic, agents, 1.0, 0.0, math.inf)
    spare = agents - traffic
    level = 1.0 - pw * math.exp(-spare * threshold / aht)
    return Staffing(traffic, agents, pw, level, pw * aht / spare)


def agents_needed(
    arrivals_per_second: float, aht: float, threshold: float, target: float
) -> Staffing | None:
    """The fewest agents whose expected service level reaches `target` (0 to 1)."""
    if arrivals_per_second <= 0 or aht <= 0:
        return None
    traffic = arrivals_per_second * aht
    agents = max(1, math.floor(traffic) + 1)
    while agents <= MAX_AGENTS:
        found = staffing(traffic, agents, aht, threshold)
        if found.service_level >= target:
            return found
        agents += 1
    return None
