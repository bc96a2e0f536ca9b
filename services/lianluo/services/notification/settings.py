"""Settings of the notification service (environment variables prefixed LIANLUO_)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from lianluo.runtime.settings import ServiceSettings, SmtpRelaySettings


class NotificationSettings(ServiceSettings, SmtpRelaySettings):
    """How deliveries travel (SMTP, webhooks) and how failed ones are retried."""

    # Off the per-contact path (its messages follow an interaction's end or a business
    # event): a longer fetch wait than the hot path's 20 ms, so an idle cell wakes the broker
    # less.
    kafka_fetch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 250

    # The sender of Notify e-mails (rules name their own from_address).
    smtp_from_address: str = "no-reply@lianluo.local"
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Retry after base * 2^(attempts-1) seconds, never longer than the cap.
    retry_base_seconds: Annotated[float, Field(gt=0)] = 5.0
    retry_cap_seconds: Annotated[float, Field(gt=0)] = 900.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    # How often the worker looks for due deliveries when no wake-up arrives.
    worker_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    worker_batch_size: Annotated[int, Field(ge=1, le=500)] = 20
    # The channel gateway, which sends SMS notices from the tenant's number.
    notification_gateway_address: str = "127.0.0.1:50057"
    # How long one call to the gateway may take: a text handed to the SMS provider (a long one
    # is several messages), an inbox notice, a look at the customer store's consent.
    notification_gateway_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0
    # A due notice is still sent this long after its time (the service was down, say); a
    # scheduled one due earlier than this when its event arrives is not sent at all.
    schedule_grace_seconds: Annotated[float, Field(ge=0)] = 86_400.0
    # A delivery SENDING for longer than this lost its replica; it becomes due again.
    sending_lease_seconds: Annotated[float, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> NotificationSettings:
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ValueError("retry_cap_seconds must not be below retry_base_seconds")
        return self
