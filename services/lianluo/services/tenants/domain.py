"""Tenant configuration rules: what a valid tenant, agent, queue, flow, template or rule is.

Pure functions over the API's own messages (for configuration documents the proto message is
the domain type); no I/O, so every rule is testable without anything running.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from lianluo.common.v1 import common_pb2
from lianluo.domain import hours, notices, routing
from lianluo.domain.flows import AUDIO_NAME, AUDIO_NAME_RULE, validate_flow
from lianluo.domain.urls import is_web_url
from lianluo.runtime.errors import Violations
from lianluo.tenants.v1 import tenants_pb2 as pb

CELL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
TENANT_NAME = re.compile(r"^[a-z][a-z0-9-]{2,39}$")
RESOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
AGENT_NAME = re.compile(r"^[^\s]{1,120}$")
SKILL = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
ATTRIBUTE_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
MAX_DISPLAY_NAME = 200
MAX_BODY = 10_000
# What only the server sets; of a user, also the agent's id (from its name) and when the
# person's sessions ended.
SERVER_FIELDS = (
    "id",
    "tenant_id",
    "revision",
    "create_time",
    "update_time",
    "agent_id",
    "sessions_end_time",
)
MIN_PASSWORD = 12
MAX_QUOTA = 10_000_000


@dataclass(frozen=True)
class Kind:
    """One kind of tenant-owned resource and its rules."""

    name: str
    message: type[Message]
    # The request field that carries the message, and the one that carries its id.
    request_field: str
    id_field: str
    mutable: frozenset[str]
    validate: Callable[[Message, Violations, str], None]
    # Secrets accepted on write and never returned (they still reach the services via events).
    write_only: tuple[str, ...] = ()
    # Names of other resources this one refers to: (kind name, referenced name, field path).
    references: Callable[[Message], list[tuple[str, str, str]]] = field(default=lambda _m: [])


def _display_name(v: Violations, value: str, path: str) -> None:
    v.check(len(value) <= MAX_DISPLAY_NAME, path, f"at most {MAX_DISPLAY_NAME} characters")


def _skills(v: Violations, skills: Iterable[common_pb2.SkillLevel], path: str) -> None:
    seen: set[str] = set()
    for i, s in enumerate(skills):
        if v.check(bool(SKILL.fullmatch(s.skill)), f"{path}[{i}].skill", "must be a skill name"):
            v.check(s.skill not in seen, f"{path}[{i}].skill", f"{s.skill} is listed twice")
            seen.add(s.skill)
        v.check(1 <= s.level <= 10, f"{path}[{i}].level", "must be 1 to 10")


def _language(v: Violations, tag: str, path: str) -> None:
    v.check(
        bool(LANGUAGE.fullmatch(tag)), path, "must be a BCP 47 language tag such as en or zh-CN"
    )


def validate_tenant(t: Message, v: Violations, p: str = "tenant") -> None:
    assert isinstance(t, pb.Tenant)
    v.check(bool(TENANT_NAME.fullmatch(t.name)), f"{p}.name", "must be 3-40 of a-z 0-9 -")
    _display_name(v, t.display_name, f"{p}.display_name")
    v.check(t.plan != pb.PLAN_UNSPECIFIED, f"{p}.plan", "must be set")
    v.check(
        1 <= t.expected_concurrent_sessions <= 1_000_000,
        f"{p}.expected_concurrent_sessions",
        "must be 1 to 1000000",
    )
    v.check(len(t.channels) > 0, f"{p}.channels", "at least one channel")
    for i, channel in enumerate(t.channels):
        v.check(channel != common_pb2.CHANNEL_UNSPECIFIED, f"{p}.channels[{i}]", "must be set")
    v.check(len(set(t.channels)) == len(t.channels), f"{p}.channels", "a channel is listed twice")
    if t.cell:
        v.check(bool(CELL.fullmatch(t.cell)), f"{p}.cell", "must be a DNS label such as cell-2")
    for f in t.quotas.DESCRIPTOR.fields:
        value = getattr(t.quotas, f.name)
        v.check(0 <= value <= MAX_QUOTA, f"{p}.quotas.{f.name}", f"0 (the plan's) to {MAX_QUOTA:,}")
    if t.HasField("oidc"):
        o = t.oidc
        v.check(is_web_url(o.issuer), f"{p}.oidc.issuer", "must be an http or https URL")
        v.check(0 < len(o.audience) <= 200, f"{p}.oidc.audience", "1 to 200 characters")
        v.check(is_web_url(o.jwks_uri), f"{p}.oidc.jwks_uri", "must be an http or https URL")
    if t.HasField("routing_policy"):
        try:
            routing.check_layer(routing.layer_of(t.routing_policy))
        except (KeyError, TypeError, ValueError) as error:
            v.add(f"{p}.routing_policy", str(error))
    if t.HasField("business_hours"):
        for path, message in hours.problems(t.business_hours, f"{p}.business_hours"):
            v.add(path, message)
    if t.HasField("notices"):
        for path, message in notices.problems(t.notices, f"{p}.notices"):
            v.add(path, message)


def validate_password(password: str, path: str = "password") -> None:
    v = Violations()
    v.check(
        MIN_PASSWORD <= len(password) <= 200,
        path,
        f"at least {MIN_PASSWORD} characters, at most 200",
    )
    v.raise_if_any()


def validate_user(u: Message, v: Violations, p: str = "user") -> None:
    assert isinstance(u, pb.User)
    v.check(bool(AGENT_NAME.fullmatch(u.name)), f"{p}.name", "must be 1-120 characters, no spaces")
    _display_name(v, u.display_name, f"{p}.display_name")
    v.check(u.role != pb.ROLE_UNSPECIFIED, f"{p}.role", "must be set")
    if u.role == pb.ROLE_AGENT:
        v.check(bool(u.agent), f"{p}.agent", "an agent's user names their agent")
    else:
        v.check(not u.agent, f"{p}.agent", "only an agent's user names an agent")
    if u.role == pb.ROLE_SUPERVISOR:
        v.check(len(u.queues) > 0, f"{p}.queues", "a supervisor watches at least one queue")
    else:
        v.check(not u.queues, f"{p}.queues", "only a supervisor has queues")
    v.check(len(set(u.queues)) == len(u.queues), f"{p}.queues", "a queue is listed twice")
    v.check(len(u.external_subject) <= 255, f"{p}.external_subject", "at most 255 characters")


def validate_agent(a: Message, v: Violations, p: str = "agent") -> None:
    assert isinstance(a, pb.Agent)
    v.check(bool(AGENT_NAME.fullmatch(a.name)), f"{p}.name", "must be 1-120 characters, no spaces")
    _display_name(v, a.display_name, f"{p}.display_name")
    v.check(a.kind != pb.AGENT_KIND_UNSPECIFIED, f"{p}.kind", "must be set")
    _skills(v, a.skills, f"{p}.skills")
    for i, group in enumerate(a.groups):
        v.check(bool(RESOURCE_NAME.fullmatch(group)), f"{p}.groups[{i}]", "must be a name")
    for i, tag in enumerate(a.languages):
        _language(v, tag, f"{p}.languages[{i}]")
    v.check(len(a.capacity) > 0, f"{p}.capacity", "at least one media with its capacity")
    media_seen: set[int] = set()
    for i, c in enumerate(a.capacity):
        at = f"{p}.capacity[{i}]"
        if v.check(c.media != common_pb2.MEDIA_TYPE_UNSPECIFIED, f"{at}.media", "must be set"):
            v.check(c.media not in media_seen, f"{at}.media", "a media is listed twice")
            media_seen.add(c.media)
        v.check(1 <= c.max_concurrent <= 100, f"{at}.max_concurrent", "must be 1 to 100")
    for i, intent in enumerate(a.expertise):
        v.check(bool(SKILL.fullmatch(intent)), f"{p}.expertise[{i}]", "must be an intent name")
    v.check(0 <= a.sales_conversion <= 1, f"{p}.sales_conversion", "must be 0 to 1")
    v.check(len(a.attributes) <= 50, f"{p}.attributes", "at most 50 attributes")
    for key, value in a.attributes.items():
        v.check(bool(ATTRIBUTE_KEY.fullmatch(key)), f"{p}.attributes[{key}]", "bad attribute name")
        v.check(len(value) <= 500, f"{p}.attributes[{key}]", "at most 500 characters")
    if a.sip_password:
        v.check(12 <= len(a.sip_password) <= 128, f"{p}.sip_password", "12 to 128 characters")


def validate_queue(q: Message, v: Violations, p: str = "queue") -> None:
    assert isinstance(q, pb.Queue)
    v.check(bool(RESOURCE_NAME.fullmatch(q.name)), f"{p}.name", "must be 1-63 of a-z 0-9 _ -")
    _display_name(v, q.display_name, f"{p}.display_name")
    _skills(v, q.required_skills, f"{p}.required_skills")
    v.check(1 <= q.priority <= 10, f"{p}.priority", "must be 1 to 10")
    sl = q.service_level
    v.check(
        1 <= sl.threshold_seconds <= 3600,
        f"{p}.service_level.threshold_seconds",
        "must be 1 to 3600",
    )
    v.check(1 <= sl.target_percent <= 100, f"{p}.service_level.target_percent", "must be 1-100")
    v.check(1 <= q.max_wait_seconds <= 86_400, f"{p}.max_wait_seconds", "must be 1 to 86400")
    v.check(q.overflow.kind != pb.OVERFLOW_KIND_UNSPECIFIED, f"{p}.overflow.kind", "must be set")
    if q.overflow.kind == pb.OVERFLOW_KIND_QUEUE and v.check(
        bool(q.overflow.target_queue), f"{p}.overflow.target_queue", "must be set"
    ):
        v.check(
            q.overflow.target_queue != q.name,
            f"{p}.overflow.target_queue",
            "a queue cannot overflow to itself",
        )
    v.check(q.media != common_pb2.MEDIA_TYPE_UNSPECIFIED, f"{p}.media", "must be set")
    if q.language:
        _language(v, q.language, f"{p}.language")


def validate_flow_document(f: Message, v: Violations, p: str = "flow") -> None:
    assert isinstance(f, pb.Flow)
    v.check(bool(RESOURCE_NAME.fullmatch(f.name)), f"{p}.name", "must be 1-63 of a-z 0-9 _ -")
    for problem in validate_flow(f, p):
        v.add(problem.field, problem.reason)


def validate_template(t: Message, v: Violations, p: str = "template") -> None:
    assert isinstance(t, pb.NotificationTemplate)
    v.check(bool(RESOURCE_NAME.fullmatch(t.name)), f"{p}.name", "must be 1-63 of a-z 0-9 _ -")
    v.check(t.channel != pb.DELIVERY_CHANNEL_UNSPECIFIED, f"{p}.channel", "must be set")
    if t.channel == pb.DELIVERY_CHANNEL_EMAIL:
        v.check(bool(t.subject.strip()), f"{p}.subject", "an e-mail template needs a subject")
    v.check(0 < len(t.body) <= MAX_BODY, f"{p}.body", f"must be 1 to {MAX_BODY} characters")
    v.check(
        t.body.count("{{") == len(PLACEHOLDER.findall(t.body)),
        f"{p}.body",
        "placeholders are written {{name}} with a lower-case name",
    )
    if t.locale:
        _language(v, t.locale, f"{p}.locale")


def validate_rule(r: Message, v: Violations, p: str = "rule") -> None:
    assert isinstance(r, pb.NotificationRule)
    v.check(bool(RESOURCE_NAME.fullmatch(r.name)), f"{p}.name", "must be 1-63 of a-z 0-9 _ -")
    trigger = r.WhichOneof("trigger")
    v.check(trigger is not None, f"{p}.trigger", "one of interaction_closed, threshold, schedule")
    if trigger == "threshold":
        t = r.threshold
        v.check(bool(SKILL.fullmatch(t.event_type)), f"{p}.threshold.event_type", "must be a name")
        v.check(bool(SKILL.fullmatch(t.metric)), f"{p}.threshold.metric", "must be a name")
        v.check(
            t.operator != pb.THRESHOLD_OPERATOR_UNSPECIFIED,
            f"{p}.threshold.operator",
            "must be set",
        )
    if trigger == "schedule":
        s = r.schedule
        v.check(
            bool(ATTRIBUTE_KEY.fullmatch(s.date_attribute)), f"{p}.schedule.date_attribute", "bad"
        )
        v.check(0 <= s.days_before <= 365, f"{p}.schedule.days_before", "must be 0 to 365")
        v.check(
            not s.send_time or notices.CLOCK.fullmatch(s.send_time) is not None,
            f"{p}.schedule.send_time",
            "must be HH:MM, 00:00 to 23:59",
        )
    v.check(bool(r.template), f"{p}.template", "must name a template")
    target = r.WhichOneof("target")
    v.check(target is not None, f"{p}.target", "one of webhook, email, sms or in_app")
    if target == "webhook":
        v.check(
            is_web_url(r.webhook.url),
            f"{p}.webhook.url",
            "must be an http or https URL",
        )
        v.check(
            len(r.webhook.signing_secret) >= 16,
            f"{p}.webhook.signing_secret",
            "at least 16 characters",
        )
    if target == "email":
        v.check(
            bool(EMAIL.fullmatch(r.email.from_address)), f"{p}.email.from_address", "bad address"
        )
    if target == "sms" and r.sms.channel:
        v.check(
            bool(RESOURCE_NAME.fullmatch(r.sms.channel)), f"{p}.sms.channel", "must name a channel"
        )


E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def validate_channel(c: Message, v: Violations, p: str = "channel") -> None:
    assert isinstance(c, pb.Channel)
    v.check(bool(RESOURCE_NAME.fullmatch(c.name)), f"{p}.name", "must be 1-63 of a-z 0-9 _ -")
    _display_name(v, c.display_name, f"{p}.display_name")
    entry = c.WhichOneof("entry")
    v.check(entry is not None, f"{p}.entry", "one of flow or queue")
    if entry is not None:
        v.check(bool(getattr(c, entry)), f"{p}.{entry}", "must name one")
    kind = c.WhichOneof("kind")
    v.check(kind is not None, f"{p}.kind", "one of web, email, sms, wechat, voice")
    if kind == "sms":
        s = c.sms
        v.check(bool(E164.fullmatch(s.number)), f"{p}.sms.number", "an E.164 number: + and digits")
        v.check(0 < len(s.account_sid) <= 64, f"{p}.sms.account_sid", "1 to 64 characters")
        v.check(16 <= len(s.auth_token) <= 128, f"{p}.sms.auth_token", "16 to 128 characters")
        v.check(is_web_url(s.api_base_url), f"{p}.sms.api_base_url", "an http or https URL")
    if kind == "voice":
        numbers = list(c.voice.numbers)
        v.check(0 < len(numbers) <= 20, f"{p}.voice.numbers", "1 to 20 numbers")
        for i, number in enumerate(numbers):
            v.check(bool(E164.fullmatch(number)), f"{p}.voice.numbers[{i}]", "an E.164 number")
        v.check(len(set(numbers)) == len(numbers), f"{p}.voice.numbers", "a number is listed twice")
        v.check(c.voice.language in ("", "en", "zh"), f"{p}.voice.language", "en or zh")
        hold = c.voice.hold_audio
        v.check(
            not hold or bool(AUDIO_NAME.fullmatch(hold)), f"{p}.voice.hold_audio", AUDIO_NAME_RULE
        )
    if kind == "wechat":
        w = c.wechat
        v.check(
            bool(re.fullmatch(r"wx[0-9a-f]{16}", w.app_id)),
            f"{p}.wechat.app_id",
            "wx and 16 hex digits",
        )
        v.check(
            bool(re.fullmatch(r"[A-Za-z0-9]{3,32}", w.token)),
            f"{p}.wechat.token",
            "3 to 32 letters and digits",
        )
        v.check(16 <= len(w.app_secret) <= 64, f"{p}.wechat.app_secret", "16 to 64 characters")
        v.check(is_web_url(w.api_base_url), f"{p}.wechat.api_base_url", "an http or https URL")
    if kind == "email":
        v.check(bool(EMAIL.fullmatch(c.email.address)), f"{p}.email.address", "an e-mail address")
        v.check(len(c.email.address) <= 254, f"{p}.email.address", "at most 254 characters")
        _display_name(v, c.email.display_name, f"{p}.email.display_name")
    if kind == "web":
        origins = c.web.allowed_origins
        v.check(0 < len(origins) <= 20, f"{p}.web.allowed_origins", "1 to 20 origins")
        for i, origin in enumerate(origins):
            v.check(
                bool(ORIGIN.fullmatch(origin)),
                f"{p}.web.allowed_origins[{i}]",
                "an origin: http(s)://host[:port], no path",
            )
        _display_name(v, c.web.title, f"{p}.web.title")


def _channel_references(c: Message) -> list[tuple[str, str, str]]:
    assert isinstance(c, pb.Channel)
    entry = c.WhichOneof("entry")
    return [(entry, getattr(c, entry), f"channel.{entry}")] if entry else []


def _user_references(u: Message) -> list[tuple[str, str, str]]:
    assert isinstance(u, pb.User)
    refs = [("queue", q, f"user.queues[{i}]") for i, q in enumerate(u.queues)]
    return refs + ([("agent", u.agent, "user.agent")] if u.agent else [])


def _queue_references(q: Message) -> list[tuple[str, str, str]]:
    assert isinstance(q, pb.Queue)
    if q.overflow.kind == pb.OVERFLOW_KIND_QUEUE and q.overflow.target_queue:
        return [("queue", q.overflow.target_queue, "queue.overflow.target_queue")]
    return []


def _flow_references(f: Message) -> list[tuple[str, str, str]]:
    assert isinstance(f, pb.Flow)
    return [
        ("queue", node.route_to_queue.queue, f"flow.nodes[{i}].route_to_queue.queue")
        for i, node in enumerate(f.nodes)
        if node.WhichOneof("kind") == "route_to_queue" and node.route_to_queue.queue
    ]


def _rule_references(r: Message) -> list[tuple[str, str, str]]:
    assert isinstance(r, pb.NotificationRule)
    found = [("notification_template", r.template, "rule.template")] if r.template else []
    if r.WhichOneof("target") == "sms" and r.sms.channel:
        found.append(("channel", r.sms.channel, "rule.sms.channel"))
    return found


TENANT = Kind(
    "tenant",
    pb.Tenant,
    "tenant",
    "tenant_id",
    frozenset(
        {
            "display_name",
            "plan",
            "expected_concurrent_sessions",
            "channels",
            "cell",
            "quotas",
            "oidc",
            "routing_policy",
            "business_hours",
            "redaction",
            "notices",
        }
    ),
    validate_tenant,
)
AGENT = Kind(
    "agent",
    pb.Agent,
    "agent",
    "agent_id",
    frozenset(
        {
            "display_name",
            "kind",
            "skills",
            "groups",
            "languages",
            "capacity",
            "expertise",
            "sales_conversion",
            "attributes",
            "sip_password",
        }
    ),
    validate_agent,
    write_only=("sip_password",),
)
QUEUE = Kind(
    "queue",
    pb.Queue,
    "queue",
    "queue_id",
    frozenset(
        {
            "display_name",
            "required_skills",
            "priority",
            "service_level",
            "max_wait_seconds",
            "overflow",
            "media",
            "language",
        }
    ),
    validate_queue,
    references=_queue_references,
)
FLOW = Kind(
    "flow",
    pb.Flow,
    "flow",
    "flow_id",
    frozenset({"entry_node", "nodes"}),
    validate_flow_document,
    references=_flow_references,
)
TEMPLATE = Kind(
    "notification_template",
    pb.NotificationTemplate,
    "template",
    "template_id",
    frozenset({"channel", "subject", "body", "locale"}),
    validate_template,
)
RULE = Kind(
    "notification_rule",
    pb.NotificationRule,
    "rule",
    "rule_id",
    frozenset(
        {
            "interaction_closed",
            "threshold",
            "schedule",
            "template",
            "webhook",
            "email",
            "sms",
            "in_app",
            "enabled",
        }
    ),
    validate_rule,
    write_only=("webhook.signing_secret",),
    references=_rule_references,
)
USER = Kind(
    "user",
    pb.User,
    "user",
    "user_id",
    frozenset({"display_name", "role", "agent", "queues", "disabled", "external_subject"}),
    validate_user,
    references=_user_references,
)
CHANNEL = Kind(
    "channel",
    pb.Channel,
    "channel",
    "channel_id",
    frozenset({"display_name", "flow", "queue", "web", "email", "sms", "wechat", "voice"}),
    validate_channel,
    write_only=("sms.auth_token", "wechat.token", "wechat.app_secret"),
    references=_channel_references,
)
KINDS = {k.name: k for k in (TENANT, AGENT, QUEUE, FLOW, TEMPLATE, RULE, USER, CHANNEL)}


def validate(kind: Kind, message: Message) -> None:
    """Raise InvalidArgument naming every bad field of `message`."""
    v = Violations()
    kind.validate(message, v, kind.request_field)
    v.raise_if_any()


def apply_update(
    kind: Kind, stored: Message, patch: Message, mask: field_mask_pb2.FieldMask
) -> Message:
    """The stored resource with the masked fields taken from `patch` (all mutable if empty)."""
    paths = list(mask.paths) or sorted(kind.mutable)
    v = Violations()
    for i, path in enumerate(paths):
        v.check(path in kind.mutable, f"update_mask.paths[{i}]", f"{path!r} cannot be changed")
    v.raise_if_any()
    updated = type(stored)()
    updated.CopyFrom(stored)
    oneofs = {f.name: f.containing_oneof for f in stored.DESCRIPTOR.fields if f.containing_oneof}
    for path in paths:
        # A oneof member replaces its siblings only when it is set in the patch.
        if path in oneofs and patch.WhichOneof(oneofs[path].name) != path:
            continue
        updated.ClearField(path)
        field_mask_pb2.FieldMask(paths=[path]).MergeMessage(
            patch, updated, replace_message_field=True, replace_repeated_field=True
        )
    return updated


def redact(kind: Kind, message: Message) -> Message:
    """A copy without the kind's write-only secrets, for API responses."""
    if not kind.write_only:
        return message
    out = type(message)()
    out.CopyFrom(message)
    for path in kind.write_only:
        parent_name, _, leaf = path.partition(".")
        if not leaf:  # a field of the resource itself
            out.ClearField(parent_name)
        elif out.HasField(parent_name):
            getattr(out, parent_name).ClearField(leaf)
    return out


def directory_entry(agent: Message) -> pb.DirectoryEntry:
    """What the directory shows of an agent: who they are and what they know."""
    assert isinstance(agent, pb.Agent)
    return pb.DirectoryEntry(
        agent_id=agent.id,
        name=agent.name,
        display_name=agent.display_name,
        kind=agent.kind,
        skills=[s.skill for s in agent.skills],
        expertise=agent.expertise,
        languages=agent.languages,
    )
