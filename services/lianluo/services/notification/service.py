"""The notification service's logic: fire rules on consumed events, and answer the API.

Every delivery is created with its first status record in one transaction; a unique constraint
on (tenant, rule, source) makes a rule fire at most once per interaction or business event.
A schedule rule's delivery is created when the business event naming the date arrives, due
at its time: the worker sends it then, on whichever replica claims it first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from lianluo.domain import notices
from lianluo.events.v1 import interaction_pb2, notification_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime import auth, outbox
from lianluo.runtime.errors import FieldViolation, InvalidArgument, NotFound
from lianluo.runtime.kafka import Envelope
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.notification import domain, events, validation
from lianluo.services.notification.deliveries import (
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    UNSPECIFIED,
    Delivery,
)
from lianluo.services.notification.domain import Customer, Fired
from lianluo.services.notification.repository import (
    DeliveryFilter,
    Repository,
    next_token,
    parse_page,
)
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
RULE = "notification_rule"
TEMPLATE = "notification_template"


def _now() -> datetime:
    return datetime.now(UTC)


class NotificationService:
    """Rules fired by events, and the NotificationService API, scoped to the caller's tenant."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        *,
        status_topic: str,
        business_topic: str,
        notify_from_address: str,
        schedule_grace: timedelta,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._status_topic = status_topic
        self._business_topic = business_topic
        self._from = notify_from_address
        self._grace = schedule_grace
        self._clock = clock

    # ------------------------------------------------------------------ consumed events

    async def remember_customer(
        self, conn: asyncpg.Connection, envelope: Envelope, event: interaction_pb2.InteractionEvent
    ) -> None:
        interaction_id = event.interaction_id or event.created.id
        customer = domain.customer_of(event.created)
        await self._repo.save_customer(conn, envelope.tenant_id, interaction_id, customer)

    async def close_loop(
        self, conn: asyncpg.Connection, envelope: Envelope, event: interaction_pb2.InteractionEvent
    ) -> None:
        """Fire every enabled interaction_closed rule that matches the resolution."""
        tenant_id, interaction_id, end = envelope.tenant_id, event.interaction_id, event.ended
        rules = [
            r
            for r in self._view.all(tenant_id, RULE)
            if domain.fires_on_close(r, end.resolution.code)
        ]
        if not rules:
            return
        customer = await self._repo.interaction_customer(conn, tenant_id, interaction_id)
        if customer is None:
            log.warning("interaction ended without a known customer", interaction_id=interaction_id)
            customer = Customer()
        context = domain.closed_context(interaction_id, end, customer)
        details = {
            "trigger": "interaction_closed",
            "interaction_id": interaction_id,
            "resolution": end.resolution.code,
            "resolution_note": end.resolution.note,
        }
        for rule in sorted(rules, key=lambda r: r.id):
            await self._fire(conn, envelope, rule, interaction_id, customer, context, details)

    async def on_business_event(
        self,
        conn: asyncpg.Connection,
        envelope: Envelope,
        event: notification_pb2.BusinessEvent,
    ) -> None:
        """Store the business event; fire each threshold rule it crosses, and schedule each
        schedule rule whose date it names, once."""
        tenant_id, metrics, attributes = (
            envelope.tenant_id,
            dict(event.metrics),
            dict(event.attributes),
        )
        stored = await self._repo.save_business_event(
            conn,
            tenant_id,
            envelope.event_id,
            event.type,
            event.customer_id,
            metrics,
            attributes,
            events.occur_time(envelope),
        )
        if not stored:
            return
        rules = sorted(self._view.all(tenant_id, RULE), key=lambda r: r.id)
        crossed = [r for r in rules if domain.fires_on_threshold(r, event.type, metrics)]
        dated = [r for r in rules if domain.fires_on_schedule(r, attributes)]
        if not crossed and not dated:
            return
        known = await self._repo.latest_contact(conn, tenant_id, event.customer_id)
        customer = domain.business_customer(event.customer_id, attributes, known)
        details = {"trigger": "threshold", "event_type": event.type}
        for rule in crossed:
            context = domain.threshold_context(rule, event.type, metrics, attributes, customer)
            await self._fire(conn, envelope, rule, envelope.event_id, customer, context, details)
        tenant = self._view.tenant(tenant_id)
        limits = notices.limits(tenant.notices if tenant is not None else None)
        where = notices.customer_zone(customer.attributes.get("time_zone", ""), limits)
        now = self._clock()
        for rule in dated:
            s = rule.schedule
            value = attributes[s.date_attribute]
            due = notices.due_time(value, s.days_before, s.send_time, where)
            if due is None or due < now - self._grace:
                log.warning(
                    "a scheduled notice not made: its date is not one, or its time is past",
                    rule=rule.name,
                    attribute=s.date_attribute,
                    value=value[:40],
                )
                continue
            context = domain.event_context(event.type, metrics, attributes, customer)
            await self._fire(
                conn,
                envelope,
                rule,
                envelope.event_id,
                customer,
                context,
                {"trigger": "schedule", "event_type": event.type, s.date_attribute: value},
                due,
            )

    async def on_receipt(
        self,
        conn: asyncpg.Connection,
        envelope: Envelope,
        event: notification_pb2.NoticeReceipt,
    ) -> None:
        """What the SMS provider reported of a text: the time it reached the phone, or the
        failure (the delivery, DELIVERED when the provider took it, becomes FAILED)."""
        try:
            delivery_id = uuid.UUID(event.delivery_id)
        except ValueError:
            log.warning("a receipt names no delivery", delivery_id=event.delivery_id[:64])
            return
        found = await self._repo.get_delivery(conn, envelope.tenant_id, delivery_id)
        # A receipt can overtake the worker's record of the send (still SENDING): the worker
        # then leaves what the receipt said alone.
        if found is None or found.status not in (SENDING, DELIVERED):
            return
        now = self._clock()
        if event.delivered:
            after = replace(found, receipt_at=now, updated_at=now)
        else:
            error = f"the carrier could not deliver it: {event.error or 'no reason given'}"
            after = replace(found, status=FAILED, last_error=error[:500], updated_at=now)
        await self._repo.save_receipt(conn, after)
        if after.status != SENDING:
            await events.publish_status(conn, self._status_topic, after, found.status)

    async def _fire(
        self,
        conn: asyncpg.Connection,
        envelope: Envelope,
        rule: tpb.NotificationRule,
        source_key: str,
        customer: Customer,
        context: dict[str, str],
        details: dict[str, str],
        due: datetime | None = None,
    ) -> None:
        tenant_id = envelope.tenant_id
        fired = domain.rule_delivery(
            rule=rule,
            template=self._view.by_name(tenant_id, TEMPLATE, rule.template),
            tenant_id=tenant_id,
            source_key=source_key,
            source_event_id=envelope.event_id,
            customer=customer,
            context=context,
            details={**details, "rule": rule.name},
            now=self._clock(),
            due=due,
        )
        if not await self._create(conn, fired):
            log.info("rule already fired; not sent again", rule=rule.name, source=source_key)

    async def _create(self, conn: asyncpg.Connection, fired: Fired) -> bool:
        """Insert the delivery and announce its first status; False when it already exists."""
        d = fired.delivery
        if not await self._repo.insert_delivery(conn, d):
            return False
        if fired.unknown_placeholders:
            log.warning(
                "template placeholders without a value rendered empty",
                template=d.template,
                placeholders=list(fired.unknown_placeholders),
                delivery_id=str(d.id),
            )
        await events.publish_status(conn, self._status_topic, d, UNSPECIFIED)
        if d.status == PENDING:
            await self._repo.wake_workers(conn)
        return True

    # ------------------------------------------------------------------ API

    def _scoped(self, tenant_id: str) -> str:
        """Authorise the caller for `tenant_id`, which must be a tenant this cell knows."""
        auth.require_tenant(tenant_id)
        if not tenant_id:
            raise InvalidArgument([FieldViolation("tenant_id", "must be set")])
        if self._view.tenant(tenant_id) is None:
            raise NotFound("tenant", tenant_id)
        return tenant_id

    async def notify(self, request: npb.NotifyRequest) -> Delivery:
        """Render a template for one recipient and queue it now; a retried request_id returns
        the first delivery."""
        tenant_id = self._scoped(request.tenant_id)
        validation.validate_notify_shape(request)
        template = self._view.by_name(tenant_id, TEMPLATE, request.template)
        if template is None:
            raise NotFound(TEMPLATE, request.template)
        validation.validate_recipient(request, template)
        async with self._pool.acquire() as conn, conn.transaction():
            if request.request_id:
                earlier = await self._repo.delivery_by_request(conn, tenant_id, request.request_id)
                if earlier is not None:
                    return earlier
            fired = domain.notify_delivery(request, template, self._from, self._clock())
            if await self._create(conn, fired):
                return fired.delivery
            # A concurrent retry of the same request committed first.
            found = await self._repo.delivery_by_request(conn, tenant_id, request.request_id)
        if found is None:
            raise RuntimeError("delivery vanished after a request_id conflict")
        return found

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> Delivery:
        self._scoped(tenant_id)
        if not delivery_id:
            raise InvalidArgument([FieldViolation("delivery_id", "must be set")])
        try:
            parsed = uuid.UUID(delivery_id)
        except ValueError:
            raise NotFound("delivery", delivery_id) from None
        async with self._pool.acquire() as conn:
            found = await self._repo.get_delivery(conn, tenant_id, parsed)
        if found is None:
            raise NotFound("delivery", delivery_id)
        return found

    async def list_deliveries(
        self, request: npb.ListDeliveriesRequest
    ) -> tuple[list[Delivery], str]:
        """One page, newest first, and the token of the next page ("" at the end)."""
        tenant_id = self._scoped(request.tenant_id)
        validation.validate_list(request)
        f = DeliveryFilter(
            status=request.status,
            customer_id=request.customer_id,
            rule_id=request.rule_id,
            source_event_id=request.source_event_id,
            start=request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None,
            end=request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None,
        )
        scope = f"{tenant_id}:{f!r}"
        page = parse_page(request.page.page_size, request.page.page_token, scope)
        async with self._pool.acquire() as conn:
            items = await self._repo.list_deliveries(conn, tenant_id, f, page)
        token = next_token(scope, items[-1]) if len(items) == page.size else ""
        return items, token

    async def publish_business_event(self, request: npb.PublishBusinessEventRequest) -> str:
        """Publish the event on `business.event`; a retried request_id returns the first id."""
        tenant_id = self._scoped(request.tenant_id)
        validation.validate_business_event(request)
        envelope = events.business_event_envelope(request)
        async with self._pool.acquire() as conn, conn.transaction():
            if request.request_id:
                earlier = await self._repo.business_request(conn, tenant_id, request.request_id)
                if earlier is not None:
                    return earlier
                saved = await self._repo.save_business_request(
                    conn, tenant_id, request.request_id, envelope.event_id
                )
                if not saved:
                    winner = await self._repo.business_request(conn, tenant_id, request.request_id)
                    return winner or envelope.event_id
            await outbox.enqueue(conn, self._business_topic, envelope)
        return envelope.event_id
