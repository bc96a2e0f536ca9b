"""Pure rules of the record: which interaction an event belongs to, how it changes the summary,
which media items it carries, and the order of entries. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1.envelope_pb2 import Envelope
from lianluo.media.v1 import media_pb2 as media
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime import contract

INTERACTION_TOPIC = contract.INTERACTION_EVENT.name
IVR_TOPIC = contract.IVR_OUTPUT.name
ROUTING_REQUEST_TOPIC = contract.ROUTING_REQUEST.name
ROUTING_DECISION_TOPIC = contract.ROUTING_DECISION.name
AGENT_TOPIC = contract.AGENT_EVENT.name
# What the recording consumes, in the contract-flow order (media, then IVR, then the request it
# makes, then the ACD's answer): also the tie-break when two entries of different topics
# happened at the same instant.
CONSUMED = [
    contract.INTERACTION_EVENT,
    contract.IVR_OUTPUT,
    contract.ROUTING_REQUEST,
    contract.ROUTING_DECISION,
    contract.AGENT_EVENT,
]
TOPICS = [t.name for t in CONSUMED]

# Each topic carries exactly one payload type, so the payload names the topic. The consumer's
# handler is not told the topic it read from; this is how the record still says it.
_PAYLOADS: dict[str, tuple[str, type[Message]]] = {
    t.payload.DESCRIPTOR.full_name: (t.name, t.payload) for t in CONSUMED
}
AGENT_ROLES = (media.PARTICIPANT_ROLE_AGENT, media.PARTICIPANT_ROLE_EXPERT)
RECORDED_LEGS = (common.MEDIA_TYPE_VOICE, common.MEDIA_TYPE_VIDEO, common.MEDIA_TYPE_SCREEN_SHARE)


@dataclass(frozen=True)
class Event:
    """One consumed event, decoded: its topic, interaction, timeline sequence and payload."""

    topic: str
    interaction_id: str
    sequence: int | None
    occur_time: datetime
    envelope: Envelope
    payload: Any


def to_datetime(stamp: Any) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def decode(envelope: Envelope, received: datetime, unpacked: Message | None = None) -> Event | None:
    """The event as part of a record, or None when it belongs to no interaction. `unpacked`
    is its payload when the caller has it already."""
    known = _PAYLOADS.get(envelope.payload.TypeName())
    if known is None:
        return None
    topic, message_type = known
    payload: Any = unpacked if isinstance(unpacked, message_type) else message_type()
    if payload is not unpacked and not envelope.payload.Unpack(payload):
        return None
    if topic == AGENT_TOPIC:
        case = payload.WhichOneof("event")
        # Presence changes concern an agent, not an interaction.
        interaction_id = getattr(payload, case).interaction_id if case != "presence_changed" else ""
    else:
        interaction_id = payload.interaction_id
    if not interaction_id or not envelope.tenant_id:
        return None
    sequence = payload.sequence if topic == INTERACTION_TOPIC and payload.sequence > 0 else None
    occur = to_datetime(envelope.occur_time) if envelope.HasField("occur_time") else received
    return Event(topic, interaction_id, sequence, occur, envelope, payload)


def searchable_text(event: Event) -> str:
    """What of an event the record's search finds it by: a message's text (as stored, masked
    by the tenant's redaction policy) or a file's name, and the note the interaction closed
    with."""
    if event.topic != INTERACTION_TOPIC:
        return ""
    case = event.payload.WhichOneof("event")
    if case == "message":
        content = event.payload.message.content
        kind = content.WhichOneof("content")
        if kind == "text":
            return str(content.text)
        if kind in ("file", "image"):
            return str(getattr(content, kind).name)
    if case == "ended":
        return str(event.payload.ended.resolution.note)
    return ""


# ---------------------------------------------------------------- the summary


@dataclass
class Summary:
    """The listing row of one interaction, folded from its events."""

    tenant_id: str
    interaction_id: str
    start_time: datetime
    channel: int = 0
    customer_id: str = ""
    agent_ids: list[str] = field(default_factory=list)
    queue: str = ""
    state: int = 0
    resolution_code: str = ""
    resolution_note: str = ""
    end_time: datetime | None = None
    complete: bool = False
    entry_count: int = 0
    media_count: int = 0
    retain_until: datetime | None = None
    retention_explicit: bool = False
    legal_hold: bool = False
    legal_hold_reason: str = ""
    legal_hold_time: datetime | None = None
    # The hash of the last entry of the record's chain (None before its first chained entry).
    head_sha256: bytes | None = None


def fold(summary: Summary, event: Event, default_retention: timedelta) -> None:
    """Apply one newly stored event to the summary."""
    summary.entry_count += 1
    # Topics are not ordered with each other, so a routing request may arrive before the
    # interaction's creation: the start is the earliest moment seen.
    summary.start_time = min(summary.start_time, event.occur_time)
    p = event.payload
    if event.topic == INTERACTION_TOPIC:
        _fold_interaction(summary, event, default_retention)
    elif event.topic == IVR_TOPIC and p.WhichOneof("output") == "routed":
        summary.queue = p.routed.queue or summary.queue
    elif event.topic == ROUTING_REQUEST_TOPIC:
        r = p.requirements
        summary.queue = r.queue or summary.queue
        summary.customer_id = summary.customer_id or r.customer_id
        summary.channel = summary.channel or r.channel
    elif event.topic == ROUTING_DECISION_TOPIC:
        summary.queue = p.explanation.queue or summary.queue


def _fold_interaction(summary: Summary, event: Event, default_retention: timedelta) -> None:
    p = event.payload
    case = p.WhichOneof("event")
    if case == "created":
        created = p.created
        summary.channel = created.channel or summary.channel
        summary.customer_id = created.customer.id or summary.customer_id
        summary.queue = created.queue or created.entry_queue or summary.queue
        if not summary.complete:
            summary.state = created.state or media.INTERACTION_STATE_CREATED
        if created.HasField("create_time"):
            summary.start_time = min(summary.start_time, to_datetime(created.create_time))
        for participant in created.participants:
            _add_agent(summary, participant)
    elif case == "state_changed" and not summary.complete:
        summary.state = p.state_changed.to_state
    elif case == "participant_joined":
        _add_agent(summary, p.participant_joined)
    elif case == "transfer_requested" and p.transfer_requested.WhichOneof("target") == "queue":
        summary.queue = p.transfer_requested.queue
    elif case == "ended":
        summary.state = p.ended.final_state or media.INTERACTION_STATE_CLOSED
        summary.resolution_code = p.ended.resolution.code
        summary.resolution_note = p.ended.resolution.note
        summary.end_time = event.occur_time
        summary.complete = True
        if not summary.retention_explicit:
            summary.retain_until = event.occur_time + default_retention


def _add_agent(summary: Summary, participant: media.Participant) -> None:
    subject = participant.subject_id
    if participant.role in AGENT_ROLES and subject and subject not in summary.agent_ids:
        summary.agent_ids.append(subject)


def _stamp(moment: datetime | None, target: Any) -> None:
    if moment is not None:
        target.FromDatetime(moment)


def summary_message(s: Summary) -> pb.RecordingSummary:
    out = pb.RecordingSummary(
        tenant_id=s.tenant_id,
        interaction_id=s.interaction_id,
        channel=s.channel,  # type: ignore[arg-type]
        customer_id=s.customer_id,
        agent_ids=s.agent_ids,
        queue=s.queue,
        state=s.state,  # type: ignore[arg-type]
        complete=s.complete,
        entry_count=s.entry_count,
        media_count=s.media_count,
        legal_hold=pb.LegalHold(held=s.legal_hold, reason=s.legal_hold_reason),
    )
    if s.resolution_code or s.resolution_note:
        out.resolution.code = s.resolution_code
        out.resolution.note = s.resolution_note
    _stamp(s.start_time, out.start_time)
    _stamp(s.end_time, out.end_time)
    _stamp(s.retain_until, out.retain_until)
    _stamp(s.legal_hold_time, out.legal_hold.change_time)
    return out


# ---------------------------------------------------------------- media items


def media_items(event: Event) -> list[pb.MediaItem]:
    """The media items an event adds, or the leg it ends (merged into the stored item)."""
    if event.topic != INTERACTION_TOPIC:
        return []
    p = event.payload
    case = p.WhichOneof("event")
    if case == "message":
        msg = p.message
        kind = msg.content.WhichOneof("content")
        if kind not in ("file", "image"):
            return []
        attachment = getattr(msg.content, kind)
        item = pb.MediaItem(
            id=f"message:{msg.id or event.envelope.event_id}",
            media=common.MEDIA_TYPE_FILE,
            message_id=msg.id,
            participant_id=msg.sender_participant_id,
            uri=attachment.uri,
            name=attachment.name,
            content_type=attachment.content_type,
            size_bytes=attachment.size_bytes,
            sha256=attachment.sha256,
        )
        _copy_time(item.start_time, msg, "send_time", event.occur_time)
        return [item]
    if case in ("media_added", "media_removed"):
        leg = getattr(p, case)
        if leg.media not in RECORDED_LEGS or not leg.id:
            return []
        item = pb.MediaItem(
            id=f"leg:{leg.id}",
            media=leg.media,
            media_leg_id=leg.id,
            participant_id=leg.participant_id,
        )
        if case == "media_added":
            _copy_time(item.start_time, leg, "start_time", event.occur_time)
        else:
            _copy_time(item.end_time, leg, "end_time", event.occur_time)
            audio = leg.recording
            if audio.uri:
                item.uri, item.sha256 = audio.uri, audio.sha256
                item.content_type, item.size_bytes = audio.content_type, audio.size_bytes
        return [item]
    return []


def _copy_time(target: Any, source: Message, name: str, fallback: datetime) -> None:
    """Copy `source.name` into `target`, or the event's time when the producer left it empty."""
    if source.HasField(name):
        target.CopyFrom(getattr(source, name))
    else:
        target.FromDatetime(fallback)


def media_to_json(item: pb.MediaItem) -> dict[str, Any]:
    return json_format.MessageToDict(item, preserving_proto_field_name=True)


def media_from_json(data: dict[str, Any]) -> pb.MediaItem:
    return json_format.ParseDict(data, pb.MediaItem(), ignore_unknown_fields=True)


# ---------------------------------------------------------------- order


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored: enough to order it, and the envelope itself."""

    topic: str
    sequence: int | None
    occur_time: datetime
    arrival: int
    envelope: Envelope
    link: int | None = None
    sha256: bytes | None = None
    previous_sha256: bytes | None = None


def order_entries(entries: Iterable[StoredEntry]) -> list[StoredEntry]:
    """Order a record's entries: by timeline sequence where there is one, else by occur time.

    Entries with a sequence keep sequence order among themselves; the others keep time order;
    the lanes are merged by occur time. Equal keys keep arrival order, so the result is stable.
    """
    lanes: dict[tuple[int, bool], list[StoredEntry]] = {}
    for e in entries:
        rank = TOPICS.index(e.topic) if e.topic in TOPICS else len(TOPICS)
        lanes.setdefault((rank, e.sequence is not None), []).append(e)
    for (_rank, sequenced), lane in lanes.items():
        if sequenced:
            lane.sort(key=lambda e: (e.sequence, e.arrival))
        else:
            lane.sort(key=lambda e: (e.occur_time, e.arrival))
    heads = {key: 0 for key in lanes}
    ordered: list[StoredEntry] = []
    while heads:
        key = min(
            heads,
            key=lambda k: (lanes[k][heads[k]].occur_time, k[0], lanes[k][heads[k]].arrival),
        )
        ordered.append(lanes[key][heads[key]])
        heads[key] += 1
        if heads[key] == len(lanes[key]):
            del heads[key]
    return ordered


def record_entries(ordered: Sequence[StoredEntry]) -> list[pb.RecordEntry]:
    return [
        pb.RecordEntry(
            index=i,
            topic=e.topic,
            event=e.envelope,
            link=e.link or 0,
            sha256=(e.sha256 or b"").hex(),
            previous_sha256=(e.previous_sha256 or b"").hex(),
        )
        for i, e in enumerate(ordered, start=1)
    ]


# ---------------------------------------------------------------- tamper evidence


def _digest(parts: Iterable[bytes]) -> bytes:
    """SHA-256 over the parts, each length-prefixed so that no two different lists of parts
    hash the same."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def entry_hash(previous: bytes, topic: str, event_id: str, envelope: bytes) -> bytes:
    """An entry's link in its record's chain: over the hash of the entry stored before it
    (empty for the first) and the entry's own content."""
    return _digest((previous, topic.encode(), event_id.encode(), envelope))


@dataclass(frozen=True)
class ChainedEntry:
    """An entry as the chain sees it: where it is, what it holds, what was stored for it."""

    link: int | None
    topic: str
    event_id: str
    envelope: bytes
    previous_sha256: bytes | None
    sha256: bytes | None
    stored_day: date | None = None


# A daily root's leaf: a record's id, the chain link of its last entry stored that day, and
# that entry's hex SHA-256.
Leaf = tuple[str, int, str]


def root_of(leaves: Iterable[Leaf]) -> bytes:
    """A tenant's root of a day: SHA-256 over its leaves in the order of the records' ids,
    each part length-prefixed."""
    return _digest(
        part
        for interaction_id, link, sha256 in sorted(leaves)
        for part in (interaction_id.encode(), str(link).encode(), sha256.encode())
    )


@dataclass(frozen=True)
class DayRoot:
    """A published root, with the leaves it was made of."""

    day: date
    root_sha256: bytes
    leaves: list[Leaf]


def check_anchors(
    interaction_id: str,
    entries: Sequence[ChainedEntry],
    roots: Sequence[DayRoot],
    answer: pb.VerifyRecordingResponse,
) -> None:
    """Whether each published root of a day the record has entries from still holds the
    record as it is now: a chain rewritten after that day, hashes and head included, is not
    the one the root was made of."""
    for root in sorted(roots, key=lambda r: r.day):
        that_day = [e for e in entries if e.stored_day == root.day]
        last = max(that_day, key=lambda e: e.link or 0, default=None)
        leaf = None if last is None else (interaction_id, last.link, (last.sha256 or b"").hex())
        held = leaf is not None and [*leaf] in [[*x] for x in root.leaves]
        if not held or root_of(map(tuple, root.leaves)) != root.root_sha256:  # type: ignore[arg-type]
            answer.intact = False
            answer.head_sha256 = ""
            answer.problem = (
                f"the root published for {root.day.isoformat()} does not hold this record as it "
                "is now: it was rewritten after that day"
            )
            return
        answer.anchors.add(day=root.day.isoformat(), root_sha256=root.root_sha256.hex())


def verify_chain(
    entries: Sequence[ChainedEntry], head: bytes | None, expected_count: int
) -> pb.VerifyRecordingResponse:
    """Walk the chain in storage order: each entry's stored hash must be the hash of its
    content after the one before; the last must be the record's head, and every entry the
    record counts must be there. Names the first entry that differs."""
    answer = pb.VerifyRecordingResponse(entries_checked=0)
    if any(e.link is None for e in entries) or head is None:
        answer.problem = "recorded before tamper evidence: its entries carry no hashes"
        return answer
    previous = b""
    for position, e in enumerate(sorted(entries, key=lambda e: e.link or 0), start=1):
        answer.entries_checked = position
        problem = ""
        if e.link != position:
            problem = f"entry {position} is missing: the chain goes on at {e.link}"
        elif e.previous_sha256 != previous:
            problem = "its link to the entry before does not match that entry's hash"
        elif e.sha256 != entry_hash(previous, e.topic, e.event_id, e.envelope):
            problem = "its content does not match its hash: it was changed after it was stored"
        if problem:
            answer.first_bad_link, answer.first_bad_event_id, answer.problem = (
                position,
                e.event_id,
                problem,
            )
            return answer
        previous = e.sha256 or b""
    if previous != head:
        answer.problem = "the last entry is not the record's head: entries were removed"
        answer.first_bad_link = len(entries) + 1
    elif len(entries) != expected_count:
        answer.problem = f"the record counts {expected_count} entries, the chain {len(entries)}"
    else:
        answer.intact = True
        answer.head_sha256 = head.hex()
    return answer
