"""Queue figures from known events, against values worked out by hand (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.services.acd.erlang import agents_needed, staffing, wait_probability
from lianluo.services.acd.state import ContactLog, PresenceLog
from lianluo.services.acd.stats import Window, history_figures
from lianluo.tenants.v1 import tenants_pb2 as pb

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
QUEUE = pb.Queue(
    name="cards",
    service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
    media=common.MEDIA_TYPE_CHAT,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def log(interaction: str, event: str, seconds: float, agent: str = "") -> ContactLog:
    # Ends come from interaction.event, which does not name the queue.
    queue = "" if event == "ended" else "cards"
    return ContactLog(interaction, queue, event, at(seconds), agent)


CONTACTS = [
    # c1: waits 10 s, answered by a, handled 100 s.
    log("c1", "entered", 0),
    log("c1", "answered", 10, "a"),
    log("c1", "ended", 110, "a"),
    # c2: waits 30 s (past the 20 s threshold), answered by b, handled 300 s.
    log("c2", "entered", 5),
    log("c2", "answered", 35, "b"),
    log("c2", "ended", 335, "b"),
    # c3: abandons after 5 s, within the threshold: not in the service level at all.
    log("c3", "entered", 10),
    log("c3", "abandoned", 15),
    # c4: abandons after 40 s, past the threshold: counts against the service level.
    log("c4", "entered", 20),
    log("c4", "abandoned", 60),
    # c5: overflows after 120 s.
    log("c5", "entered", 30),
    log("c5", "overflowed", 150),
    # c6: waits 10 s, answered by a while a still has c1, handled 200 s.
    log("c6", "entered", 40),
    log("c6", "answered", 50, "a"),
    log("c6", "ended", 250, "a"),
    # Another queue's contact is not counted.
    ContactLog("x1", "billing", "entered", at(1)),
]
PRESENCE = [
    PresenceLog("a", acd.PRESENCE_AVAILABLE, at(-100)),
    PresenceLog("b", acd.PRESENCE_AVAILABLE, at(0)),
    PresenceLog("b", acd.PRESENCE_AWAY, at(600)),
]


def test_queue_figures_from_known_events_match_the_hand_computed_values() -> None:
    f = history_figures(QUEUE, CONTACTS, PRESENCE, {"a", "b"}, Window(T0, at(900)))
    assert (f.entered, f.answered, f.abandoned, f.overflowed) == (6, 3, 2, 1)
    # c1 and c6 within 20 s, out of 3 answered + 1 abandoned after 20 s (c4).
    assert f.service_level_percent == pytest.approx(100 * 2 / 4)
    assert f.asa_seconds == pytest.approx((10 + 30 + 10) / 3)
    assert f.aht_seconds == pytest.approx((100 + 300 + 200) / 3)
    assert f.abandonment_percent == pytest.approx(100 * 2 / 6)
    # a is busy 10..250 (c1 and c6 overlap: 240 s, not 300), b 35..335 (300 s); signed in
    # a 900 s (the window), b 600 s until away.
    assert f.occupancy_percent == pytest.approx(100 * (240 + 300) / (900 + 600))
    # 6 arrivals in 900 s at AHT 200 s: 4/3 erlangs. Two agents: P(wait) = (A^2/2 * 2/(2-A))
    # / (1 + A + A^2/2 * 2/(2-A)) = 2.667 / 5 = 0.533, service level 1 - 0.533 e^(-(2-A)20/200)
    # = 50.1 %: short. Three agents reach 84.7 %.
    advice = f.erlang_c
    assert advice.arrival_rate_per_hour == pytest.approx(24)
    assert advice.traffic_erlangs == pytest.approx(4 / 3)
    assert advice.agents_needed == 3
    assert advice.expected_service_level_percent == pytest.approx(84.696, abs=0.01)
    assert staffing(4 / 3, 2, 200, 20).wait_probability == pytest.approx(0.5333, abs=1e-4)


def test_a_window_counts_only_what_happened_inside_it() -> None:
    f = history_figures(QUEUE, CONTACTS, PRESENCE, {"a", "b"}, Window(at(100), at(900)))
    # Only c5's overflow, c1/c6/c2's ends and nothing entered happen after 100 s.
    assert (f.entered, f.answered, f.abandoned, f.overflowed) == (0, 0, 0, 1)
    assert f.aht_seconds == pytest.approx(200)
    assert f.abandonment_percent == 0.0
    assert not f.HasField("erlang_c")


def test_erlang_c_matches_the_textbook_example() -> None:
    # 100 calls in 30 minutes at 180 s AHT: 10 erlangs; target 80 % answered within 20 s.
    traffic = 100 / 1800 * 180
    assert wait_probability(traffic, 11) == pytest.approx(0.6821, abs=1e-4)
    eleven = staffing(traffic, 11, 180, 20)
    assert eleven.asa_seconds == pytest.approx(122.8, abs=0.05)
    assert eleven.service_level == pytest.approx(0.3896, abs=1e-4)
    assert staffing(traffic, 13, 180, 20).service_level == pytest.approx(0.7956, abs=1e-4)
    needed = agents_needed(100 / 1800, 180, 20, 0.80)
    assert needed is not None
    assert needed.agents == 14
    assert needed.service_level == pytest.approx(0.8884, abs=1e-4)
    assert wait_probability(traffic, 10) == 1.0
