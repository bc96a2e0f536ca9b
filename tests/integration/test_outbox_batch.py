"""Events enqueued inside `outbox.batched` are written together, in the order they were
enqueued, and only when the block succeeds; the relay is woken once per batch."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from conftest import Stack

from lianluo.runtime import kafka, outbox, postgres
from lianluo.tenants.v1 import tenants_pb2

pytestmark = pytest.mark.integration


def event(name: str) -> kafka.Envelope:
    return kafka.new_envelope("test", "tenant-a", tenants_pb2.Tenant(name=name), "test")


async def names(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("select value from outbox order by id")
    return [
        kafka.unpack(kafka.Envelope.FromString(r["value"]), tenants_pb2.Tenant).name for r in rows
    ]


async def test_a_batch_keeps_order_nests_and_is_written_only_on_success(stack: Stack) -> None:
    schema = f"outboxbatch_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    pool = await postgres.create_pool(stack.database_url, schema)
    wakeups: list[str] = []
    listener = await pool.acquire()

    def woken(*args: object) -> None:
        wakeups.append(str(args[-1]))

    await listener.add_listener(outbox.NOTIFY_CHANNEL, woken)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, "t", event("a"))
            async with outbox.batched(conn):
                await outbox.enqueue(conn, "t", event("b"))
                assert await names(conn) == ["a"], "held back until the batch ends"
                async with outbox.batched(conn):  # joins the batch around it
                    await outbox.enqueue(conn, "t", event("c"))
                await outbox.enqueue(conn, "t", event("d"))
            await outbox.enqueue(conn, "t", event("e"))
            assert await names(conn) == ["a", "b", "c", "d", "e"]
        async with asyncio.timeout(10):
            while len(wakeups) < 1:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        # One notification per transaction: Postgres folds repeats of the same payload.
        assert wakeups == [schema]

        async def failing_change(conn: asyncpg.Connection) -> None:
            async with conn.transaction(), outbox.batched(conn):
                await outbox.enqueue(conn, "t", event("lost"))
                raise RuntimeError("the change fails")

        async with pool.acquire() as conn:
            with pytest.raises(RuntimeError, match="the change fails"):
                await failing_change(conn)
            assert "lost" not in await names(conn)
    finally:
        await listener.remove_listener(outbox.NOTIFY_CHANNEL, woken)
        await pool.release(listener)
        await pool.close()
