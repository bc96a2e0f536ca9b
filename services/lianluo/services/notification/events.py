"""What the notification service consumes and publishes.

In: `interaction.event` (created: remember the customer; ended: the closed loop) and
`business.event` (threshold rules). Out: one `notification.status` record per status change of
a delivery, through the outbox in the transaction of the change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from google.protobuf.message import DecodeError

from lianluo.events.v1 import interaction_pb2, notification_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime import outbox
from lianluo.runtime.kafka import Envelope, new_envelope, unpack
from lianluo.runtime.logs import get_logger
from lianluo.services.notification.deliveries import Delivery, status_event_type, to_message

log = get_logger(__name__)
PRODUCER = "notification"
INTERACTION_TOPIC = "interaction.event"
BUSINESS_TOPIC = "business.event"
STATUS_TOPIC = "notification.status"
INTERACTION_CREATED = "interaction.created"
INTERACTION_ENDED = "interaction.ended"
BUSINESS_EVENT_PUBLISHED = "business.event.published"


async def publish_status(
    conn: asyncpg.Connection, topic: str, delivery: Delivery, previous: int
) -> None:
    """Queue the delivery's new status (with `previous`) in the caller's transaction."""
    change = notification_pb2.DeliveryStatusChanged(
        previous_status=previous,  # type: ignore[arg-type]
        delivery=to_message(delivery),
    )
    envelope = new_envelope(
        status_event_type(delivery.status), delivery.tenant_id, change, PRODUCER
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

    async def evaluate_thresholds(
        self, conn: asyncpg.Connection, envelope: Envelope, event: notification_pb2.BusinessEvent
    ) -> None: ...


def handler(service: Reactions) -> Callable[[asyncpg.Connection, Envelope], Awaitable[None]]:
    """The consumer handler: dispatch by envelope type; other types are not this service's."""

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        try:
            if envelope.type == INTERACTION_CREATED:
                event = unpack(envelope, interaction_pb2.InteractionEvent)
                await service.remember_customer(conn, envelope, event)
            elif envelope.type == INTERACTION_ENDED:
                event = unpack(envelope, interaction_pb2.InteractionEvent)
                await service.close_loop(conn, envelope, event)
            elif envelope.type == BUSINESS_EVENT_PUBLISHED:
                business = unpack(envelope, notification_pb2.BusinessEvent)
                await service.evaluate_thresholds(conn, envelope, business)
        except DecodeError:
            # A payload of the wrong type can never succeed; retrying would stall the partition.
            log.error(
                "event payload does not match its type; skipped",
                type=envelope.type,
                event_id=envelope.event_id,
                payload=envelope.payload.type_url,
            )

    return handle


def business_event_envelope(request: npb.PublishBusinessEventRequest) -> Envelope:
    """The `business.event` record of a PublishBusinessEvent request."""
    event = notification_pb2.BusinessEvent(
        type=request.type,
        customer_id=request.customer_id,
        metrics=dict(request.metrics),
        attributes=dict(request.attributes),
    )
    envelope = new_envelope(BUSINESS_EVENT_PUBLISHED, request.tenant_id, event, PRODUCER)
    if request.HasField("occur_time"):
        envelope.occur_time.CopyFrom(request.occur_time)
    return envelope
