"""Surge: how many seats a tenant works with now, and how many replicas a cell's seats need. Pure.

A Tenant declares its `seats` (its team) and a `standby` pool: more seats called in during the
windows of its `schedule`, or `target` of them at once. A cell's services scale with the seats
of the tenants placed in it: the operator writes their sum on the Cell (`spec.seats`) and the
template gives each service the replicas those seats need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Seats:
    """A tenant's seats now: its own, plus the standby seats called in, and why."""

    active: int
    standby: int
    reason: str

    def as_status(self) -> dict[str, Any]:
        return {"active": self.active, "standby": self.standby, "reason": self.reason}


def _when(value: str) -> datetime:
    # The API server checked the format (date-time); Python reads RFC 3339 with a "Z" too.
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def window_problems(spec: Mapping[str, Any]) -> list[str]:
    """What the API server's schema cannot refuse: a window that ends before it starts, a
    target past the pool."""
    standby = spec.get("standby") or {}
    problems = [
        f"standby.schedule[{i}] ends at {w['end']}, not after its start {w['start']}"
        for i, w in enumerate(standby.get("schedule") or [])
        if _when(w["end"]) <= _when(w["start"])
    ]
    if int(standby.get("target", 0)) > int(standby.get("seats", 0)):
        problems.append(
            f"standby.target {standby['target']} is more than the pool's {standby['seats']} seats"
        )
    return problems


def seats_at(spec: Mapping[str, Any], now: datetime) -> Seats:
    """The seats a tenant works with at `now` (a tenant that declares none counts none)."""
    own = int(spec.get("seats", 0))
    standby = spec.get("standby") or {}
    pool = int(standby.get("seats", 0))
    for window in standby.get("schedule") or []:
        start, end = _when(window["start"]), _when(window["end"])
        if start <= now < end:
            return Seats(own + pool, pool, f"scheduled until {window['end']}")
    target = min(int(standby.get("target", 0)), pool)
    if target:
        return Seats(own + target, target, f"target of {target} standby seats")
    return Seats(own, 0, "own seats")


def replicas_for(seats: int, seats_per_replica: int, base: int) -> int:
    """A service's replicas for a cell's seats: never fewer than the cell's own setting."""
    return max(base, math.ceil(seats / seats_per_replica)) if seats else base
