"""Notification rules without I/O: rendering, which rule fires, retries, signing, and requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lianluo.media.v1 import media_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime.errors import InvalidArgument
from lianluo.services.notification import deliveries, domain, validation
from lianluo.services.notification.deliveries import (
    DELIVERED,
    FAILED,
    PENDING,
    AttemptResult,
    Delivery,
    RetryPolicy,
)
from lianluo.tenants.v1 import tenants_pb2 as tpb

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=5, cap_seconds=60, max_attempts=4)


def closed_rule(*resolutions: str, enabled: bool = True) -> tpb.NotificationRule:
    return tpb.NotificationRule(
        id="r1",
        name="closed-loop",
        interaction_closed=tpb.InteractionClosedTrigger(resolutions=list(resolutions)),
        template="case-closed",
        webhook=tpb.WebhookTarget(url="https://hooks.example.test/x", signing_secret="s" * 20),
        enabled=enabled,
    )


def a_delivery(**overrides: object) -> Delivery:
    values: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "tenant_id": "t1",
        "template": "case-closed",
        "channel": deliveries.WEBHOOK,
        "body": "Your case is resolved.",
        "created_at": NOW,
        "webhook_url": "https://hooks.example.test/x",
        "signing_secret": "s" * 20,
        **overrides,
    }
    return Delivery(**values)  # type: ignore[arg-type]


def test_render_fills_known_placeholders_and_empties_unknown_ones() -> None:
    rendered = domain.render(
        "Hi {{ name }}, case {{case_id}}{{missing}}.", {"name": "Li", "case_id": "7"}
    )
    assert rendered.text == "Hi Li, case 7."
    assert rendered.unknown == ("missing",)


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=50))
def test_text_without_placeholders_is_unchanged(text: str) -> None:
    assert domain.render(text, {}).text == text


@pytest.mark.parametrize(
    ("rule", "resolution", "fires"),
    [
        (closed_rule(), "anything", True),
        (closed_rule("resolved"), "resolved", True),
        (closed_rule("resolved"), "unresolved", False),
        (closed_rule("resolved", enabled=False), "resolved", False),
    ],
)
def test_closed_rules_fire_on_their_resolutions(
    rule: tpb.NotificationRule, resolution: str, fires: bool
) -> None:
    assert domain.fires_on_close(rule, resolution) is fires


@pytest.mark.parametrize(
    ("operator", "amount", "fires"),
    [
        (tpb.THRESHOLD_OPERATOR_GREATER, 10001, True),
        (tpb.THRESHOLD_OPERATOR_GREATER, 10000, False),
        (tpb.THRESHOLD_OPERATOR_GREATER_OR_EQUAL, 10000, True),
        (tpb.THRESHOLD_OPERATOR_LESS, 9999, True),
        (tpb.THRESHOLD_OPERATOR_LESS_OR_EQUAL, 10001, False),
        (tpb.THRESHOLD_OPERATOR_UNSPECIFIED, 20000, False),
    ],
)
def test_threshold_rules_compare_the_metric(operator: int, amount: float, fires: bool) -> None:
    rule = tpb.NotificationRule(
        enabled=True,
        threshold=tpb.ThresholdTrigger(
            event_type="card_spend",
            metric="amount",
            operator=operator,
            threshold=10000,  # type: ignore[arg-type]
        ),
    )
    assert domain.fires_on_threshold(rule, "card_spend", {"amount": amount}) is fires
    assert not domain.fires_on_threshold(rule, "card_expiry", {"amount": amount})
    assert not domain.fires_on_threshold(rule, "card_spend", {"other": amount})


def test_the_customer_address_is_used_as_email_or_phone() -> None:
    by_mail = media_pb2.Interaction(customer=media_pb2.Customer(id="c", address="a@b.test"))
    by_phone = media_pb2.Interaction(customer=media_pb2.Customer(address="+8613800138000"))
    assert domain.customer_of(by_mail).email == "a@b.test"
    assert domain.customer_of(by_phone).phone == "+8613800138000"
    assert domain.customer_of(by_phone).email == ""


def test_attributes_never_override_built_in_values() -> None:
    customer = domain.Customer("c1", "Li", attributes={"interaction_id": "forged", "tier": "gold"})
    end = media_pb2.InteractionEnd(resolution=media_pb2.Resolution(code="resolved"))
    context = domain.closed_context("i1", end, customer)
    assert context["interaction_id"] == "i1"
    assert context["tier"] == "gold"


def test_an_email_rule_without_a_customer_address_is_recorded_failed() -> None:
    rule = closed_rule()
    rule.email.from_address = "care@acme.test"
    template = tpb.NotificationTemplate(name="case-closed", subject="s", body="b")
    fired = domain.rule_delivery(
        rule=rule,
        template=template,
        tenant_id="t1",
        source_key="i1",
        source_event_id="e1",
        customer=domain.Customer("c1"),
        context={},
        details={},
        now=NOW,
    )
    assert fired.delivery.status == FAILED
    assert fired.delivery.last_error == "the customer has no e-mail address"


def test_a_rule_whose_template_is_gone_is_recorded_failed() -> None:
    fired = domain.rule_delivery(
        rule=closed_rule(),
        template=None,
        tenant_id="t1",
        source_key="i1",
        source_event_id="e1",
        customer=domain.Customer(),
        context={},
        details={},
        now=NOW,
    )
    assert fired.delivery.status == FAILED
    assert "case-closed" in fired.delivery.last_error


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [POLICY.backoff(n) for n in range(1, 6)] == [5, 10, 20, 40, 60]


@pytest.mark.parametrize(
    ("status", "delivered", "permanent"),
    [
        (200, True, False),
        (204, True, False),
        (400, False, True),
        (404, False, True),
        (301, False, True),
        (408, False, False),
        (429, False, False),
        (500, False, False),
        (503, False, False),
    ],
)
def test_http_answers_are_classified(status: int, delivered: bool, permanent: bool) -> None:
    result = deliveries.classify_http(status)
    assert (result.delivered, result.permanent) == (delivered, permanent)


def test_a_failed_attempt_waits_then_fails_after_the_last_attempt() -> None:
    error = AttemptResult(False, "webhook answered 500")
    retried = deliveries.after_attempt(a_delivery(attempts=2), error, POLICY, NOW)
    assert retried.status == PENDING
    assert retried.next_attempt_at == NOW + timedelta(seconds=10)
    assert retried.last_error == "webhook answered 500"
    assert deliveries.after_attempt(a_delivery(attempts=4), error, POLICY, NOW).status == FAILED
    permanent = AttemptResult(False, "webhook answered 400", permanent=True)
    assert deliveries.after_attempt(a_delivery(attempts=1), permanent, POLICY, NOW).status == FAILED
    done = deliveries.after_attempt(
        a_delivery(attempts=1), deliveries.DELIVERED_RESULT, POLICY, NOW
    )
    assert (done.status, done.delivered_at) == (DELIVERED, NOW)


def test_retry_after_is_honoured_within_the_cap() -> None:
    result = deliveries.classify_http(429, "30")
    later = deliveries.after_attempt(a_delivery(attempts=1), result, POLICY, NOW)
    assert later.next_attempt_at == NOW + timedelta(seconds=30)


def test_the_webhook_body_is_signed_and_carries_the_delivery() -> None:
    d = a_delivery(context={"interaction_id": "i1", "tenant_id": "forged"})
    body = deliveries.webhook_body(d)
    document = json.loads(body)
    assert document["tenant_id"] == "t1"
    assert document["interaction_id"] == "i1"
    assert document["delivery_id"] == str(d.id)
    expected = hmac.new(b"s" * 20, body, hashlib.sha256).hexdigest()
    assert deliveries.signature(body, "s" * 20) == f"sha256={expected}"
    assert deliveries.webhook_body(d) == body


def test_the_api_view_never_shows_the_signing_secret() -> None:
    message = deliveries.to_message(a_delivery())
    assert message.recipient.webhook.url == "https://hooks.example.test/x"
    assert message.recipient.webhook.signing_secret == ""


def test_notify_needs_an_address_that_suits_the_template() -> None:
    template = tpb.NotificationTemplate(name="mail", channel=tpb.DELIVERY_CHANNEL_EMAIL)
    request = npb.NotifyRequest(
        tenant_id="t1", template="mail", recipient=npb.Recipient(phone_number="+8613800138000")
    )
    with pytest.raises(InvalidArgument) as bad:
        validation.validate_recipient(request, template)
    assert [v.field for v in bad.value.violations] == ["recipient.email_address"]


def test_business_events_need_a_type_and_finite_metrics() -> None:
    request = npb.PublishBusinessEventRequest(
        tenant_id="t1", type="Card Spend", metrics={"amount": float("nan")}
    )
    with pytest.raises(InvalidArgument) as bad:
        validation.validate_business_event(request)
    assert [v.field for v in bad.value.violations] == ["type", "metrics['amount']"]
