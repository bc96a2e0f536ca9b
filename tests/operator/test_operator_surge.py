"""The seats a tenant works with at a given time, and the replicas a cell's seats need. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from lianluo.operator.surge import replicas_for, seats_at, window_problems
from lianluo.operator.template import replicas_of

NOW = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
SINGLES_DAY = {"start": "2026-11-11T00:00:00Z", "end": "2026-11-12T00:00:00Z"}
LATER = {"start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"}


def test_the_standby_pool_is_called_in_only_inside_a_window() -> None:
    spec = {"seats": 100, "standby": {"seats": 900, "schedule": [LATER, SINGLES_DAY]}}
    inside = seats_at(spec, NOW)
    assert (inside.active, inside.standby) == (1000, 900)
    assert "2026-11-12T00:00:00Z" in inside.reason
    # The end is not in the window: at midnight the pool goes home.
    assert seats_at(spec, datetime(2026, 11, 12, tzinfo=UTC)).active == 100
    assert seats_at(spec, datetime(2026, 11, 10, 23, 59, tzinfo=UTC)).active == 100


def test_a_target_calls_in_part_of_the_pool_outside_the_schedule() -> None:
    spec = {"seats": 100, "standby": {"seats": 900, "schedule": [LATER], "target": 250}}
    now = seats_at(spec, NOW)
    assert (now.active, now.standby) == (350, 250)
    # A window still calls in the whole pool.
    assert seats_at(spec, datetime(2026, 12, 24, 8, tzinfo=UTC)).active == 1000


def test_a_tenant_without_seats_counts_none() -> None:
    assert seats_at({}, NOW).active == 0
    assert seats_at({"seats": 40}, NOW).active == 40


def test_what_the_schema_cannot_refuse_is_named() -> None:
    backwards = {"start": "2026-11-12T00:00:00Z", "end": "2026-11-11T00:00:00Z"}
    problems = window_problems(
        {"seats": 1, "standby": {"seats": 10, "schedule": [SINGLES_DAY, backwards], "target": 11}}
    )
    assert problems == [
        "standby.schedule[1] ends at 2026-11-11T00:00:00Z, not after its start "
        "2026-11-12T00:00:00Z",
        "standby.target 11 is more than the pool's 10 seats",
    ]
    assert window_problems({"seats": 1, "standby": {"seats": 10, "schedule": [SINGLES_DAY]}}) == []


def test_a_cells_services_scale_with_its_seats_above_their_own_setting() -> None:
    assert replicas_for(0, 250, 2) == 2
    assert replicas_for(300, 250, 2) == 2
    assert replicas_for(1000, 250, 2) == 4
    assert replicas_for(1001, 250, 2) == 5
    spec = {"seats": 1000, "replicas": {"acd": 6}}
    assert replicas_of(spec, "media", 2) == 4
    assert replicas_of(spec, "acd", 2) == 6, "the cell's own setting is a floor"
    assert replicas_of(spec, "voice", 2) == 1, "voice runs one replica whatever the seats"
