"""Interaction rules: the state machine and what a valid message is. No I/O."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lianluo.domain.urls import is_uri
from lianluo.media.v1 import media_pb2 as pb
from lianluo.runtime import auth
from lianluo.runtime.errors import FailedPrecondition, Violations

S = pb.InteractionState
TERMINAL = frozenset(
    {S.INTERACTION_STATE_CLOSED, S.INTERACTION_STATE_ABANDONED, S.INTERACTION_STATE_OVERFLOWED}
)
# Before a person answers, a customer who leaves has abandoned the contact.
WAITING = frozenset(
    {
        S.INTERACTION_STATE_CREATED,
        S.INTERACTION_STATE_IN_IVR,
        S.INTERACTION_STATE_QUEUED,
        S.INTERACTION_STATE_OFFERED,
        S.INTERACTION_STATE_CALLBACK,
    }
)
TRANSITIONS: dict[int, frozenset[int]] = {
    # A scheduled callback starts waiting for its time.
    S.INTERACTION_STATE_CREATED: frozenset(
        {
            S.INTERACTION_STATE_IN_IVR,
            S.INTERACTION_STATE_QUEUED,
            S.INTERACTION_STATE_CALLBACK,
            *TERMINAL,
        }
    ),
    S.INTERACTION_STATE_IN_IVR: frozenset({S.INTERACTION_STATE_QUEUED, *TERMINAL}),
    S.INTERACTION_STATE_QUEUED: frozenset(
        {
            S.INTERACTION_STATE_OFFERED,
            S.INTERACTION_STATE_CONNECTED,
            S.INTERACTION_STATE_CALLBACK,
            *TERMINAL,
        }
    ),
    S.INTERACTION_STATE_OFFERED: frozenset(
        {
            S.INTERACTION_STATE_QUEUED,
            S.INTERACTION_STATE_CONNECTED,
            S.INTERACTION_STATE_CALLBACK,
            *TERMINAL,
        }
    ),
    # A callback comes back as an offer to an agent, who then calls the customer.
    S.INTERACTION_STATE_CALLBACK: frozenset(
        {
            S.INTERACTION_STATE_QUEUED,
            S.INTERACTION_STATE_OFFERED,
            S.INTERACTION_STATE_CONNECTED,
            *TERMINAL,
        }
    ),
    S.INTERACTION_STATE_CONNECTED: frozenset(
        {S.INTERACTION_STATE_QUEUED, S.INTERACTION_STATE_WRAP_UP, S.INTERACTION_STATE_CLOSED}
    ),
    S.INTERACTION_STATE_WRAP_UP: frozenset({S.INTERACTION_STATE_CLOSED}),
}
MAX_TEXT = 10_000
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# A customer rates a conversation once it is over for them: in the agent's wrap-up, or closed.
RATEABLE = frozenset({S.INTERACTION_STATE_WRAP_UP, S.INTERACTION_STATE_CLOSED})
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024


def state_name(state: int) -> str:
    return S.Name(state).removeprefix("INTERACTION_STATE_").lower()  # type: ignore[arg-type]


def can_move(current: int, target: int) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def require_open(interaction: pb.Interaction) -> None:
    if interaction.state in TERMINAL:
        raise FailedPrecondition(
            f"interaction/{interaction.id}", f"the interaction is {state_name(interaction.state)}"
        )


def position(after: Any) -> bool:
    """Whether a page token's position is one this service wrote: a time and an id."""
    if not isinstance(after, list) or len(after) != 2:
        return False
    try:
        datetime.fromisoformat(str(after[0]))
        uuid.UUID(str(after[1]))
    except ValueError:
        return False
    return True


def same_role(assigned: int, joining: int) -> bool:
    """Whether a join in `joining` role finds a participant of `assigned` role: an agent's
    desk joins as an agent, whether the ACD assigned them as an agent or as an expert."""
    people = {R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT}
    return assigned == joining or (assigned in people and joining in people)


def ending(it: pb.Interaction, ender: pb.Participant | None, resolution: pb.Resolution) -> str:
    """What End does: "wrap_up" when a conversation with a person ends without the agent's
    disposition (the customer left, or the agent ended it and has yet to say how it went);
    "end" otherwise (a disposition, a contact nobody answered, a key); "" when nothing is left
    to do (already closed, or the customer leaving a wrap-up)."""
    if it.state in TERMINAL:
        return ""
    customer = ender is not None and ender.role == R.PARTICIPANT_ROLE_CUSTOMER
    if it.state == S.INTERACTION_STATE_WRAP_UP:
        return "" if customer else "end"
    agent_without_disposition = (
        ender is not None and ender.role in _AGENT_ROLES and not resolution.code
    )
    if it.state == S.INTERACTION_STATE_CONNECTED and (customer or agent_without_disposition):
        return "wrap_up"
    return "end"


def final_state(current: int) -> int:
    """The state End leads to: a contact nobody answered yet is abandoned."""
    return S.INTERACTION_STATE_ABANDONED if current in WAITING else S.INTERACTION_STATE_CLOSED


def check_content(content: pb.MessageContent, v: Violations, path: str = "content") -> None:
    kind = content.WhichOneof("content")
    if kind is None:
        v.add(path, "one of text, file, image, location or form")
    elif kind == "text":
        v.check(0 < len(content.text) <= MAX_TEXT, f"{path}.text", f"1 to {MAX_TEXT} characters")
    elif kind in {"file", "image"}:
        att = getattr(content, kind)
        v.check(is_uri(att.uri), f"{path}.{kind}.uri", "must be a URI")
        v.check(
            0 <= att.size_bytes <= MAX_ATTACHMENT_BYTES,
            f"{path}.{kind}.size_bytes",
            "at most 100 MiB",
        )
        v.check(
            not att.sha256 or re.fullmatch(r"[0-9a-f]{64}", att.sha256) is not None,
            f"{path}.{kind}.sha256",
            "64 lower-case hex digits",
        )
        if kind == "image":
            v.check(
                att.content_type.startswith("image/"),
                f"{path}.image.content_type",
                "must be an image/* type",
            )
    elif kind == "location":
        loc = content.location
        v.check(-90 <= loc.latitude <= 90, f"{path}.location.latitude", "must be -90 to 90")
        v.check(-180 <= loc.longitude <= 180, f"{path}.location.longitude", "must be -180 to 180")
    elif kind == "form":
        form = content.form
        v.check(bool(form.form_id), f"{path}.form.form_id", "must be set")
        names = [f.name for f in form.fields]
        v.check(len(names) == len(set(names)), f"{path}.form.fields", "field names repeat")
        for i, f in enumerate(form.fields):
            if form.submitted and f.required:
                v.check(bool(f.value), f"{path}.form.fields[{i}].value", "is required")
            if form.submitted and f.type == pb.FORM_FIELD_TYPE_CHOICE and f.value:
                v.check(f.value in f.options, f"{path}.form.fields[{i}].value", "not an option")


COLLECTED_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_collected(data: Mapping[str, str], v: Violations) -> None:
    """What a channel collected before the start: a few short, named answers."""
    v.check(len(data) <= 20, "collected_data", "at most 20 entries")
    for name, value in data.items():
        v.check(
            COLLECTED_NAME.fullmatch(name) is not None,
            f"collected_data[{name[:40]}]",
            "a name of a-z, 0-9 and _ (at most 40)",
        )
        v.check(len(value) <= 500, f"collected_data[{name[:40]}]", "at most 500 characters")


def prompt_text(text: str, choices: list[tuple[str, str]]) -> str:
    """A prompt as plain text, for channels and logs that cannot show choices."""
    lines = [text, *(f"{digit}. {label}" for digit, label in choices)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- who may use what

R = pb.ParticipantRole
_AGENT_ROLES = frozenset({R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT})


def _as_self(who: auth.Principal, p: pb.Participant) -> bool:
    """Whether the participant `p` is the caller: its role and its subject."""
    if who.role == auth.CUSTOMER:
        return p.role == R.PARTICIPANT_ROLE_CUSTOMER
    if who.role == auth.AGENT:
        return p.role in _AGENT_ROLES and p.subject_id == who.agent_id
    if who.role == auth.SUPERVISOR:
        return p.role == R.PARTICIPANT_ROLE_SUPERVISOR and p.subject_id == who.user_id
    return True


def may_use(who: auth.Principal, it: pb.Interaction, acting: pb.Participant | None = None) -> bool:
    """Whether the caller may use the interaction `it` (as the participant `acting`, if any).

    A key or a tenant admin may use any interaction of its tenant. A customer's session only
    its own interaction (or, bound to a customer on a channel, theirs on that channel); an
    agent only one offered or assigned to them (they are among its participants); a supervisor
    only one in the queues they watch. People act only as themselves.
    """
    if acting is not None and not _as_self(who, acting):
        return False
    if who.role == auth.CUSTOMER:
        if who.interaction_id:
            return it.id == who.interaction_id
        return it.customer.id == who.customer_id and it.channel == who.channel
    if who.role == auth.AGENT:
        return any(p.role in _AGENT_ROLES and p.subject_id == who.agent_id for p in it.participants)
    if who.role == auth.SUPERVISOR:
        return who.watches(it.queue)
    return True


def may_join_as(who: auth.Principal, join: pb.Join) -> bool:
    """Whether a Connect join names the caller itself (before the interaction is read)."""
    return _as_self(who, pb.Participant(role=join.role, subject_id=join.subject_id))


def may_start(who: auth.Principal, customer_id: str, channel: int) -> bool:
    """Keys and tenant admins start interactions; a customer's session bound to a customer on a
    channel starts theirs on that channel; no other person or session does."""
    if who.role == auth.CUSTOMER:
        return not who.interaction_id and customer_id == who.customer_id and channel == who.channel
    return who.role in ("", auth.TENANT_ADMIN)


def check_recording(r: pb.Recording) -> None:
    """A leg's recording as the voice service reports it: an object of the store, hashed."""
    v = Violations()
    v.check(
        r.uri.startswith("object:") and 7 < len(r.uri) <= 1024,
        "recording.uri",
        '"object:" and the object\'s key',
    )
    v.check(re.fullmatch(r"[0-9a-f]{64}", r.sha256) is not None, "recording.sha256", "64 hex")
    v.check(r.size_bytes >= 0 and r.duration_ms >= 0, "recording", "sizes are not negative")
    v.check(0 <= r.paused_ms <= r.duration_ms, "recording.paused_ms", "between 0 and duration_ms")
    v.raise_if_any()
