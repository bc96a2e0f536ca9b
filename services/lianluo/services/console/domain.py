"""The console's rules, without I/O: the session cookie, who the signed-in person is to the
pages, what each role may open, and the dispositions a wrap-up takes."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.ivr.v1 import ivr_pb2 as ivr_pb
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.tenants.v1 import knowledge_pb2 as kpb
from lianluo.tenants.v1 import tenants_pb2 as tpb

COOKIE = "lianluo_console"
# The pages of each role. The services refuse what a role may not do whatever a page shows:
# this only decides what the console offers.
PAGES = {
    tpb.ROLE_AGENT: ("agent",),
    tpb.ROLE_SUPERVISOR: ("supervisor", "reports"),
    tpb.ROLE_TENANT_ADMIN: ("supervisor", "reports", "admin"),
}
# How a conversation ended, as the agent says in wrap-up: the interaction's resolution code,
# which the closed-loop notices match.
DISPOSITIONS = ("resolved", "follow_up", "not_resolved", "callback", "spam")
MAX_NOTE = 2000
# A file from the desk travels to the gateway in one gRPC message (4 MiB at most).
MAX_FILE_BYTES = 4 * 1024 * 1024 - 64 * 1024
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class BadInput(ValueError):
    """A request the console refuses: each field with what is wrong (shown beside it)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class Session:
    """What the cookie holds: the person's tokens and who they are."""

    access: str
    access_expires: float
    refresh: str
    user: dict[str, Any]

    @property
    def tenant_id(self) -> str:
        return str(self.user["tenant_id"])

    @property
    def agent_id(self) -> str:
        return str(self.user.get("agent_id", ""))

    @property
    def role(self) -> int:
        return int(self.user["role"])

    def due(self, now: float, margin: float = 30.0) -> bool:
        """Whether the access token must be renewed before it is used."""
        return self.access_expires - margin <= now


def session_from(tokens: tpb.Tokens) -> Session:
    u = tokens.user
    return Session(
        access=tokens.access_token,
        access_expires=tokens.access_expire_time.ToDatetime(tzinfo=UTC).timestamp(),
        refresh=tokens.refresh_token,
        user={
            "id": u.id,
            "tenant_id": u.tenant_id,
            "name": u.name,
            "display_name": u.display_name or u.name,
            "role": int(u.role),
            "agent_id": u.agent_id,
            "queues": list(u.queues),
        },
    )


def _mac(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def cookie_key(admin_key: str) -> bytes:
    """The key that signs session cookies, derived from the cell's admin key: every replica
    of the console reads every other's cookies, and no new secret is handed out."""
    return hmac.new(admin_key.encode(), b"lianluo console sessions v1", "sha256").digest()


def seal(session: Session, key: bytes) -> str:
    body = base64.urlsafe_b64encode(json.dumps(session.__dict__).encode()).decode()
    return f"{body}.{_mac(key, body.encode())}"


def unseal(value: str, key: bytes) -> Session | None:
    """The session a cookie holds, or None when it is not one this console signed."""
    body, _, mac = value.rpartition(".")
    if not body or not hmac.compare_digest(_mac(key, body.encode()), mac):
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(body.encode()))
        return Session(**found)
    except (ValueError, TypeError):
        return None


def pages(role: int) -> tuple[str, ...]:
    return PAGES.get(role, ())  # type: ignore[call-overload,no-any-return]


def as_json(message: Message) -> dict[str, Any]:
    """A protobuf message as the pages read it (field names as in the .proto)."""
    return MessageToDict(message, preserving_proto_field_name=True)


def login_fields(body: dict[str, Any]) -> tuple[str, str, str]:
    fields = {}
    values = []
    for name, limit in (("tenant", 63), ("name", 254), ("password", 1024)):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            fields[name] = "required" if not value else f"at most {limit} characters"
        values.append(value if isinstance(value, str) else "")
    if fields:
        raise BadInput(fields)
    return values[0].strip(), values[1].strip(), values[2]


def wrap_up(body: dict[str, Any]) -> tuple[str, str]:
    """The disposition and note of a wrap-up."""
    fields = {}
    disposition, note = body.get("disposition"), body.get("note", "")
    if disposition not in DISPOSITIONS:
        fields["disposition"] = f"one of {', '.join(DISPOSITIONS)}"
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        fields["note"] = f"at most {MAX_NOTE} characters"
    if fields:
        raise BadInput(fields)
    return str(disposition), str(note)


def callback(body: dict[str, Any]) -> tuple[str, timestamp_pb2.Timestamp, str]:
    """The number, time and note of a callback the desk schedules; media checks the number
    and how far ahead the time is, and names the field it refuses."""
    fields = {}
    number, due, note = body.get("number"), body.get("due"), body.get("note", "")
    if not isinstance(number, str) or not 0 < len(number) <= 20:
        fields["callback_number"] = "required: an E.164 number such as +8613800000000"
    when = timestamp_pb2.Timestamp()
    try:
        at = datetime.fromisoformat(str(due))
        if at.tzinfo is None:
            raise ValueError
        when.FromDatetime(at)
    except ValueError:
        fields["due_time"] = "required: a date and time with its zone"
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        fields["note"] = f"at most {MAX_NOTE} characters"
    if fields:
        raise BadInput(fields)
    return str(number), when, str(note)


def message_content(body: dict[str, Any]) -> tuple[mpb.MessageContent, str]:
    """What the desk sends, and its client id: text, or a place (`location`: latitude,
    longitude and a label), which each channel shows as it can (a map link in a text)."""
    form = body.get("form")
    if form is not None:
        _, client_id = message_text({"text": "form", "id": body.get("id")})
        return mpb.MessageContent(form=form_to_fill(form)), client_id
    place = body.get("location")
    if place is None:
        text, client_id = message_text(body)
        return mpb.MessageContent(text=text), client_id
    _, client_id = message_text({"text": "place", "id": body.get("id")})
    fields = {}
    if not isinstance(place, dict):
        raise BadInput({"location": "latitude, longitude and a label"})
    lat, lon, label = place.get("latitude"), place.get("longitude"), place.get("label", "")
    if not isinstance(lat, int | float) or isinstance(lat, bool) or not -90 <= lat <= 90:
        fields["location.latitude"] = "-90 to 90"
    if not isinstance(lon, int | float) or isinstance(lon, bool) or not -180 <= lon <= 180:
        fields["location.longitude"] = "-180 to 180"
    if not isinstance(label, str) or len(label) > 200:
        fields["location.label"] = "at most 200 characters"
    if fields:
        raise BadInput(fields)
    at = mpb.Location(latitude=float(lat), longitude=float(lon), label=str(label))  # type: ignore[arg-type]
    return mpb.MessageContent(location=at), client_id


FORM_TYPES = {
    "text": mpb.FORM_FIELD_TYPE_TEXT,
    "number": mpb.FORM_FIELD_TYPE_NUMBER,
    "date": mpb.FORM_FIELD_TYPE_DATE,
    "email": mpb.FORM_FIELD_TYPE_EMAIL,
    "phone": mpb.FORM_FIELD_TYPE_PHONE,
}


def form_to_fill(found: Any) -> mpb.Form:
    """A form the desk sends: a title and up to 10 fields (name, label, type, required)."""
    if not isinstance(found, dict):
        raise BadInput({"form": "a title and fields"})
    title, fields = found.get("title", ""), found.get("fields")
    problems = {}
    if not isinstance(title, str) or not 0 < len(title) <= 120:
        problems["form.title"] = "1 to 120 characters"
    if not isinstance(fields, list) or not 0 < len(fields) <= 10:
        problems["form.fields"] = "1 to 10 fields"
        fields = []
    out = mpb.Form(form_id=f"f-{uuid.uuid4().hex[:12]}", title=str(title))
    for i, f in enumerate(fields):
        name = f.get("name") if isinstance(f, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
            problems[f"form.fields[{i}].name"] = "a-z, 0-9 and _"
            continue
        kind = FORM_TYPES.get(str(f.get("type", "text")))
        if kind is None:
            problems[f"form.fields[{i}].type"] = f"one of {', '.join(FORM_TYPES)}"
            continue
        label = str(f.get("label") or name)[:120]
        out.fields.add(name=name, label=label, type=kind, required=bool(f.get("required")))
    if problems:
        raise BadInput(problems)
    return out


def presence(body: dict[str, Any]) -> tuple[str, apb.Presence.ValueType]:
    """The presence a page sets (available, away or offline), and its value for the ACD."""
    name = body.get("presence")
    if name not in ("available", "away", "offline"):
        raise BadInput({"presence": "one of available, away, offline"})
    return str(name), apb.Presence.Value(f"PRESENCE_{str(name).upper()}")


def participant(body: dict[str, Any]) -> str:
    """The caller's participant id in the conversation, which the page learnt on joining."""
    found = body.get("participant")
    if not isinstance(found, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", found):
        raise BadInput({"participant": "required: the id the conversation gave on joining"})
    return found


def transfer(body: dict[str, Any]) -> mpb.Transfer:
    """A transfer as the desk describes it: to a queue, an agent or an expert in a subject."""
    to, target, note, stay = (
        body.get("to"),
        body.get("target"),
        body.get("note", ""),
        body.get("stay"),
    )
    fields = {}
    if to not in ("queue", "agent_id", "expertise"):
        fields["to"] = "one of queue, agent_id, expertise"
    if not isinstance(target, str) or not target.strip() or len(target) > 120:
        fields["target"] = "1 to 120 characters"
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        fields["note"] = f"at most {MAX_NOTE} characters"
    if not isinstance(stay, bool):
        fields["stay"] = "true or false"
    if fields:
        raise BadInput(fields)
    handover = mpb.Transfer(note=str(note), stay=bool(stay))
    target = str(target).strip()
    if to == "queue":
        handover.queue = target
    elif to == "agent_id":
        handover.agent_id = target
    else:
        handover.expert.CopyFrom(mpb.ExpertTarget(expertise=target))
    return handover


def message_text(body: dict[str, Any]) -> tuple[str, str]:
    """The text and client id of a message an agent sends."""
    fields = {}
    text, client_id = body.get("text"), body.get("id")
    if not isinstance(text, str) or not text.strip() or len(text) > 4000:
        fields["text"] = "1 to 4,000 characters"
    if not isinstance(client_id, str) or not _TOKEN.fullmatch(client_id):
        fields["id"] = "1 to 64 of A-Z a-z 0-9 _ . : -"
    if fields:
        raise BadInput(fields)
    return str(text), str(client_id)


def search_text(query: str, limit: int = 100) -> str:
    """What a search box sends: 1 to `limit` characters."""
    found = query.strip()
    if not 0 < len(found) <= limit:
        raise BadInput({"q": f"1 to {limit} characters"})
    return found


def followed(query: str) -> dict[str, tuple[int, bool]]:
    """The conversations a page follows, "<interaction id>:<last seq seen>[:m],...", at most
    20; ":m" monitors (a supervisor watching unseen)."""
    found: dict[str, tuple[int, bool]] = {}
    for part in filter(None, query.split(",")[:20]):
        iid, _, rest = part.partition(":")
        seq, _, mode = rest.partition(":")
        if re.fullmatch(r"[0-9a-f-]{36}", iid) and seq.isdigit() and mode in ("", "m"):
            found[iid] = (int(seq), mode == "m")
    return found


@dataclass(frozen=True)
class Kind:
    """A resource the administration page creates and lists through the tenants API."""

    stub: str  # Platform's attribute
    singular: str  # <verb><singular>
    plural: str  # List<plural>
    field: str  # the resource's field in the create request
    message: type[Message]
    create_request: type[Message]
    list_request: type[Message]
    # Flows are published, after the IVR's checks, not created as they come.
    creatable: bool = True
    # Knowledge is put (created or replaced), the rest created.
    verb: str = "Create"


ADMIN_KINDS = {
    "queues": Kind(
        "queues",
        "Queue",
        "Queues",
        "queue",
        tpb.Queue,
        tpb.CreateQueueRequest,
        tpb.ListQueuesRequest,
    ),
    "agents": Kind(
        "agents",
        "Agent",
        "Agents",
        "agent",
        tpb.Agent,
        tpb.CreateAgentRequest,
        tpb.ListAgentsRequest,
    ),
    "flows": Kind(
        "flows",
        "Flow",
        "Flows",
        "flow",
        tpb.Flow,
        tpb.PutFlowRequest,
        tpb.ListFlowsRequest,
        creatable=False,
    ),
    "channels": Kind(
        "channels",
        "Channel",
        "Channels",
        "channel",
        tpb.Channel,
        tpb.CreateChannelRequest,
        tpb.ListChannelsRequest,
    ),
    "templates": Kind(
        "notifications",
        "Template",
        "Templates",
        "template",
        tpb.NotificationTemplate,
        tpb.CreateTemplateRequest,
        tpb.ListTemplatesRequest,
    ),
    "rules": Kind(
        "notifications",
        "Rule",
        "Rules",
        "rule",
        tpb.NotificationRule,
        tpb.CreateRuleRequest,
        tpb.ListRulesRequest,
    ),
    "users": Kind(
        "users", "User", "Users", "user", tpb.User, tpb.CreateUserRequest, tpb.ListUsersRequest
    ),
    "articles": Kind(
        "knowledge",
        "Article",
        "Articles",
        "article",
        kpb.Article,
        kpb.PutArticleRequest,
        kpb.ListArticlesRequest,
        verb="Put",
    ),
    "canned_responses": Kind(
        "knowledge",
        "CannedResponse",
        "CannedResponses",
        "canned_response",
        kpb.CannedResponse,
        kpb.PutCannedResponseRequest,
        kpb.ListCannedResponsesRequest,
        verb="Put",
    ),
}


def creation(kind: Kind, tenant_id: str, body: dict[str, Any]) -> Message:
    """The create request a page's JSON describes (the resource, as the API's JSON names it;
    a person's first password beside it)."""
    resource = body.get(kind.field)
    if not isinstance(resource, dict):
        raise BadInput({kind.field: "required"})
    try:
        parsed = ParseDict(resource, kind.message())
    except ParseError as error:
        raise BadInput({kind.field: str(error)[:200]}) from None
    request = kind.create_request(tenant_id=tenant_id)
    getattr(request, kind.field).CopyFrom(parsed)
    if kind.field == "user":
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise BadInput({"password": "required"})
        request.password = password  # type: ignore[attr-defined]
    return request


GROUPINGS = {
    "queue": apb.REPORT_GROUPING_QUEUE,
    "agent": apb.REPORT_GROUPING_AGENT,
    "channel": apb.REPORT_GROUPING_CHANNEL,
}
REPORT_COLUMNS = (
    "key",
    "entered",
    "answered",
    "abandoned",
    "overflowed",
    "service_level_percent",
    "asa_seconds",
    "aht_seconds",
    "abandonment_percent",
    "rated",
    "csat_average",
)


def report_request(tenant_id: str, query: Mapping[str, str]) -> apb.ReportRequest:
    """A report over whole days (UTC), from `from` to `to` included, grouped as asked."""
    fields = {}
    days = []
    for name in ("from", "to"):
        try:
            days.append(date.fromisoformat(query.get(name, "")))
        except ValueError:
            fields[name] = "a date, such as 2026-01-31"
    group = GROUPINGS.get(query.get("group_by", "queue"))
    if group is None:
        fields["group_by"] = "one of queue, agent, channel"
    if not fields and days[1] < days[0]:
        fields["to"] = "on or after from"
    if fields:
        raise BadInput(fields)
    ask = apb.ReportRequest(tenant_id=tenant_id, group_by=group or apb.REPORT_GROUPING_QUEUE)
    start = datetime.combine(days[0], time(), UTC)
    ask.start_time.FromDatetime(start)
    ask.end_time.FromDatetime(datetime.combine(days[1], time(), UTC) + timedelta(days=1))
    return ask


def report_csv(found: apb.ReportResponse) -> str:
    """The report as CSV, one row per group, figures rounded to a tenth."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for row in found.rows:
        values = [getattr(row, c) for c in REPORT_COLUMNS]
        writer.writerow([round(v, 1) if isinstance(v, float) else v for v in values])
    return out.getvalue()


def summary(it: mpb.Interaction) -> dict[str, Any]:
    """A live conversation as the wall lists it."""
    staff = (mpb.PARTICIPANT_ROLE_AGENT, mpb.PARTICIPANT_ROLE_EXPERT)
    return {
        "id": it.id,
        "queue": it.queue,
        "state": mpb.InteractionState.Name(it.state),
        "customer": it.customer.display_name or it.customer.id,
        "agents": [
            p.display_name or p.subject_id
            for p in it.participants
            if p.role in staff and not p.HasField("leave_time")
        ],
    }


def flow(body: dict[str, Any]) -> tpb.Flow:
    """The flow a page sends, as the API's JSON names it."""
    found = body.get("flow")
    if not isinstance(found, dict):
        raise BadInput({"flow": "a flow, as JSON"})
    try:
        parsed: tpb.Flow = ParseDict(found, tpb.Flow())
    except ParseError as error:
        raise BadInput({"flow": str(error)[:300]}) from None
    return parsed


# What the tenant page changes of the tenant itself.
TENANT_SETTINGS = ("business_hours", "routing_policy")


def tenant_settings(tenant_id: str, body: dict[str, Any]) -> tpb.UpdateTenantRequest:
    """The update a page's business hours and routing policy describe; a key left out is not
    changed, one sent as null is cleared."""
    named = [key for key in TENANT_SETTINGS if key in body]
    if not named:
        raise BadInput({"body": f"one of {', '.join(TENANT_SETTINGS)}"})
    tenant = tpb.Tenant(id=tenant_id)
    fields = {}
    for key in named:
        if body[key] is None:
            continue
        if not isinstance(body[key], dict):
            fields[f"tenant.{key}"] = "an object, as JSON"
            continue
        try:
            ParseDict(body[key], getattr(tenant, key))
        except ParseError as error:
            fields[f"tenant.{key}"] = str(error)[:300]
    if fields:
        raise BadInput(fields)
    return tpb.UpdateTenantRequest(tenant=tenant, update_mask=FieldMask(paths=named))


def simulated_inputs(body: dict[str, Any]) -> list[ivr_pb.SimulatedInput]:
    """The customer's answers a simulation plays, in order (at most 50)."""
    answers = body.get("inputs", [])
    if not isinstance(answers, list) or len(answers) > 50:
        raise BadInput({"inputs": "a list of at most 50 answers"})
    if not all(isinstance(a, str) and len(a) <= 500 for a in answers):
        raise BadInput({"inputs": "answers of at most 500 characters"})
    return [ivr_pb.SimulatedInput(text=a) for a in answers]


def now() -> float:
    return datetime.now(UTC).timestamp()
