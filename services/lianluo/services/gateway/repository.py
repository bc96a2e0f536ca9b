"""Postgres access for the gateway's customer store. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid

import asyncpg

from lianluo.gateway.v1 import gateway_pb2 as pb


def _customer(row: asyncpg.Record, identities: list[asyncpg.Record]) -> pb.Customer:
    out = pb.Customer(
        id=str(row["id"]), tenant_id=str(row["tenant_id"]), display_name=row["display_name"]
    )
    out.create_time.FromDatetime(row["created_at"])
    for i in identities:
        identity = out.identities.add(kind=i["kind"], value=i["value"])
        identity.first_seen_time.FromDatetime(i["first_seen_at"])
    return out


class Repository:
    async def resolve(
        self, conn: asyncpg.Connection, tid: uuid.UUID, kind: int, value: str, name: str
    ) -> uuid.UUID:
        """The customer of an identity, created with it the first time it is seen. Concurrent
        first sightings agree on one customer (the identity's key decides)."""
        found = await conn.fetchval(
            "select customer_id from identities where tenant_id = $1 and kind = $2 and value = $3",
            tid,
            kind,
            value,
        )
        if found is not None:
            return uuid.UUID(str(found))
        async with conn.transaction():
            new = uuid.uuid4()
            await conn.execute(
                "insert into customers (tenant_id, id, display_name) values ($1, $2, $3)",
                tid,
                new,
                name,
            )
            won = await conn.fetchval(
                "insert into identities (tenant_id, kind, value, customer_id) "
                "values ($1, $2, $3, $4) on conflict do nothing returning customer_id",
                tid,
                kind,
                value,
                new,
            )
            if won is None:  # another connection saw it first: keep theirs
                await conn.execute(
                    "delete from customers where tenant_id = $1 and id = $2", tid, new
                )
                found = await conn.fetchval(
                    "select customer_id from identities where tenant_id = $1 and kind = $2 "
                    "and value = $3",
                    tid,
                    kind,
                    value,
                )
                return uuid.UUID(str(found))
        return new

    async def get(
        self, conn: asyncpg.Connection, tid: uuid.UUID, customer_id: uuid.UUID
    ) -> pb.Customer | None:
        row = await conn.fetchrow(
            "select * from customers where tenant_id = $1 and id = $2", tid, customer_id
        )
        if row is None:
            return None
        identities = await conn.fetch(
            "select * from identities where tenant_id = $1 and customer_id = $2 "
            "order by first_seen_at, kind, value",
            tid,
            customer_id,
        )
        return _customer(row, identities)

    async def find(
        self, conn: asyncpg.Connection, tid: uuid.UUID, kind: int, value: str
    ) -> pb.Customer | None:
        found = await conn.fetchval(
            "select customer_id from identities where tenant_id = $1 and kind = $2 and value = $3",
            tid,
            kind,
            value,
        )
        return None if found is None else await self.get(conn, tid, uuid.UUID(str(found)))
