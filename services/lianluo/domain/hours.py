"""When a tenant is open: weekly windows and holidays in the tenant's time zone (pure).

The tenants service checks `BusinessHours` with `problems` before storing it; the IVR tells
flows `state` at a run's start, and the ACD asks `state` when a contact arrives and
`next_open` to dial a callback once the tenant opens.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lianluo.tenants.v1 import tenants_pb2 as pb

# The variable an IVR flow reads the state from: OPEN, CLOSED or HOLIDAY.
VARIABLE = "business_hours"
OPEN = "open"
CLOSED = "closed"
HOLIDAY = "holiday"
CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
MAX_WINDOWS = 70
MAX_HOLIDAYS = 400
# Far enough to pass a long run of holidays; a tenant closed longer never opens by itself.
LOOK_AHEAD_DAYS = 400


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def problems(hours: pb.BusinessHours, path: str) -> list[tuple[str, str]]:
    """What breaks a rule, as (field path, message) pairs; empty when the hours are valid."""
    found: list[tuple[str, str]] = []
    if not hours.time_zone:
        found.append((f"{path}.time_zone", "must be set, for example Asia/Shanghai"))
    else:
        try:
            ZoneInfo(hours.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            found.append((f"{path}.time_zone", f"{hours.time_zone!r} is not an IANA time zone"))
    if len(hours.weekly) > MAX_WINDOWS:
        found.append((f"{path}.weekly", f"at most {MAX_WINDOWS} windows"))
    for i, w in enumerate(hours.weekly):
        at = f"{path}.weekly[{i}]"
        if not 1 <= w.day <= 7:
            found.append((f"{at}.day", "must be 1 (Monday) to 7 (Sunday)"))
        clocks = [(name, getattr(w, name)) for name in ("opens", "closes")]
        bad = [name for name, clock in clocks if not CLOCK.fullmatch(clock)]
        found.extend((f"{at}.{name}", "must be HH:MM, 00:00 to 24:00") for name in bad)
        if not bad and _minutes(w.closes) <= _minutes(w.opens):
            found.append((f"{at}.closes", "must be after opens"))
    if len(hours.holidays) > MAX_HOLIDAYS:
        found.append((f"{path}.holidays", f"at most {MAX_HOLIDAYS} dates"))
    for i, h in enumerate(hours.holidays):
        try:
            date.fromisoformat(h.date)
            ok = len(h.date) == 10
        except ValueError:
            ok = False
        if not ok:
            found.append((f"{path}.holidays[{i}].date", "must be a date as YYYY-MM-DD"))
        if len(h.name) > 200:
            found.append((f"{path}.holidays[{i}].name", "at most 200 characters"))
    return found


def _holidays(hours: pb.BusinessHours) -> set[str]:
    return {h.date for h in hours.holidays}


def state(hours: pb.BusinessHours, at: datetime) -> str:
    """OPEN, CLOSED or HOLIDAY at the aware instant `at`; hours without weekly windows are
    always open (except on holidays)."""
    if not hours.time_zone:
        return OPEN
    local = at.astimezone(ZoneInfo(hours.time_zone))
    if local.date().isoformat() in _holidays(hours):
        return HOLIDAY
    if not hours.weekly:
        return OPEN
    minute = local.hour * 60 + local.minute
    for w in hours.weekly:
        if w.day == local.isoweekday() and _minutes(w.opens) <= minute < _minutes(w.closes):
            return OPEN
    return CLOSED


def next_open(hours: pb.BusinessHours, at: datetime) -> datetime | None:
    """The first instant from `at` on when the tenant is open (`at` itself when open); None
    when it does not open within LOOK_AHEAD_DAYS."""
    if state(hours, at) == OPEN:
        return at
    zone = ZoneInfo(hours.time_zone)
    local = at.astimezone(zone)
    holidays = _holidays(hours)
    for days in range(LOOK_AHEAD_DAYS + 1):
        day = local.date() + timedelta(days=days)
        if day.isoformat() in holidays:
            continue
        starts = sorted(
            _minutes(w.opens)
            for w in hours.weekly
            if w.day == day.isoweekday() and _minutes(w.opens) < _minutes(w.closes)
        )
        if not hours.weekly:
            starts = [0]
        for start in starts:
            opening = datetime.combine(day, time(start // 60, start % 60), tzinfo=zone)
            if opening > local:
                return opening
    return None
