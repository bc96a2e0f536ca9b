"""The Export transcript: a record read as a conversation (who said what, when), with prompts,
state changes and routing decisions, and media by media_item_id. No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import routing_pb2
from lianluo.media.v1 import media_pb2 as media
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.services.recording import domain

Line = dict[str, Any]


def _enum(enum: Any, value: int, prefix: str) -> str:
    """A readable enum value: CHANNEL_WEB -> "web"."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _role(value: int) -> str:
    return _enum(media.ParticipantRole, value, "PARTICIPANT_ROLE_")


@dataclass
class _Reader:
    """Walks the ordered entries, remembering who is who and which prompts were said."""

    media_by_message: dict[str, str]
    people: dict[str, dict[str, str]] = field(default_factory=dict)
    # Prompt texts not yet echoed back: the media service repeats each prompt as the bot's
    # message on the timeline, and the transcript says it once.
    unechoed: list[str] = field(default_factory=list)

    def who(self, participant_id: str, role: int = 0) -> dict[str, str]:
        known = self.people.get(participant_id)
        if known is not None:
            return known
        found = {"role": _role(role)} if role else {}
        if participant_id:
            found["participant_id"] = participant_id
        return found

    def meet(self, p: media.Participant) -> dict[str, str]:
        person = {"role": _role(p.role), "participant_id": p.id}
        if p.subject_id:
            person["id"] = p.subject_id
        if p.display_name:
            person["name"] = p.display_name
        self.people[p.id] = person
        return person

    def said_by_bot(self, text: str) -> None:
        if text:
            self.unechoed.append(text)

    def is_echo(self, message: media.Message) -> bool:
        """True for the bot's message that repeats a prompt (its text, then a line per choice)."""
        if message.sender_role != media.PARTICIPANT_ROLE_BOT:
            return False
        text = message.content.text
        for said in self.unechoed:
            if text == said or text.startswith(said + "\n"):
                self.unechoed.remove(said)
                return True
        return False


def _message(reader: _Reader, m: media.Message) -> Line | None:
    if reader.is_echo(m):
        return None
    line: Line = {"who": reader.who(m.sender_participant_id, m.sender_role)}
    content = m.content
    kind = content.WhichOneof("content")
    if kind == "text":
        line["text"] = content.text
    elif kind in ("file", "image"):
        attachment = getattr(content, kind)
        line["text"] = f"[{kind}: {attachment.name or attachment.uri}]"
        line["media_item_id"] = reader.media_by_message.get(m.id, "")
    elif kind == "location":
        loc = content.location
        line["text"] = f"[location: {loc.label or f'{loc.latitude}, {loc.longitude}'}]"
        line["location"] = {"latitude": loc.latitude, "longitude": loc.longitude}
        if loc.label:
            line["location"]["label"] = loc.label
    elif kind == "form":
        form = content.form
        line["text"] = f"[form {'submitted' if form.submitted else 'sent'}: {form.title}]"
        line["form"] = {
            "form_id": form.form_id,
            "title": form.title,
            "submitted": form.submitted,
            "fields": [
                {"name": f.name, "label": f.label, "value": f.value}
                if form.submitted
                else {"name": f.name, "label": f.label}
                for f in form.fields
            ],
        }
    return line


def _interaction(reader: _Reader, e: Any) -> Line | None:
    case = e.WhichOneof("event")
    if case == "created":
        c = e.created
        for p in c.participants:
            reader.meet(p)
        entry = c.WhichOneof("entry")
        line: Line = {
            "text": f"Contact started on {_enum(common.Channel, c.channel, 'CHANNEL_')}",
            "customer": {"id": c.customer.id, "name": c.customer.display_name},
        }
        if entry:
            line[entry] = getattr(c, entry)
        return line
    if case == "message":
        return _message(reader, e.message)
    if case == "state_changed":
        s = e.state_changed
        to = _enum(media.InteractionState, s.to_state, "INTERACTION_STATE_")
        line = {"text": f"State {to}", "state": to}
        if s.reason:
            line["reason"] = s.reason
        return line
    if case in ("participant_joined", "participant_left"):
        p = getattr(e, case)
        who = reader.meet(p)
        name = who.get("name") or who.get("id") or p.id
        verb = "joined" if case == "participant_joined" else "left"
        line = {"who": who, "text": f"{name} ({who['role']}) {verb}"}
        if p.leave_reason:
            line["reason"] = p.leave_reason
        return line
    if case in ("media_added", "media_removed"):
        leg = getattr(e, case)
        kind = _enum(common.MediaType, leg.media, "MEDIA_TYPE_")
        verb = "started" if case == "media_added" else "stopped"
        line = {"who": reader.who(leg.participant_id), "text": f"{kind} {verb}"}
        if leg.media in domain.RECORDED_LEGS:
            line["media_item_id"] = f"leg:{leg.id}"
        return line
    if case == "transfer_requested":
        t = e.transfer_requested
        target = t.WhichOneof("target") or ""
        value = _dict(t.expert) if target == "expert" else getattr(t, target, "")
        line = {"who": reader.who(t.participant_id), "text": f"Transfer to {target}"}
        line["target"] = {target: value} if target else {}
        if t.note:
            line["note"] = t.note
        return line
    if case == "ended":
        end = e.ended
        state = _enum(media.InteractionState, end.final_state, "INTERACTION_STATE_")
        line = {"text": f"Contact ended ({state})", "state": state}
        line["resolution"] = {"code": end.resolution.code, "note": end.resolution.note}
        if end.ended_by_participant_id:
            line["who"] = reader.who(end.ended_by_participant_id)
        return line
    return None


def _ivr(reader: _Reader, o: Any) -> Line | None:
    bot = {"role": "bot"}
    case = o.WhichOneof("output")
    if case == "prompt":
        reader.said_by_bot(o.prompt.text)
        line: Line = {"who": bot, "text": o.prompt.text}
        if o.prompt.choices:
            line["choices"] = [{"digit": c.digit, "label": c.label} for c in o.prompt.choices]
        return line
    if case == "routed":
        return {"text": f"Self-service routed to queue {o.routed.queue}", "queue": o.routed.queue}
    if case == "ended":
        reader.said_by_bot(o.ended.text)
        return {"who": bot, "text": o.ended.text}
    return None


def _decision(d: routing_pb2.RoutingDecision) -> Line:
    case = d.WhichOneof("decision") or ""
    line: Line = {}
    if case == "offer":
        line = {"text": f"Offered to agent {d.offer.offer.agent_id}"}
        line["agent_id"] = d.offer.offer.agent_id
    elif case == "assign":
        line = {"text": f"Assigned to agent {d.assign.agent_id}", "agent_id": d.assign.agent_id}
    elif case in ("offer_declined", "offer_timed_out", "offer_withdrawn"):
        ended = getattr(d, case)
        verb = {"offer_declined": "declined", "offer_withdrawn": "withdrawn"}.get(case, "timed out")
        line = {"text": f"Offer to agent {ended.agent_id} {verb}", "agent_id": ended.agent_id}
        if ended.reason:
            line["reason"] = ended.reason
    elif case == "overflow":
        cause = _enum(routing_pb2.OverflowCause, d.overflow.cause, "OVERFLOW_CAUSE_")
        line = {"text": f"Overflow ({cause})", "overflow": _dict(d.overflow)}
    if d.HasField("explanation"):
        line["explanation"] = _dict(d.explanation)
    return line


def _line(reader: _Reader, event: domain.Event) -> Line | None:
    p = event.payload
    if event.topic == domain.INTERACTION_TOPIC:
        return _interaction(reader, p)
    if event.topic == domain.IVR_TOPIC:
        return _ivr(reader, p)
    if event.topic == domain.ROUTING_REQUEST_TOPIC:
        r = p.requirements
        return {"text": f"Routing requested to queue {r.queue}", "requirements": _dict(r)}
    if event.topic == domain.ROUTING_DECISION_TOPIC:
        return _decision(p)
    if event.topic == domain.AGENT_TOPIC:
        case = p.WhichOneof("event")
        return {"who": {"role": "agent", "id": p.agent_id}, "text": case.replace("_", " ")}
    return None


def transcript(recording: pb.Recording) -> str:
    """The UTF-8 JSON document of Export."""
    reader = _Reader({m.message_id: m.id for m in recording.media if m.message_id})
    lines: list[Line] = []
    for entry in recording.entries:
        event = domain.decode(entry.event, datetime.now(UTC))
        line = _line(reader, event) if event is not None else None
        if line is None:
            continue
        lines.append(
            {
                "index": entry.index,
                "time": event.occur_time.isoformat() if event is not None else "",
                "type": entry.event.type,
                **line,
            }
        )
    document = {
        "summary": _dict(recording.summary),
        "transcript": lines,
        "media": [_dict(m) for m in recording.media],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)
