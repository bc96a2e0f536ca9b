"""A delivery's life: its record, its retries, and what a webhook receiver gets.

Pure functions and values; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from google.protobuf import timestamp_pb2

from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.tenants.v1 import tenants_pb2 as tpb

UNSPECIFIED = npb.DELIVERY_STATUS_UNSPECIFIED
PENDING = npb.DELIVERY_STATUS_PENDING
SENDING = npb.DELIVERY_STATUS_SENDING
DELIVERED = npb.DELIVERY_STATUS_DELIVERED
FAILED = npb.DELIVERY_STATUS_FAILED
WEBHOOK = tpb.DELIVERY_CHANNEL_WEBHOOK
EMAIL = tpb.DELIVERY_CHANNEL_EMAIL
SMS = tpb.DELIVERY_CHANNEL_SMS
IN_APP = tpb.DELIVERY_CHANNEL_IN_APP


@dataclass(frozen=True)
class Delivery:
    """One notice to one recipient; fields mirror the `deliveries` table."""

    id: uuid.UUID
    tenant_id: str
    template: str
    channel: int
    body: str
    created_at: datetime
    status: int = PENDING
    request_id: str = ""
    rule_id: str = ""
    rule_name: str = ""
    source_key: str = ""
    source_event_id: str = ""
    customer_id: str = ""
    email_address: str = ""
    phone_number: str = ""
    webhook_url: str = ""
    signing_secret: str = ""
    from_address: str = ""
    subject: str = ""
    context: Mapping[str, str] = field(default_factory=dict)
    attempts: int = 0
    last_error: str = ""
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None
    delivered_at: datetime | None = None
    # The SMS channel's name ("" the tenant's first), and the customer's own time zone and
    # quiet hours ("" when they named none).
    sms_channel: str = ""
    time_zone: str = ""
    quiet_hours: str = ""
    # When the SMS provider reported the text reached the phone.
    receipt_at: datetime | None = None


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    cap_seconds: float
    max_attempts: int

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failed ones: base * 2^(n-1), capped."""
        exponent = min(max(attempts - 1, 0), 62)
        return float(min(self.cap_seconds, self.base_seconds * 2.0**exponent))


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt to send came to."""

    delivered: bool
    error: str = ""
    # True when retrying cannot help (a 4xx answer, a refused mailbox).
    permanent: bool = False
    # What the receiver asked for (Retry-After), in seconds.
    retry_after: float | None = None


DELIVERED_RESULT = AttemptResult(delivered=True)


def classify_http(status: int, retry_after: str | None = None) -> AttemptResult:
    """2xx delivered; 408, 429 and 5xx retry; any other answer is permanent."""
    if 200 <= status < 300:
        return DELIVERED_RESULT
    error = f"webhook answered {status}"
    if status in (408, 429) or status >= 500:
        return AttemptResult(False, error, retry_after=_seconds(retry_after))
    if 300 <= status < 400:
        error += " (redirects are not followed)"
    return AttemptResult(False, error, permanent=True)


def _seconds(header: str | None) -> float | None:
    if header is None or not header.strip().isdigit():
        return None
    return float(header.strip())


def after_attempt(
    delivery: Delivery, result: AttemptResult, policy: RetryPolicy, now: datetime
) -> Delivery:
    """The delivery once an attempt (already counted in `attempts`) came to `result`."""
    if result.delivered:
        return replace(
            delivery,
            status=DELIVERED,
            last_error="",
            next_attempt_at=None,
            delivered_at=now,
            updated_at=now,
        )
    if result.permanent or delivery.attempts >= policy.max_attempts:
        return replace(
            delivery, status=FAILED, last_error=result.error, next_attempt_at=None, updated_at=now
        )
    delay = policy.backoff(delivery.attempts)
    if result.retry_after is not None:
        delay = min(policy.cap_seconds, max(delay, result.retry_after))
    return replace(
        delivery,
        status=PENDING,
        last_error=result.error,
        next_attempt_at=now + timedelta(seconds=delay),
        updated_at=now,
    )


def gateway_request(d: Delivery) -> gpb.PostToInboxRequest | gpb.SendNoticeRequest:
    """What the channel gateway is asked for a text (SendNotice) or an in-app notice
    (PostToInbox)."""
    request: gpb.PostToInboxRequest | gpb.SendNoticeRequest
    if d.channel == IN_APP:
        request = gpb.PostToInboxRequest(customer_id=d.customer_id, subject=d.subject)
    else:
        request = gpb.SendNoticeRequest(channel=d.sms_channel, phone_number=d.phone_number)
    request.tenant_id, request.delivery_id, request.body = d.tenant_id, str(d.id), d.body
    return request


def webhook_body(delivery: Delivery) -> bytes:
    """The JSON a webhook receives; the same bytes on every attempt of one delivery."""
    document: dict[str, object] = {
        **delivery.context,
        "tenant_id": delivery.tenant_id,
        "delivery_id": str(delivery.id),
        "request_id": delivery.request_id,
        "rule": delivery.rule_name,
        "rule_id": delivery.rule_id,
        "template": delivery.template,
        "source_event_id": delivery.source_event_id,
        "customer_id": delivery.customer_id,
        "subject": delivery.subject,
        "body": delivery.body,
        "create_time": delivery.created_at.isoformat(),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def signature(body: bytes, secret: str) -> str:
    """The X-Lianluo-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_message(d: Delivery) -> npb.Delivery:
    """The API view of a delivery; the signing secret never leaves the service."""
    recipient = npb.Recipient(customer_id=d.customer_id)
    if d.channel == WEBHOOK:
        recipient.webhook.url = d.webhook_url
    elif d.channel == EMAIL:
        recipient.email_address = d.email_address
    elif d.channel == SMS:
        recipient.phone_number = d.phone_number
    message = npb.Delivery(
        id=str(d.id),
        tenant_id=d.tenant_id,
        request_id=d.request_id,
        rule_id=d.rule_id,
        source_event_id=d.source_event_id,
        template=d.template,
        channel=d.channel,  # type: ignore[arg-type]
        recipient=recipient,
        subject=d.subject,
        body=d.body,
        status=d.status,  # type: ignore[arg-type]
        attempts=d.attempts,
        last_error=d.last_error,
        create_time=_stamp(d.created_at),
        update_time=_stamp(d.updated_at or d.created_at),
    )
    if d.status == PENDING and d.next_attempt_at is not None and d.next_attempt_at > d.created_at:
        message.next_attempt_time.CopyFrom(_stamp(d.next_attempt_at))
    if d.delivered_at is not None:
        message.deliver_time.CopyFrom(_stamp(d.delivered_at))
    if d.receipt_at is not None:
        message.receipt_time.CopyFrom(_stamp(d.receipt_at))
    return message


_EVENT_TYPES: dict[int, str] = {
    PENDING: "notification.pending",
    SENDING: "notification.sending",
    DELIVERED: "notification.delivered",
    FAILED: "notification.failed",
}


def status_event_type(status: int) -> str:
    """The `notification.status` envelope type that announces `status`."""
    return _EVENT_TYPES[status]
