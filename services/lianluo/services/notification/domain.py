"""Notification rules: which rule fires, what the notice says, and to whom it goes.

Pure functions and values; no I/O, so every rule is testable without anything running.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from lianluo.domain import notices
from lianluo.media.v1 import media_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime import validation
from lianluo.runtime.errors import InvalidArgument
from lianluo.services.notification.deliveries import (
    EMAIL,
    FAILED,
    IN_APP,
    SMS,
    WEBHOOK,
    Delivery,
    gateway_request,
)
from lianluo.tenants.v1 import tenants_pb2 as tpb

# The tenants service writes {{lower_case}}; anything name-like is accepted when rendering.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
EMAIL_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass(frozen=True)
class Rendered:
    text: str
    # Placeholders with no value; they render empty.
    unknown: tuple[str, ...] = ()


def render(text: str, context: Mapping[str, str]) -> Rendered:
    """Replace every {{name}} with its value from `context`; unknown names become empty."""
    unknown: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in context:
            return context[name]
        unknown.append(name)
        return ""

    return Rendered(PLACEHOLDER.sub(value, text), tuple(dict.fromkeys(unknown)))


@dataclass(frozen=True)
class Customer:
    """Whom a notice is for, as far as the platform knows."""

    id: str = ""
    name: str = ""
    email: str = ""
    phone: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


def customer_of(interaction: media_pb2.Interaction) -> Customer:
    """The interaction's customer; the address counts as e-mail or phone when it looks like one."""
    c = interaction.customer
    attributes = dict(c.attributes)
    email = attributes.get("email", "")
    phone = attributes.get("phone", "")
    if not email and EMAIL_ADDRESS.match(c.address):
        email = c.address
    if not phone and E164.match(c.address):
        phone = c.address
    return Customer(c.id, c.display_name, email, phone, attributes)


def business_customer(
    customer_id: str, attributes: Mapping[str, str], known: Customer | None
) -> Customer:
    """The customer of a business event: its own attributes first, then the last contact seen."""
    known = known or Customer(id=customer_id)
    return Customer(
        customer_id,
        attributes.get("customer_name", known.name),
        attributes.get("email", known.email),
        attributes.get("phone", known.phone),
        {**known.attributes, **attributes},
    )


def customer_context(customer: Customer) -> dict[str, str]:
    # Attributes come first so that a stray attribute never overrides a built-in value.
    return {
        **customer.attributes,
        "customer_id": customer.id,
        "customer_name": customer.name,
        "customer_email": customer.email,
        "customer_phone": customer.phone,
    }


def closed_context(
    interaction_id: str, end: media_pb2.InteractionEnd, customer: Customer
) -> dict[str, str]:
    """What a closed-interaction template can say."""
    return {
        **customer_context(customer),
        "interaction_id": interaction_id,
        # The example templates speak of the customer's "case".
        "case_id": interaction_id,
        "resolution": end.resolution.code,
        "resolution_note": end.resolution.note,
    }


def fires_on_close(rule: tpb.NotificationRule, resolution: str) -> bool:
    """An enabled interaction_closed rule whose resolutions are empty or include `resolution`."""
    if not rule.enabled or rule.WhichOneof("trigger") != "interaction_closed":
        return False
    wanted = rule.interaction_closed.resolutions
    return not wanted or resolution in wanted


_COMPARE = {
    tpb.THRESHOLD_OPERATOR_GREATER: lambda v, t: v > t,
    tpb.THRESHOLD_OPERATOR_GREATER_OR_EQUAL: lambda v, t: v >= t,
    tpb.THRESHOLD_OPERATOR_LESS: lambda v, t: v < t,
    tpb.THRESHOLD_OPERATOR_LESS_OR_EQUAL: lambda v, t: v <= t,
}


def fires_on_threshold(
    rule: tpb.NotificationRule, event_type: str, metrics: Mapping[str, float]
) -> bool:
    """An enabled threshold rule on this event type whose metric crosses the threshold."""
    if not rule.enabled or rule.WhichOneof("trigger") != "threshold":
        return False
    t = rule.threshold
    compare = _COMPARE.get(t.operator)
    value = metrics.get(t.metric)
    if t.event_type != event_type or compare is None or value is None or math.isnan(value):
        return False
    return bool(compare(value, t.threshold))


def format_number(value: float) -> str:
    """12000.0 reads as "12000" in a notice; fractions stay."""
    return str(int(value)) if value.is_integer() else repr(value)


def fires_on_schedule(rule: tpb.NotificationRule, attributes: Mapping[str, str]) -> bool:
    """An enabled schedule rule whose date attribute the business event carries."""
    if not rule.enabled or rule.WhichOneof("trigger") != "schedule":
        return False
    return bool(attributes.get(rule.schedule.date_attribute, "").strip())


def event_context(
    event_type: str,
    metrics: Mapping[str, float],
    attributes: Mapping[str, str],
    customer: Customer,
) -> dict[str, str]:
    """What a template fired by a business event can say: its metrics and attributes."""
    return {
        **attributes,
        **{name: format_number(v) for name, v in metrics.items()},
        **customer_context(customer),
        "event_type": event_type,
    }


def threshold_context(
    rule: tpb.NotificationRule,
    event_type: str,
    metrics: Mapping[str, float],
    attributes: Mapping[str, str],
    customer: Customer,
) -> dict[str, str]:
    """A business event's context, and the threshold the rule compared with."""
    return {
        **event_context(event_type, metrics, attributes, customer),
        "metric": rule.threshold.metric,
        "value": format_number(metrics.get(rule.threshold.metric, 0.0)),
        "threshold": format_number(rule.threshold.threshold),
    }


# ---------------------------------------------------------------- new deliveries


@dataclass(frozen=True)
class Fired:
    """A delivery about to be created, and the placeholders its template lacked values for."""

    delivery: Delivery
    unknown_placeholders: tuple[str, ...] = ()


def _rendered(
    template: tpb.NotificationTemplate | None, context: Mapping[str, str]
) -> tuple[str, str, tuple[str, ...]]:
    if template is None:
        return "", "", ()
    subject, body = render(template.subject, context), render(template.body, context)
    return subject.text, body.text, tuple(dict.fromkeys(subject.unknown + body.unknown))


def _undeliverable(d: Delivery, template: tpb.NotificationTemplate | None) -> str:
    """Why a new delivery can never be sent, or "" when it can."""
    if template is None:
        return f"template {d.template!r} not found"
    if d.channel == EMAIL and not d.email_address:
        return "the customer has no e-mail address"
    if d.channel == SMS and not d.phone_number:
        return "the customer has no phone number"
    if d.channel == IN_APP and not d.customer_id:
        return "the notice names no customer"
    if d.channel in (SMS, IN_APP):
        # What the gateway would refuse (a rendered text over its size, say) fails now.
        try:
            validation.check_request(gateway_request(d))
        except InvalidArgument as error:
            return f"the gateway would refuse it: {error.message}"
    return ""


def _settled(d: Delivery, template: tpb.NotificationTemplate | None) -> Delivery:
    # An undeliverable notice is still recorded, FAILED, so the tenant can see why nothing came.
    reason = _undeliverable(d, template)
    if reason:
        return replace(d, status=FAILED, last_error=reason, next_attempt_at=None)
    return d


def rule_delivery(
    *,
    rule: tpb.NotificationRule,
    template: tpb.NotificationTemplate | None,
    tenant_id: str,
    source_key: str,
    source_event_id: str,
    customer: Customer,
    context: Mapping[str, str],
    details: Mapping[str, str],
    now: datetime,
    due: datetime | None = None,
) -> Fired:
    """The delivery `rule` fires for `source_key` (an interaction or a business event), due
    at once or at `due`."""
    subject, body, unknown = _rendered(template, context)
    target = rule.WhichOneof("target")
    email, sms = target == "email", target == "sms"
    channel = {"email": EMAIL, "sms": SMS, "in_app": IN_APP}.get(target or "", WEBHOOK)
    d = Delivery(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        template=rule.template,
        channel=channel,
        body=body,
        subject=subject,
        created_at=now,
        updated_at=now,
        next_attempt_at=due or now,
        rule_id=rule.id,
        rule_name=rule.name,
        source_key=source_key,
        source_event_id=source_event_id,
        customer_id=customer.id,
        email_address=customer.email if email else "",
        phone_number=customer.phone if sms else "",
        from_address=rule.email.from_address if email else "",
        webhook_url=rule.webhook.url,
        signing_secret=rule.webhook.signing_secret,
        sms_channel=rule.sms.channel,
        time_zone=customer.attributes.get("time_zone", ""),
        quiet_hours=customer.attributes.get("quiet_hours", ""),
        context=dict(details),
    )
    return Fired(_settled(d, template), unknown)


def notify_delivery(
    request: npb.NotifyRequest,
    template: tpb.NotificationTemplate,
    from_address: str,
    now: datetime,
) -> Fired:
    """The delivery a Notify request asks for; the request's variables fill the template."""
    r = request.recipient
    context = {**request.variables, "customer_id": r.customer_id}
    subject, body, unknown = _rendered(template, context)
    d = Delivery(
        id=uuid.uuid4(),
        tenant_id=request.tenant_id,
        template=template.name,
        channel=template.channel,
        body=body,
        subject=subject,
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
        request_id=request.request_id,
        customer_id=r.customer_id,
        email_address=r.email_address,
        phone_number=r.phone_number,
        webhook_url=r.webhook.url,
        signing_secret=r.webhook.signing_secret,
        from_address=from_address,
        context={"trigger": "notify"},
    )
    return Fired(_settled(d, template), unknown)


# ---------------------------------------------------------------- about to go out


@dataclass(frozen=True)
class Recent:
    """Notices a recipient got lately: how many, the oldest, and when they last got the same
    text (None: not lately)."""

    sent: int
    oldest: datetime | None
    same_text: datetime | None


@dataclass(frozen=True)
class Verdict:
    """What becomes of a claimed delivery: sent now (both empty), held until a time, or not
    sent at all (`refused`, why)."""

    hold_until: datetime | None = None
    refused: str = ""
    reason: str = ""


SEND = Verdict()
# The channels that reach the customer: a webhook goes to the tenant's own system, which has
# its own rules.
TO_CUSTOMER = frozenset({EMAIL, SMS})


def verdict(d: Delivery, limits: notices.Limits, recent: Recent, now: datetime) -> Verdict:
    """Whether a notice goes out now: not a text the customer just got (from any rule), not in
    their quiet hours, not over their daily count."""
    if d.channel not in TO_CUSTOMER:
        return SEND
    if recent.same_text is not None and d.attempts <= 1:
        return Verdict(refused=f"the same text went to the customer at {recent.same_text:%c} UTC")
    where = notices.customer_zone(d.time_zone, limits)
    quiet = notices.parse_quiet(d.quiet_hours) or limits.quiet
    until = notices.quiet_until(now, where, quiet)
    if until is not None:
        return Verdict(hold_until=until, reason="quiet hours")
    if recent.sent >= limits.per_day and recent.oldest is not None:
        return Verdict(hold_until=recent.oldest + timedelta(days=1), reason="daily count")
    return SEND
