"""When a notice may reach a customer (pure): the due time of a scheduled notice, quiet hours,
and the tenant's notice policy, in the customer's own time zone.

The tenants service checks a `NoticePolicy` with `problems` before storing it; the
notification service asks `due_time` when a business event names a date, and `quiet_until`
when a notice is about to go out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lianluo.tenants.v1 import tenants_pb2 as pb

CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
DEFAULT_SEND_TIME = "09:00"
DEFAULT_PER_DAY = 10
DEFAULT_DEDUPE_HOURS = 24
MAX_PER_DAY = 1000
MAX_DEDUPE_HOURS = 24 * 30


@dataclass(frozen=True)
class Quiet:
    """Quiet hours as minutes after local midnight; `end` before `start` spans midnight."""

    start: int
    end: int


def zone(name: str) -> tzinfo | None:
    """The IANA zone `name`, or None when it is empty or unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _minutes(clock: str) -> int | None:
    match = CLOCK.fullmatch(clock)
    return None if match is None else int(match.group(1)) * 60 + int(match.group(2))


def quiet_of(start: str, end: str) -> Quiet | None:
    """Quiet hours from two clock times; None when either is not HH:MM or they are equal."""
    a, b = _minutes(start), _minutes(end)
    if a is None or b is None or a == b:
        return None
    return Quiet(a, b)


def parse_quiet(text: str) -> Quiet | None:
    """A customer's own quiet hours, "HH:MM-HH:MM"; None when absent or not in that form."""
    start, dash, end = text.strip().partition("-")
    return quiet_of(start.strip(), end.strip()) if dash else None


def problems(policy: pb.NoticePolicy, path: str) -> list[tuple[str, str]]:
    """What is wrong with a policy, as (field path, message) pairs."""
    found: list[tuple[str, str]] = []
    if policy.time_zone and zone(policy.time_zone) is None:
        found.append((f"{path}.time_zone", f"{policy.time_zone!r} is not an IANA time zone"))
    q = policy.quiet_hours
    if q.start or q.end:
        for name in ("start", "end"):
            if _minutes(getattr(q, name)) is None:
                found.append((f"{path}.quiet_hours.{name}", "must be HH:MM, 00:00 to 23:59"))
        if q.start == q.end and _minutes(q.start) is not None:
            found.append((f"{path}.quiet_hours.end", "must differ from start"))
    if not 0 <= policy.max_per_customer_per_day <= MAX_PER_DAY:
        found.append((f"{path}.max_per_customer_per_day", f"0 (10) to {MAX_PER_DAY}"))
    if not 0 <= policy.dedupe_hours <= MAX_DEDUPE_HOURS:
        found.append((f"{path}.dedupe_hours", f"0 (24) to {MAX_DEDUPE_HOURS}"))
    return found


@dataclass(frozen=True)
class Limits:
    """A tenant's policy with its defaults filled in."""

    time_zone: tzinfo
    quiet: Quiet | None
    per_day: int
    dedupe: timedelta


def limits(policy: pb.NoticePolicy | None) -> Limits:
    p = policy or pb.NoticePolicy()
    return Limits(
        zone(p.time_zone) or UTC,
        quiet_of(p.quiet_hours.start, p.quiet_hours.end),
        p.max_per_customer_per_day or DEFAULT_PER_DAY,
        timedelta(hours=p.dedupe_hours or DEFAULT_DEDUPE_HOURS),
    )


def customer_zone(own: str, tenant: Limits) -> tzinfo:
    """The customer's own zone when they name a valid one, else the tenant's."""
    return zone(own) or tenant.time_zone


def due_time(value: str, days_before: int, send_time: str, where: tzinfo) -> datetime | None:
    """When a notice `days_before` a date attribute is due, in UTC; None when `value` is
    neither a date (YYYY-MM-DD) nor a time with its offset.

    A date is a local calendar day: the notice goes out `days_before` days earlier at
    `send_time` on the local clock, whatever the offset is that day (daylight saving).
    """
    value = value.strip()
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return None
        minutes = _minutes(send_time or DEFAULT_SEND_TIME)
        if minutes is None:
            return None
        local = datetime.combine(day - timedelta(days=days_before), time(), where)
        local = local.replace(hour=minutes // 60, minute=minutes % 60)
        return local.astimezone(UTC)
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    if instant.tzinfo is None:
        return None
    return (instant - timedelta(days=days_before)).astimezone(UTC)


def quiet_until(now: datetime, where: tzinfo, quiet: Quiet | None) -> datetime | None:
    """The end of the quiet hours `now` falls in (local to `where`), in UTC; None when `now`
    is not in quiet hours."""
    if quiet is None:
        return None
    local = now.astimezone(where)
    minute = local.hour * 60 + local.minute
    if quiet.start < quiet.end:
        inside = quiet.start <= minute < quiet.end
    else:
        inside = minute >= quiet.start or minute < quiet.end
    if not inside:
        return None
    end_day = local.date()
    if quiet.start > quiet.end and minute >= quiet.start:
        end_day += timedelta(days=1)
    end = datetime.combine(end_day, time(), where).replace(
        hour=quiet.end // 60, minute=quiet.end % 60
    )
    return end.astimezone(UTC)
