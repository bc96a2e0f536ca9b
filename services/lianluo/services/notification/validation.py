"""What a valid API request is; each check names the offending field. Pure, no I/O."""

from __future__ import annotations

import math
import re

from lianluo.domain.urls import is_web_url
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime.errors import Violations
from lianluo.services.notification.deliveries import EMAIL, IN_APP, SMS, WEBHOOK
from lianluo.services.notification.domain import E164, EMAIL_ADDRESS
from lianluo.tenants.v1 import tenants_pb2 as tpb

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MAX_ID = 200
MIN_SECRET = 16


def check_request_basics(v: Violations, tenant_id: str, request_id: str) -> None:
    v.check(bool(tenant_id), "tenant_id", "must be set")
    v.check(len(request_id) <= MAX_ID, "request_id", f"at most {MAX_ID} characters")


def validate_notify_shape(request: npb.NotifyRequest) -> None:
    """Everything that can be checked before the template is looked up."""
    v = Violations()
    check_request_basics(v, request.tenant_id, request.request_id)
    v.check(bool(request.template), "template", "must name a template")
    v.check(request.HasField("recipient"), "recipient", "must be set")
    v.check(
        len(request.recipient.customer_id) <= MAX_ID,
        "recipient.customer_id",
        f"at most {MAX_ID} characters",
    )
    v.raise_if_any()


def validate_recipient(request: npb.NotifyRequest, template: tpb.NotificationTemplate) -> None:
    """The recipient's address must suit the template's channel."""
    v = Violations()
    r = request.recipient
    address = r.WhichOneof("address")
    if template.channel == WEBHOOK:
        if v.check(address == "webhook", "recipient.webhook", "a webhook template needs a webhook"):
            v.check(
                is_web_url(r.webhook.url),
                "recipient.webhook.url",
                "must be an http or https URL",
            )
            v.check(
                len(r.webhook.signing_secret) >= MIN_SECRET,
                "recipient.webhook.signing_secret",
                f"at least {MIN_SECRET} characters",
            )
    elif template.channel == EMAIL:
        v.check(
            address == "email_address" and bool(EMAIL_ADDRESS.match(r.email_address)),
            "recipient.email_address",
            "an e-mail template needs a valid e-mail address",
        )
    elif template.channel == IN_APP:
        v.check(
            bool(r.customer_id.strip()),
            "recipient.customer_id",
            "an in-app template needs the customer's id",
        )
    elif template.channel == SMS:
        v.check(
            address == "phone_number" and bool(E164.match(r.phone_number)),
            "recipient.phone_number",
            "an SMS template needs an E.164 number such as +8613800138000",
        )
    v.raise_if_any()


def validate_business_event(request: npb.PublishBusinessEventRequest) -> None:
    v = Violations()
    check_request_basics(v, request.tenant_id, request.request_id)
    v.check(bool(NAME.match(request.type)), "type", "must be a name such as card_spend")
    v.check(len(request.customer_id) <= MAX_ID, "customer_id", f"at most {MAX_ID} characters")
    for name, value in request.metrics.items():
        v.check(bool(NAME.match(name)), f"metrics[{name!r}]", "the key must be a name")
        v.check(math.isfinite(value), f"metrics[{name!r}]", "must be a finite number")
    for key in request.attributes:
        v.check(bool(key.strip()), "attributes", "keys must not be empty")
    v.raise_if_any()


def validate_list(request: npb.ListDeliveriesRequest) -> None:
    v = Violations()
    v.check(bool(request.tenant_id), "tenant_id", "must be set")
    v.check(
        request.status in npb.DeliveryStatus.values(),
        "status",
        "must be a DeliveryStatus value",
    )
    if request.HasField("start_time") and request.HasField("end_time"):
        v.check(
            request.start_time.ToDatetime() < request.end_time.ToDatetime(),
            "end_time",
            "must be after start_time",
        )
    v.check(request.page.page_size >= 0, "page.page_size", "must not be negative")
    v.raise_if_any()
