"""What the notification service consumes and publishes.

In: `interaction.event` (created: remember the customer; ended: the closed loop) and
`business.event` (threshold and schedule rules) and `notice.receipt` (what became of a text,
from the gateway). Out: one `notification.status` record per
status change of a delivery, through the outbox in the transaction of the change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from lianluo.events.v1 import interaction_pb2, notification_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime import contract, outbox
from lianluo.runtime.kafka import Envelope
from lianluo.services.notification.deliveries import Delivery, status_event_type, to_message

PRODUCER = "notification"


async def publish_status(
    conn: asyncpg.Connection, topic: str, delivery: Delivery, previous: int
) -> None:
    """Queue the delivery's new status (with `previous`) in the caller's transaction."""
    change = notification_pb2.DeliveryStatusChanged(
        previous_status=previous,  # type: ignore[arg-type]
        delivery=to_message(delivery),
    )
    envelope = contract.envelope(
        contract.NOTIFICATION_STATUS,
        PRODUCER,
        delivery.tenant_id,
        change,
        status_event_type(delivery.status),
    )
    await outbox.enqueue(conn, topic, envelope)


def occur_time(envelope: Envelope) -> datetime:
    """When the event happened; receipt time when the producer left it empty."""
    if envelope.HasField("occur_time"):
        return envelope.occur_time.ToDatetime(tzinfo=UTC)
    return datetime.now(UTC)


class Reactions(Protocol):
    """What the service does with each consumed event, inside the consumer's transaction."""

    async def remember_customer(
        self, conn: asyncpg.Connection, envelope: Envelope, event: interaction_pb2.InteractionEvent
    ) -> None: ...

    async def close_loop(
        self, conn: asyncpg.Connection, envelope: Envelope, event: interaction_pb2.InteractionEvent
    ) -> None: ...

    async def on_business_event(
        self, conn: asyncpg.Connection, envelope: Envelope, event: notification_pb2.BusinessEvent
    ) -> None: ...

    async def on_receipt(
        self, conn: asyncpg.Connection, envelope: Envelope, event: notification_pb2.NoticeReceipt
    ) -> None: ...


def handlers(service: Reactions) -> contract.Handlers:
    """What the consumer calls, by envelope type; other types are not this service's."""
    on = contract.Handlers(PRODUCER)
    on.on("interaction.created", service.remember_customer)
    on.on("interaction.ended", service.close_loop)
    on.on("business.event.published", service.on_business_event)
    on.on("notice.receipt.received", service.on_receipt)
    return on


def business_event_envelope(request: npb.PublishBusinessEventRequest) -> Envelope:
    """The `business.event` record of a PublishBusinessEvent request."""
    event = notification_pb2.BusinessEvent(
        type=request.type,
        customer_id=request.customer_id,
        metrics=dict(request.metrics),
        attributes=dict(request.attributes),
    )
    envelope = contract.envelope(contract.BUSINESS_EVENT, PRODUCER, request.tenant_id, event)
    if request.HasField("occur_time"):
        envelope.occur_time.CopyFrom(request.occur_time)
    return envelope
