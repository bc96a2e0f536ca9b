"""Postgres access for the notification service. Every query is scoped by the tenant id, except
the worker's claim of due deliveries, which serves every tenant of the cell."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg

from lianluo.runtime.errors import FieldViolation, InvalidArgument
from lianluo.runtime.paging import decode_token, encode_token, page_size
from lianluo.services.notification.deliveries import DELIVERED, PENDING, SENDING, SMS, Delivery
from lianluo.services.notification.domain import Customer, Recent

WAKE_CHANNEL = "lianluo_notification_due"
# Columns that hold "" in the domain but null in the table, so unique constraints ignore them.
_NULLABLE = ("request_id", "rule_id", "source_key")
_COLUMNS = [f.name for f in fields(Delivery)]
_INSERT = (
    f"insert into deliveries ({', '.join(_COLUMNS)}) "  # noqa: S608 - column names are constants
    f"values ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))}) "
    "on conflict do nothing returning true"
)


def _delivery(row: asyncpg.Record) -> Delivery:
    values: dict[str, Any] = {name: row[name] for name in _COLUMNS}
    for name in _NULLABLE:
        values[name] = values[name] or ""
    values["context"] = dict(values["context"] or {})
    return Delivery(**values)


def _values(d: Delivery) -> list[Any]:
    values = [getattr(d, name) for name in _COLUMNS]
    for name in _NULLABLE:
        values[_COLUMNS.index(name)] = getattr(d, name) or None
    values[_COLUMNS.index("context")] = dict(d.context)
    return values


@dataclass(frozen=True)
class DeliveryFilter:
    status: int = 0
    customer_id: str = ""
    rule_id: str = ""
    source_event_id: str = ""
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Page:
    size: int
    after: tuple[datetime, uuid.UUID] | None


def parse_page(size: int, token: str, scope: str) -> Page:
    """Check a page request; a token is valid only for the list it came from."""
    after = None
    if token:
        when, last_id = decode_token(token, scope)
        try:
            after = (datetime.fromisoformat(when), uuid.UUID(last_id))
        except (ValueError, TypeError) as error:
            raise InvalidArgument(
                [FieldViolation("page.page_token", "not a token from this list")]
            ) from error
    return Page(page_size(size), after)


def next_token(scope: str, last: Delivery) -> str:
    return encode_token(scope, [last.created_at.isoformat(), str(last.id)])


class Repository:
    """Interaction customers, deliveries and business events."""

    # ------------------------------------------------------------------ customers

    async def save_customer(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str, c: Customer
    ) -> None:
        await conn.execute(
            "insert into interaction_customers (tenant_id, interaction_id, customer_id, "
            "display_name, email, phone, attributes) values ($1, $2, $3, $4, $5, $6, $7) "
            "on conflict do nothing",
            tenant_id,
            interaction_id,
            c.id,
            c.name,
            c.email,
            c.phone,
            dict(c.attributes),
        )

    async def interaction_customer(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> Customer | None:
        row = await conn.fetchrow(
            "select customer_id, display_name, email, phone, attributes from "
            "interaction_customers where tenant_id = $1 and interaction_id = $2",
            tenant_id,
            interaction_id,
        )
        return None if row is None else _customer(row)

    async def latest_contact(
        self, conn: asyncpg.Connection, tenant_id: str, customer_id: str
    ) -> Customer | None:
        """The customer as last seen in an interaction, for notices outside one."""
        row = await conn.fetchrow(
            "select customer_id, display_name, email, phone, attributes from "
            "interaction_customers where tenant_id = $1 and customer_id = $2 "
            "order by created_at desc limit 1",
            tenant_id,
            customer_id,
        )
        return None if row is None else _customer(row)

    # ------------------------------------------------------------------ deliveries

    async def insert_delivery(self, conn: asyncpg.Connection, d: Delivery) -> bool:
        """Insert `d`; False when its rule already fired for the source, or its request exists."""
        return bool(await conn.fetchval(_INSERT, *_values(d)))

    async def get_delivery(
        self, conn: asyncpg.Connection, tenant_id: str, delivery_id: uuid.UUID
    ) -> Delivery | None:
        row = await conn.fetchrow(
            "select * from deliveries where tenant_id = $1 and id = $2", tenant_id, delivery_id
        )
        return None if row is None else _delivery(row)

    async def delivery_by_request(
        self, conn: asyncpg.Connection, tenant_id: str, request_id: str
    ) -> Delivery | None:
        row = await conn.fetchrow(
            "select * from deliveries where tenant_id = $1 and request_id = $2",
            tenant_id,
            request_id,
        )
        return None if row is None else _delivery(row)

    async def list_deliveries(
        self, conn: asyncpg.Connection, tenant_id: str, f: DeliveryFilter, page: Page
    ) -> list[Delivery]:
        """Newest first, filtered, one page."""
        where = ["tenant_id = $1"]
        args: list[Any] = [tenant_id]

        def add(condition: str, *values: Any) -> None:
            # Each condition refers to its values as {0}, {1}...; only placeholders go in.
            numbers = [f"${len(args) + i + 1}" for i in range(len(values))]
            where.append(condition.format(*numbers))
            args.extend(values)

        if f.status:
            add("status = {0}", f.status)
        if f.customer_id:
            add("customer_id = {0}", f.customer_id)
        if f.rule_id:
            add("rule_id = {0}", f.rule_id)
        if f.source_event_id:
            add("source_event_id = {0}", f.source_event_id)
        if f.start is not None:
            add("created_at >= {0}", f.start)
        if f.end is not None:
            add("created_at < {0}", f.end)
        if page.after is not None:
            add("(created_at, id) < ({0}, {1})", *page.after)
        args.append(page.size)
        rows = await conn.fetch(
            f"select * from deliveries where {' and '.join(where)} "  # noqa: S608
            f"order by created_at desc, id desc limit ${len(args)}",
            *args,
        )
        return [_delivery(r) for r in rows]

    async def claim_due(
        self, conn: asyncpg.Connection, now: datetime, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        """Move up to `limit` due deliveries of any tenant to SENDING, counting the attempt.

        Skip-locked rows belong to another replica's claim, so replicas share the work.
        """
        rows = await conn.fetch(
            "update deliveries set status = $1, attempts = attempts + 1, lease_until = $2, "
            "updated_at = $3 where id in (select id from deliveries where status = $4 and "
            "next_attempt_at <= $3 order by next_attempt_at limit $5 for update skip locked) "
            "returning *",
            SENDING,
            lease_until,
            now,
            PENDING,
            limit,
        )
        return [_delivery(r) for r in rows]

    async def lost_attempts(
        self, conn: asyncpg.Connection, now: datetime, limit: int
    ) -> list[Delivery]:
        """SENDING deliveries whose lease ran out (their replica died), locked for the caller."""
        rows = await conn.fetch(
            "select * from deliveries where status = $1 and lease_until < $2 "
            "order by lease_until limit $3 for update skip locked",
            SENDING,
            now,
            limit,
        )
        return [_delivery(r) for r in rows]

    async def save_outcome(self, conn: asyncpg.Connection, d: Delivery) -> bool:
        """Store the outcome of an attempt; False when the delivery is no longer SENDING."""
        updated = await conn.fetchval(
            "update deliveries set status = $3, last_error = $4, next_attempt_at = $5, "
            "delivered_at = $6, updated_at = $7, lease_until = null "
            "where tenant_id = $1 and id = $2 and status = $8 returning true",
            d.tenant_id,
            d.id,
            d.status,
            d.last_error,
            d.next_attempt_at,
            d.delivered_at,
            d.updated_at,
            SENDING,
        )
        return bool(updated)

    async def recently_sent(
        self,
        conn: asyncpg.Connection,
        d: Delivery,
        day_since: datetime,
        text_since: datetime,
        exclude: list[uuid.UUID],
    ) -> Recent:
        """What went to `d`'s recipient (its phone number or e-mail address): deliveries sent
        or being sent since `day_since`, and the last with the same text since `text_since`;
        `exclude` are the claim's deliveries not checked yet."""
        address = "phone_number" if d.channel == SMS else "email_address"
        # The column is one of two names above; no input reaches the text.
        row = await conn.fetchrow(
            "select count(*) filter (where updated_at >= $4) as sent, "  # noqa: S608
            "min(updated_at) filter (where updated_at >= $4) as oldest, "
            "max(updated_at) filter (where body = $6 and updated_at >= $5) as same_text "
            f"from deliveries where tenant_id = $1 and channel = $2 and {address} = $3 "
            "and status in ($7, $8) and updated_at >= least($4, $5) "
            "and id <> all($9::uuid[])",
            d.tenant_id,
            d.channel,
            d.phone_number if d.channel == SMS else d.email_address,
            day_since,
            text_since,
            d.body,
            SENDING,
            DELIVERED,
            exclude,
        )
        assert row is not None
        return Recent(row["sent"], row["oldest"], row["same_text"])

    async def hold(
        self, conn: asyncpg.Connection, d: Delivery, until: datetime, now: datetime
    ) -> None:
        """Put a claimed delivery back, due at `until`, its claim not counted as an attempt."""
        await conn.execute(
            "update deliveries set status = $3, attempts = attempts - 1, next_attempt_at = $4, "
            "lease_until = null, updated_at = $5 where tenant_id = $1 and id = $2",
            d.tenant_id,
            d.id,
            PENDING,
            until,
            now,
        )

    async def save_receipt(self, conn: asyncpg.Connection, d: Delivery) -> None:
        """Store what a text's receipt said: its time, or the failure it reported."""
        await conn.execute(
            "update deliveries set status = $3, last_error = $4, receipt_at = $5, "
            "updated_at = $6 where tenant_id = $1 and id = $2",
            d.tenant_id,
            d.id,
            d.status,
            d.last_error,
            d.receipt_at,
            d.updated_at,
        )

    async def wake_workers(self, conn: asyncpg.Connection) -> None:
        """Tell every replica's worker, at commit, that a delivery is due."""
        await conn.execute("select pg_notify($1, current_schema())", WAKE_CHANNEL)

    # ------------------------------------------------------------------ business events

    async def save_business_event(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        event_id: str,
        event_type: str,
        customer_id: str,
        metrics: dict[str, float],
        attributes: dict[str, str],
        occur_time: datetime,
    ) -> bool:
        return bool(
            await conn.fetchval(
                "insert into business_events (tenant_id, event_id, type, customer_id, metrics, "
                "attributes, occur_time) values ($1, $2, $3, $4, $5, $6, $7) "
                "on conflict do nothing returning true",
                tenant_id,
                event_id,
                event_type,
                customer_id,
                metrics,
                attributes,
                occur_time,
            )
        )

    async def business_request(
        self, conn: asyncpg.Connection, tenant_id: str, request_id: str
    ) -> str | None:
        found: str | None = await conn.fetchval(
            "select event_id from business_event_requests where tenant_id = $1 and request_id = $2",
            tenant_id,
            request_id,
        )
        return found

    async def save_business_request(
        self, conn: asyncpg.Connection, tenant_id: str, request_id: str, event_id: str
    ) -> bool:
        """Remember the request; False when a concurrent retry saved it first."""
        return bool(
            await conn.fetchval(
                "insert into business_event_requests (tenant_id, request_id, event_id) "
                "values ($1, $2, $3) on conflict do nothing returning true",
                tenant_id,
                request_id,
                event_id,
            )
        )


def _customer(row: asyncpg.Record) -> Customer:
    return Customer(
        row["customer_id"],
        row["display_name"],
        row["email"],
        row["phone"],
        dict(row["attributes"] or {}),
    )
