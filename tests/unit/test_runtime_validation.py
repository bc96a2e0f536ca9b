"""The entry checks every request passes: limits declared in the protos, defaults for the rest."""

from __future__ import annotations

import pytest

from lianluo.acd.v1 import acd_pb2
from lianluo.domain.flows import PatternError, tenant_pattern
from lianluo.events.v1 import agent_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime import kafka, validation
from lianluo.runtime.errors import InvalidArgument, to_rpc_status
from lianluo.tenants.v1 import audio_pb2 as apb
from lianluo.tenants.v1 import tenants_pb2 as tpb

TWO_MIB = "x" * (2 << 20)


def violations(message: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        validation.check_request(message)  # type: ignore[arg-type]
    return {v.field: v.description for v in raised.value.violations}


def test_a_nul_character_anywhere_is_refused_naming_the_field() -> None:
    found = violations(acd_pb2.SetPresenceRequest(tenant_id="t", agent_id="a", reason="a\x00b"))
    assert list(found) == ["reason"]
    assert "NUL" in found["reason"]
    event = npb.PublishBusinessEventRequest(tenant_id="t", attributes={"plan": "gold\x00"})
    assert list(violations(event)) == ["attributes['plan']"]


def test_a_two_mebibyte_string_is_refused_and_the_reply_stays_small() -> None:
    send = mpb.SendRequest(
        tenant_id="t",
        content=mpb.MessageContent(location=mpb.Location(latitude=1, label=TWO_MIB)),
    )
    found = violations(send)
    assert list(found) == ["content.location.label"]
    assert "1,024 bytes" in found["content.location.label"]
    with pytest.raises(InvalidArgument) as raised:
        validation.check_request(send)
    # What travels back (message and details) is a few hundred bytes, not the input.
    assert to_rpc_status(raised.value).ByteSize() < 1_000


def test_declared_limits_let_long_texts_through_up_to_their_bound() -> None:
    chat = mpb.SendRequest(tenant_id="t", content=mpb.MessageContent(text="字" * 10_000))
    validation.check_request(chat)  # 30,000 bytes: within the declared 40,000
    too_long = mpb.SendRequest(tenant_id="t", content=mpb.MessageContent(text="x" * 40_001))
    assert list(violations(too_long)) == ["content.text"]
    flow_end = tpb.EndNode(text="x" * 8_001)
    assert list(violations(flow_end)) == ["text"]


def test_values_that_no_column_or_record_could_hold_are_refused() -> None:
    event = npb.PublishBusinessEventRequest(tenant_id="t", metrics={"amount": float("nan")})
    event.occur_time.seconds = 10**12  # the year 33658
    found = violations(event)
    assert set(found) == {"metrics['amount']", "occur_time"}
    presence = acd_pb2.SetPresenceRequest(tenant_id="t", presence=999)  # type: ignore[arg-type]
    assert "presence" in violations(presence)


def test_counts_are_bounded_and_a_reply_names_at_most_twenty_problems() -> None:
    event = npb.PublishBusinessEventRequest(
        tenant_id="t", attributes={f"k{i}": "\x00" for i in range(500)}
    )
    with pytest.raises(InvalidArgument) as raised:
        validation.check_request(event)
    assert len(raised.value.violations) == 20
    assert raised.value.message.endswith("; and 480 more")
    many = npb.PublishBusinessEventRequest(
        tenant_id="t", attributes={str(i): "" for i in range(1_001)}
    )
    assert "1,001 items" in violations(many)["attributes"]


def test_a_body_that_does_not_parse_is_the_clients_error_without_internals() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validation.parse_request(mpb.SendRequest.FromString, b"\xff\xff\xff", "Send request")
    assert raised.value.violations[0].field == "request"
    assert "protobuf" not in raised.value.message.lower()


def test_a_valid_request_passes_untouched() -> None:
    validation.check_request(
        acd_pb2.SetPresenceRequest(tenant_id="t", agent_id="li.wei", reason="lunch")
    )


def test_an_event_is_checked_inside_its_payload_but_not_for_size() -> None:
    def envelope(reason: str) -> object:
        now = acd_pb2.AgentPresence(tenant_id="t", agent_id="a", reason=reason)
        changed = agent_pb2.AgentPresenceChanged(presence=now)
        payload = agent_pb2.AgentEvent(agent_id="a", presence_changed=changed)
        return kafka.new_envelope("agent.presence_changed", "t", payload, "acd")

    # A request's size limits are the producer's: a long reason still fits a text column.
    assert validation.event_violations(envelope("r" * 50_000)) == []  # type: ignore[arg-type]
    [problem] = validation.event_violations(envelope("a\x00b"))  # type: ignore[arg-type]
    assert (
        problem.field == "payload.presence_changed.presence.reason" and "NUL" in problem.description
    )


def test_tenant_patterns_run_in_linear_time_and_unsupported_syntax_is_named() -> None:
    # Python's backtracking engine would take far longer than this test's timeout here.
    assert tenant_pattern(r"(a+)+$").fullmatch("a" * 200 + "!") is None
    assert tenant_pattern(r"\d{4}").fullmatch("1234") is not None
    with pytest.raises(PatternError, match="RE2"):
        tenant_pattern(r"(?<=a)b")


def test_a_request_carrying_a_file_may_be_as_large_as_the_file_but_no_other() -> None:
    def refused(message: object) -> list[str]:
        try:
            validation.check_request(message)  # type: ignore[arg-type]
        except InvalidArgument as error:
            return [v.field for v in error.violations]
        return []

    # A recorded prompt of a megabyte: stored as it is, never an event.
    audio = apb.PutAudioRequest(
        tenant_id="t", audio=apb.Audio(name="welcome", wav=b"\0" * 1_000_000)
    )
    assert refused(audio) == []
    audio.audio.wav = b"\0" * 3_000_001
    assert refused(audio) == ["audio.wav"]
    # Any other request keeps the limit that lets its event fit in a record.
    notes = [tpb.FlowNode(id=f"n{i}", prompt=tpb.PromptNode(text="x" * 7000)) for i in range(40)]
    assert refused(tpb.PutFlowRequest(tenant_id="t", flow=tpb.Flow(name="f", nodes=notes))) == [
        "request"
    ]
