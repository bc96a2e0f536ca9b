"""The record's pure rules: which interaction an event belongs to, the summary it builds, the
media it carries, and the order of entries (recording domain, no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import agent_pb2, interaction_pb2, ivr_pb2, routing_pb2
from lianluo.events.v1.envelope_pb2 import Envelope
from lianluo.media.v1 import media_pb2 as media
from lianluo.runtime.kafka import new_envelope
from lianluo.services.recording import domain
from lianluo.services.recording.domain import StoredEntry, Summary

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


def _at(envelope: Envelope, seconds: float) -> Envelope:
    envelope.occur_time.FromDatetime(T0 + timedelta(seconds=seconds))
    return envelope


def interaction(seconds: float, sequence: int, case: str, value: object) -> domain.Event:
    event = interaction_pb2.InteractionEvent(interaction_id="i-1", sequence=sequence)
    getattr(event, case).CopyFrom(value)
    envelope = _at(new_envelope(f"interaction.{case}", "t-1", event, "media"), seconds)
    decoded = domain.decode(envelope, T0)
    assert decoded is not None
    return decoded


def _summary() -> Summary:
    return Summary("t-1", "i-1", start_time=T0 + timedelta(hours=1))


def test_each_payload_names_its_topic_and_interaction() -> None:
    request = ivr_pb2.RoutingRequest(interaction_id="i-2")
    decision = routing_pb2.RoutingDecision(
        interaction_id="i-3", assign=routing_pb2.RoutingAssign(agent_id="a")
    )
    wrap_up = agent_pb2.AgentEvent(
        agent_id="a", wrap_up_done=agent_pb2.AgentWrapUpDone(interaction_id="i-4")
    )
    found = [
        domain.decode(new_envelope(t, "t-1", p, "x"), T0)
        for t, p in [("routing.requested", request), ("routing.assign", decision), ("w", wrap_up)]
    ]
    assert [(e.topic, e.interaction_id, e.sequence) for e in found if e] == [
        ("routing.request", "i-2", None),
        ("routing.decision", "i-3", None),
        ("agent.event", "i-4", None),
    ]


def test_events_without_an_interaction_or_tenant_are_not_recorded() -> None:
    presence = agent_pb2.AgentEvent(agent_id="a", presence_changed=agent_pb2.AgentPresenceChanged())
    no_tenant = ivr_pb2.RoutingRequest(interaction_id="i-1")
    assert domain.decode(new_envelope("agent.presence_changed", "t-1", presence, "acd"), T0) is None
    assert domain.decode(new_envelope("routing.requested", "", no_tenant, "ivr"), T0) is None
    assert domain.decode(new_envelope("x", "t-1", common.Prompt(), "ivr"), T0) is None


def test_the_summary_follows_the_contact_to_its_end() -> None:
    s = _summary()
    customer = media.Customer(id="cust-1")
    created = media.Interaction(channel=common.CHANNEL_APP, customer=customer, entry_flow="main")
    agent = media.Participant(id="p2", role=media.PARTICIPANT_ROLE_AGENT, subject_id="agent-7")
    expert = media.Participant(id="p3", role=media.PARTICIPANT_ROLE_EXPERT, subject_id="exp-1")
    bot = media.Participant(id="p4", role=media.PARTICIPANT_ROLE_BOT, subject_id="ivr")
    end = media.InteractionEnd(
        final_state=media.INTERACTION_STATE_CLOSED, resolution=media.Resolution(code="resolved")
    )
    routed = ivr_pb2.IvrOutput(interaction_id="i-1", routed=ivr_pb2.IvrRouted(queue="cards"))
    events = [
        interaction(0, 1, "created", created),
        domain.decode(_at(new_envelope("ivr.routed", "t-1", routed, "ivr"), 1), T0),
        interaction(2, 2, "participant_joined", agent),
        interaction(3, 3, "participant_joined", expert),
        interaction(4, 4, "participant_joined", bot),
        interaction(5, 5, "participant_joined", agent),  # a rejoin is one agent
        interaction(9, 6, "ended", end),
    ]
    for e in events:
        assert e is not None
        domain.fold(s, e, YEAR)

    assert (s.channel, s.customer_id, s.queue) == (common.CHANNEL_APP, "cust-1", "cards")
    assert s.agent_ids == ["agent-7", "exp-1"]
    assert (s.state, s.resolution_code, s.complete) == (
        media.INTERACTION_STATE_CLOSED,
        "resolved",
        True,
    )
    assert (s.start_time, s.end_time) == (T0, T0 + timedelta(seconds=9))
    assert s.retain_until == T0 + timedelta(seconds=9) + YEAR
    assert s.entry_count == len(events)


def test_an_explicit_retention_survives_the_end_and_late_state_changes_do_not_reopen() -> None:
    s = _summary()
    s.retention_explicit, s.retain_until = True, T0
    domain.fold(s, interaction(1, 1, "ended", media.InteractionEnd()), YEAR)
    late = media.StateChange(to_state=media.INTERACTION_STATE_CONNECTED)
    domain.fold(s, interaction(2, 2, "state_changed", late), YEAR)
    assert s.retain_until == T0
    assert s.state == media.INTERACTION_STATE_CLOSED


def test_attachments_and_recorded_legs_are_media_items_text_is_not() -> None:
    image = media.Message(
        id="m1",
        sender_participant_id="p1",
        content=media.MessageContent(image=media.Attachment(uri="s3://b/x.png", name="x.png")),
    )
    text = media.Message(id="m2", content=media.MessageContent(text="hi"))
    video = media.MediaLeg(id="l1", media=common.MEDIA_TYPE_VIDEO, participant_id="p1")
    chat = media.MediaLeg(id="l2", media=common.MEDIA_TYPE_CHAT)
    found = [
        item
        for e in [
            interaction(1, 1, "message", image),
            interaction(2, 2, "message", text),
            interaction(3, 3, "media_added", video),
            interaction(4, 4, "media_added", chat),
            interaction(5, 5, "media_removed", video),
        ]
        for item in domain.media_items(e)
    ]
    assert [(i.id, i.media, i.uri) for i in found] == [
        ("message:m1", common.MEDIA_TYPE_FILE, "s3://b/x.png"),
        ("leg:l1", common.MEDIA_TYPE_VIDEO, ""),
        ("leg:l1", common.MEDIA_TYPE_VIDEO, ""),
    ]
    # The leg's end carries only its end, so merging it keeps the start.
    assert found[1].HasField("start_time") and not found[1].HasField("end_time")
    assert found[2].HasField("end_time") and not found[2].HasField("start_time")


def _entry(topic: str, seconds: int, arrival: int, sequence: int | None = None) -> StoredEntry:
    return StoredEntry(topic, sequence, T0 + timedelta(seconds=seconds), arrival, Envelope())


def test_entries_merge_the_timeline_with_prompts_and_routing_by_time() -> None:
    created = _entry("interaction.event", 0, arrival=5, sequence=1)
    prompt = _entry("ivr.output", 1, arrival=1)
    answer = _entry("interaction.event", 2, arrival=6, sequence=3)
    request = _entry("routing.request", 3, arrival=2)
    offer = _entry("routing.decision", 4, arrival=0)
    # Same instant as the offer: the timeline's own item comes first.
    queued = _entry("interaction.event", 4, arrival=7, sequence=4)
    ordered = domain.order_entries([offer, prompt, request, created, answer, queued])
    assert ordered == [created, prompt, answer, request, queued, offer]


def test_sequence_wins_over_a_skewed_clock_on_the_timeline() -> None:
    first = _entry("interaction.event", 10, arrival=2, sequence=1)
    second = _entry("interaction.event", 5, arrival=1, sequence=2)
    assert domain.order_entries([second, first]) == [first, second]


lane_entries = st.lists(
    st.tuples(
        st.sampled_from(domain.TOPICS),
        st.integers(0, 30),
        st.one_of(st.none(), st.integers(1, 20)),
    ),
    max_size=30,
)


@PROPERTY
@given(lane_entries, st.randoms(use_true_random=False))
def test_order_is_a_stable_permutation_that_keeps_each_lane_in_order(
    raw: list[tuple[str, int, int | None]], rng: random.Random
) -> None:
    entries = [
        _entry(topic, seconds, arrival, seq if topic == "interaction.event" else None)
        for arrival, (topic, seconds, seq) in enumerate(raw)
    ]
    ordered = domain.order_entries(entries)
    shuffled = list(entries)
    rng.shuffle(shuffled)

    assert sorted(ordered, key=lambda e: e.arrival) == entries
    assert domain.order_entries(shuffled) == ordered
    sequenced = [e for e in ordered if e.sequence is not None]
    assert sequenced == sorted(sequenced, key=lambda e: (e.sequence, e.arrival))
    for topic in domain.TOPICS:
        timed = [e for e in ordered if e.topic == topic and e.sequence is None]
        assert timed == sorted(timed, key=lambda e: (e.occur_time, e.arrival))


def test_record_entries_are_numbered_from_one() -> None:
    decision = routing_pb2.RoutingDecision(
        interaction_id="i-1", explanation=acd.RoutingExplanation(queue="cards")
    )
    envelope = new_envelope("routing.offer", "t-1", decision, "acd")
    entries = domain.record_entries([StoredEntry("routing.decision", None, T0, 1, envelope)])
    assert [(e.index, e.topic, e.event.event_id) for e in entries] == [
        (1, "routing.decision", envelope.event_id)
    ]
