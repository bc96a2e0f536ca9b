"""What a tenant administrator is told about a bad notification template or rule (tenants
service domain, no I/O)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import Message
from tenant_examples import Case, cases, check_break, rule, template, violated_fields

from lianluo.services.tenants.domain import RULE, TEMPLATE
from lianluo.tenants.v1 import tenants_pb2 as pb

# ---------------------------------------------------------------- template


def _email_template(subject: str) -> pb.NotificationTemplate:
    t = template()
    t.channel = pb.DELIVERY_CHANNEL_EMAIL
    t.subject = subject
    return t


TEMPLATE_CASES: list[Case] = [
    ("bad name", template, lambda t: setattr(t, "name", "Case Closed"), "template.name"),
    ("no channel", template, lambda t: setattr(t, "channel", 0), "template.channel"),
    ("e-mail without subject", lambda: _email_template("  "), lambda t: None, "template.subject"),
    ("empty body", template, lambda t: setattr(t, "body", ""), "template.body"),
    ("body too long", template, lambda t: setattr(t, "body", "x" * 10_001), "template.body"),
    (
        "upper-case placeholder",
        template,
        lambda t: setattr(t, "body", "Dear {{Name}}"),
        "template.body",
    ),
    (
        "unclosed placeholder",
        template,
        lambda t: setattr(t, "body", "Dear {{name}"),
        "template.body",
    ),
    ("bad locale", template, lambda t: setattr(t, "locale", "english"), "template.locale"),
]


@pytest.mark.parametrize(("example", "breaks", "field"), cases(TEMPLATE_CASES))
def test_a_bad_template_field_is_named(
    example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    check_break(TEMPLATE, example, breaks, field)


def test_an_email_template_with_a_subject_and_a_full_body_is_valid() -> None:
    t = _email_template("Your case")
    t.body = "x" * 10_000
    t.locale = ""

    assert violated_fields(TEMPLATE, t) == []


# ---------------------------------------------------------------- rule


def _threshold(**fields: object) -> Callable[[Message], object]:
    values: dict[str, object] = {
        "event_type": "card_spend",
        "metric": "amount",
        "operator": pb.THRESHOLD_OPERATOR_GREATER,
        "threshold": 1000,
    }
    values.update(fields)
    return lambda r: r.threshold.CopyFrom(pb.ThresholdTrigger(**values))


def _schedule(date_attribute: str, days_before: int) -> Callable[[Message], object]:
    return lambda r: r.schedule.CopyFrom(
        pb.ScheduleTrigger(date_attribute=date_attribute, days_before=days_before)
    )


def _webhook(url: str, secret: str = "s" * 16) -> Callable[[Message], object]:
    return lambda r: r.webhook.CopyFrom(pb.WebhookTarget(url=url, signing_secret=secret))


def _email(address: str) -> Callable[[Message], object]:
    return lambda r: r.email.CopyFrom(pb.EmailTarget(from_address=address))


RULE_CASES: list[Case] = [
    ("bad name", rule, lambda r: setattr(r, "name", "Closed Loop"), "rule.name"),
    ("no trigger", rule, lambda r: r.ClearField("interaction_closed"), "rule.trigger"),
    ("no event type", rule, _threshold(event_type=""), "rule.threshold.event_type"),
    ("bad metric", rule, _threshold(metric="Amount"), "rule.threshold.metric"),
    ("no operator", rule, _threshold(operator=0), "rule.threshold.operator"),
    ("bad date attribute", rule, _schedule("Card Expiry", 30), "rule.schedule.date_attribute"),
    ("366 days before", rule, _schedule("card_expiry", 366), "rule.schedule.days_before"),
    ("negative days", rule, _schedule("card_expiry", -1), "rule.schedule.days_before"),
    ("no template", rule, lambda r: setattr(r, "template", ""), "rule.template"),
    ("no target", rule, lambda r: r.ClearField("webhook"), "rule.target"),
    ("ftp webhook", rule, _webhook("ftp://hooks.example.test/x"), "rule.webhook.url"),
    ("webhook without host", rule, _webhook("https://"), "rule.webhook.url"),
    ("webhook not a URL", rule, _webhook("hooks.example.test"), "rule.webhook.url"),
    (
        "short signing secret",
        rule,
        _webhook("https://hooks.example.test", "s" * 15),
        "rule.webhook.signing_secret",
    ),
    ("bad from address", rule, _email("ops.example.test"), "rule.email.from_address"),
    (
        "send time not a clock",
        rule,
        lambda r: r.schedule.CopyFrom(
            pb.ScheduleTrigger(date_attribute="card_expiry", days_before=30, send_time="9am")
        ),
        "rule.schedule.send_time",
    ),
    (
        "bad SMS channel name",
        rule,
        lambda r: r.sms.CopyFrom(pb.SmsTarget(channel="Texts!")),
        "rule.sms.channel",
    ),
]


@pytest.mark.parametrize(("example", "breaks", "field"), cases(RULE_CASES))
def test_a_bad_rule_field_is_named(
    example: Callable[[], Message], breaks: Callable[[Message], object], field: str
) -> None:
    check_break(RULE, example, breaks, field)


@pytest.mark.parametrize(
    "change",
    [
        _threshold(),
        _schedule("card_expiry", 0),
        _schedule("card_expiry", 365),
        _email("ops@example.test"),
        _webhook("http://hooks.example.test:8080/x"),
        lambda r: r.sms.CopyFrom(pb.SmsTarget()),
        lambda r: r.schedule.CopyFrom(
            pb.ScheduleTrigger(date_attribute="card_expiry", days_before=30, send_time="18:30")
        ),
    ],
    ids=["threshold", "schedule 0", "schedule 365", "email", "http with port", "sms", "at 18:30"],
)
def test_other_valid_triggers_and_targets_pass(change: Callable[[Message], object]) -> None:
    r = rule()
    change(r)

    assert violated_fields(RULE, r) == []


def test_an_empty_rule_gets_every_missing_field_in_one_error() -> None:
    assert violated_fields(RULE, pb.NotificationRule()) == [
        "rule.name",
        "rule.trigger",
        "rule.template",
        "rule.target",
    ]
