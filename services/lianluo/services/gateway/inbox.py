"""Customers' inboxes in the tenant's app: notices the notification service posts (an in-app
notice), which the app's backend lists and marks read with the tenant's key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from lianluo.gateway.v1 import gateway_pb2 as pb
from lianluo.runtime import auth
from lianluo.runtime.errors import FieldViolation, InvalidArgument, NotFound, Violations
from lianluo.runtime.paging import decode_token, encode_token, page_size
from lianluo.services.gateway import domain


def _notice(row: asyncpg.Record) -> pb.InboxNotice:
    notice = pb.InboxNotice(
        id=str(row["id"]),
        customer_id=row["customer_id"],
        subject=row["subject"],
        body=row["body"],
    )
    notice.create_time.FromDatetime(row["created_at"])
    if row["read_at"] is not None:
        notice.read_time.FromDatetime(row["read_at"])
    return notice


def _ids(tenant_id: str, **named: str) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """The tenant's id and the named ids as UUIDs, or INVALID_ARGUMENT naming each bad one."""
    v = Violations()
    parsed = domain.uuids(v, tenant_id=tenant_id, **named)
    v.raise_if_any()
    return parsed.pop("tenant_id"), parsed


def _customer(customer_id: str) -> str:
    if not customer_id.strip():
        raise InvalidArgument([FieldViolation("customer_id", "must be set")])
    return customer_id


class Inbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def post(self, request: pb.PostToInboxRequest) -> pb.InboxNotice:
        auth.require_tenant(request.tenant_id)
        customer = _customer(request.customer_id)
        if not request.body.strip():
            raise InvalidArgument([FieldViolation("body", "must not be empty")])
        tid, ids = _ids(request.tenant_id, delivery_id=request.delivery_id)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "insert into customer_inbox "
                "(tenant_id, id, delivery_id, customer_id, subject, body) "
                "values ($1, $2, $3, $4, $5, $6) on conflict (tenant_id, delivery_id) do update "
                "set delivery_id = excluded.delivery_id returning *",
                tid,
                uuid.uuid4(),
                ids["delivery_id"],
                customer,
                request.subject,
                request.body,
            )
        assert row is not None
        return _notice(row)

    async def list(self, request: pb.ListInboxRequest) -> pb.ListInboxResponse:
        auth.require_tenant(request.tenant_id)
        customer = _customer(request.customer_id)
        size = page_size(request.page.page_size)
        scope = f"{request.tenant_id}/{customer}/{request.unread_only}"
        tid, _ = _ids(request.tenant_id)
        where, args = "tenant_id = $1 and customer_id = $2", [tid, customer]
        if request.unread_only:
            where += " and read_at is null"
        if request.page.page_token:
            when, last = decode_token(request.page.page_token, scope)
            args += [datetime.fromisoformat(when), uuid.UUID(last)]
            where += f" and (created_at, id) < (${len(args) - 1}, ${len(args)})"
        args.append(size)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"select * from customer_inbox where {where} "  # noqa: S608 - placeholders only
                f"order by created_at desc, id desc limit ${len(args)}",
                *args,
            )
        answer = pb.ListInboxResponse(notices=[_notice(r) for r in rows])
        if len(rows) == size:
            last_row: Any = rows[-1]
            answer.page.next_page_token = encode_token(
                scope, [last_row["created_at"].isoformat(), str(last_row["id"])]
            )
        return answer

    async def mark_read(self, request: pb.MarkInboxReadRequest) -> pb.InboxNotice:
        auth.require_tenant(request.tenant_id)
        customer = _customer(request.customer_id)
        try:
            tid, ids = _ids(request.tenant_id, notice_id=request.notice_id)
        except InvalidArgument:
            raise NotFound("inbox_notice", request.notice_id) from None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "update customer_inbox set read_at = coalesce(read_at, now()) "
                "where tenant_id = $1 and id = $2 and customer_id = $3 returning *",
                tid,
                ids["notice_id"],
                customer,
            )
        if row is None:
            raise NotFound("inbox_notice", request.notice_id)
        return _notice(row)
