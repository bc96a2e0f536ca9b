"""RecordingService requests as a client sends them, and the Export transcript (recording
requests and transcript modules, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import timestamp_pb2

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import interaction_pb2, ivr_pb2
from lianluo.media.v1 import media_pb2 as media
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime.errors import InvalidArgument
from lianluo.runtime.kafka import new_envelope
from lianluo.services.recording import requests, transcript

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def _fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_a_list_filter_with_its_end_before_its_start_names_end_time() -> None:
    request = pb.ListRecordingsRequest(
        tenant_id="t-1", start_time=_stamp(T0), end_time=_stamp(T0 - timedelta(hours=1))
    )
    with pytest.raises(InvalidArgument) as raised:
        requests.list_request(request)
    assert _fields(raised) == ["end_time"]


def test_every_bad_list_field_is_named_at_once() -> None:
    request = pb.ListRecordingsRequest(
        start_time=timestamp_pb2.Timestamp(seconds=2**40),
        page=common.PageRequest(page_size=-5, page_token="not-base64!"),
    )
    with pytest.raises(InvalidArgument) as raised:
        requests.list_request(request)
    assert _fields(raised) == ["tenant_id", "start_time", "page.page_size", "page.page_token"]


def test_a_page_token_continues_only_the_list_it_came_from() -> None:
    by_customer = pb.ListRecordingsRequest(tenant_id="t-1", customer_id="c-1")
    flt, page = requests.list_request(by_customer)
    assert (page.size, page.after) == (requests.DEFAULT_PAGE, None)
    token = requests.next_token(requests.list_scope("t-1", flt), T0, "i-9")

    by_customer.page.page_token = token
    _, page = requests.list_request(by_customer)
    assert page.after == (T0, "i-9")
    for other in (
        pb.ListRecordingsRequest(tenant_id="t-2", customer_id="c-1"),
        pb.ListRecordingsRequest(tenant_id="t-1", customer_id="c-2"),
        pb.ListRecordingsRequest(tenant_id="t-1", agent_id="a-1"),
    ):
        other.page.page_token = token
        with pytest.raises(InvalidArgument) as raised:
            requests.list_request(other)
        assert _fields(raised) == ["page.page_token"]


@pytest.mark.parametrize(("asked", "given"), [(0, 50), (1, 1), (500, 500), (501, 500)])
def test_page_size_defaults_to_50_and_is_capped_at_500(asked: int, given: int) -> None:
    request = pb.ListRecordingsRequest(tenant_id="t", page=common.PageRequest(page_size=asked))
    assert requests.list_request(request)[1].size == given


@pytest.mark.parametrize(("ttl", "ok"), [(0, True), (604_800, True), (-1, False), (604_801, False)])
def test_link_ttl_is_zero_to_seven_days(ttl: int, ok: bool) -> None:
    request = pb.ExportRequest(tenant_id="t", interaction_id="i", link_ttl_seconds=ttl)
    if ok:
        assert requests.link_ttl_seconds(request) == (ttl or 3600)
    else:
        with pytest.raises(InvalidArgument) as raised:
            requests.link_ttl_seconds(request)
        assert _fields(raised) == ["link_ttl_seconds"]


def test_a_hold_needs_a_reason_a_release_does_not() -> None:
    with pytest.raises(InvalidArgument) as raised:
        requests.legal_hold_request(
            pb.SetLegalHoldRequest(tenant_id="t", interaction_id="i", held=True)
        )
    assert _fields(raised) == ["reason"]
    requests.legal_hold_request(pb.SetLegalHoldRequest(tenant_id="t", interaction_id="i"))


def test_retention_needs_a_time() -> None:
    with pytest.raises(InvalidArgument) as raised:
        requests.retention_request(pb.SetRetentionRequest(tenant_id="t"))
    assert _fields(raised) == ["interaction_id", "retain_until"]
    ok = pb.SetRetentionRequest(tenant_id="t", interaction_id="i", retain_until=_stamp(T0))
    assert requests.retention_request(ok) == T0


# ---------------------------------------------------------------- transcript


def _entry(index: int, envelope: object) -> pb.RecordEntry:
    env = new_envelope("test", "t-1", envelope, "test")  # type: ignore[arg-type]
    env.occur_time.FromDatetime(T0 + timedelta(seconds=index))
    return pb.RecordEntry(index=index, event=env)


def _message(
    seq: int, participant: str, role: int, **content: object
) -> interaction_pb2.InteractionEvent:
    return interaction_pb2.InteractionEvent(
        interaction_id="i-1",
        sequence=seq,
        message=media.Message(
            id=f"m{seq}",
            sender_participant_id=participant,
            sender_role=role,  # type: ignore[arg-type]
            content=media.MessageContent(**content),  # type: ignore[arg-type]
        ),
    )


def test_the_transcript_says_who_said_what_and_each_prompt_once() -> None:
    bot, customer = media.PARTICIPANT_ROLE_BOT, media.PARTICIPANT_ROLE_CUSTOMER
    joined = interaction_pb2.InteractionEvent(
        interaction_id="i-1",
        sequence=1,
        participant_joined=media.Participant(
            id="p-c", role=customer, subject_id="cust-1", display_name="Wang Fang"
        ),
    )
    prompt = ivr_pb2.IvrOutput(interaction_id="i-1", prompt=common.Prompt(text="Press 1"))
    recording = pb.Recording(
        entries=[
            _entry(1, joined),
            _entry(2, prompt),
            _entry(3, _message(2, "p-bot", bot, text="Press 1\n1. cards")),
            _entry(4, _message(3, "p-c", customer, text="1")),
            _entry(5, _message(4, "p-bot", bot, text="Press 1")),  # said again: kept
            _entry(6, _message(5, "p-c", customer, file=media.Attachment(name="id.pdf"))),
        ],
        media=[pb.MediaItem(id="message:m5", message_id="m5", uri="s3://b/id.pdf")],
    )
    lines = json.loads(transcript.transcript(recording))["transcript"]
    said = [(line.get("who", {}).get("role"), line["text"]) for line in lines]
    assert said == [
        ("customer", "Wang Fang (customer) joined"),
        ("bot", "Press 1"),
        ("customer", "1"),
        ("bot", "Press 1"),
        ("customer", "[file: id.pdf]"),
    ]
    assert lines[2]["who"] == {
        "role": "customer",
        "participant_id": "p-c",
        "id": "cust-1",
        "name": "Wang Fang",
    }
    assert lines[-1]["media_item_id"] == "message:m5"
    assert [line["index"] for line in lines] == [1, 2, 4, 5, 6]
