"""Reports over a range of time, by queue, agent and channel: the same definitions as the live
queue figures (service level, ASA, AHT, abandonment), from the contact history alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.services.acd.state import ABANDONED, ANSWERED, ENDED, ENTERED, ContactLog
from lianluo.services.acd.stats import Window, report
from lianluo.tenants.v1 import tenants_pb2 as pb

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
CARDS = pb.Queue(name="cards", service_level=pb.ServiceLevel(threshold_seconds=20))
LOANS = pb.Queue(name="loans", service_level=pb.ServiceLevel(threshold_seconds=60))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


CONTACTS = [
    # A web chat answered by li in 10 s (within 20 s), handled 100 s.
    ContactLog("i1", "cards", ENTERED, at(0), "", common.CHANNEL_WEB),
    ContactLog("i1", "cards", ANSWERED, at(10), "li"),
    ContactLog("i1", "", ENDED, at(110), "li"),
    # An SMS answered by ana in 30 s (late for cards), handled 60 s.
    ContactLog("i2", "cards", ENTERED, at(5), "", common.CHANNEL_SMS),
    ContactLog("i2", "cards", ANSWERED, at(35), "ana"),
    ContactLog("i2", "", ENDED, at(95), "ana"),
    # A web chat abandoned after 40 s (late).
    ContactLog("i3", "cards", ENTERED, at(10), "", common.CHANNEL_WEB),
    ContactLog("i3", "cards", ABANDONED, at(50)),
    # A loans call answered by li in 50 s (within 60 s), still going.
    ContactLog("i4", "loans", ENTERED, at(20), "", common.CHANNEL_PHONE),
    ContactLog("i4", "loans", ANSWERED, at(70), "li"),
]
WINDOW = Window(T0, T0 + timedelta(hours=1))


def rows(group_by: int) -> dict[str, acd.ReportRow]:
    found = report([CARDS, LOANS], CONTACTS, WINDOW, group_by)
    return {r.key: r for r in found}


def test_by_queue_each_queue_has_its_own_figures() -> None:
    found = rows(acd.REPORT_GROUPING_QUEUE)
    cards, loans = found["cards"], found["loans"]
    assert (cards.entered, cards.answered, cards.abandoned) == (3, 2, 1)
    # Within 20 s: i1 only; counted: 2 answered + 1 late abandon.
    assert cards.service_level_percent == pytest.approx(100 / 3)
    assert cards.asa_seconds == pytest.approx(20.0)
    assert cards.aht_seconds == pytest.approx(80.0)
    assert cards.abandonment_percent == pytest.approx(100 / 3)
    assert (loans.entered, loans.answered, loans.service_level_percent) == (1, 1, 100.0)
    assert loans.aht_seconds == 0.0  # not ended yet


def test_by_channel_each_contact_counts_for_the_channel_it_came_by() -> None:
    found = rows(acd.REPORT_GROUPING_CHANNEL)
    assert set(found) == {"CHANNEL_WEB", "CHANNEL_SMS", "CHANNEL_PHONE"}
    web = found["CHANNEL_WEB"]
    assert (web.entered, web.answered, web.abandoned) == (2, 1, 1)
    assert found["CHANNEL_PHONE"].answered == 1


def test_by_agent_each_agent_has_their_answers_and_handle_time() -> None:
    found = rows(acd.REPORT_GROUPING_AGENT)
    assert set(found) == {"li", "ana"}
    assert (found["li"].answered, found["li"].aht_seconds) == (2, 100.0)
    assert (found["ana"].answered, found["ana"].aht_seconds) == (1, 60.0)
    assert found["li"].entered == found["li"].abandoned == 0


def test_only_what_happened_in_the_range_counts() -> None:
    late = Window(at(40), at(200))
    found = {r.key: r for r in report([CARDS], CONTACTS, late, acd.REPORT_GROUPING_QUEUE)}
    # Entered before the range: not counted as entered; the abandon and both ends are in it.
    assert (found["cards"].entered, found["cards"].answered, found["cards"].abandoned) == (0, 0, 1)
    assert found["cards"].aht_seconds == pytest.approx(80.0)
