"""A consumer applies one fetch in the order of its topics: after an outage, what agents said
(presence, answers) is applied before the routing requests that piled up meanwhile."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from conftest import Stack

from lianluo.events.v1 import envelope_pb2
from lianluo.runtime import kafka, postgres
from lianluo.tenants.v1 import tenants_pb2

pytestmark = pytest.mark.integration


async def test_a_backlog_is_applied_in_the_order_of_the_consumers_topics(stack: Stack) -> None:
    prefix = f"order{uuid.uuid4().hex[:8]}."
    # Named so that the first topic sorts last: the order comes from the consumer, not the names.
    first, second = f"{prefix}z-agent.event", f"{prefix}a-routing.request"
    await kafka.ensure_topics(stack.kafka, [first, second], partitions=1)
    schema = f"order_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    pool = await postgres.create_pool(stack.database_url, schema)
    producer = kafka.EventProducer(stack.kafka, client_id="order-test")
    await producer.start()
    tenant = b"tenant-a"
    # The backlog a frozen broker leaves: routing requests first, then the agent going away.
    backlog = [(second, f"request {i}") for i in range(3)] + [(first, "agent away")]
    for topic, name in backlog:
        event = kafka.new_envelope("test", "tenant-a", tenants_pb2.Tenant(name=name), "test")
        await producer.send_batch([(topic, tenant, tenant, event.SerializeToString(), [])])
    applied: list[str] = []

    async def handle(_conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        applied.append(kafka.unpack(envelope, tenants_pb2.Tenant).name)

    consumer = kafka.EventConsumer(
        bootstrap_servers=stack.kafka,
        pool=pool,
        group_id=f"{prefix}group",
        topics=[first, second],
        handler=handle,
    )
    await consumer.start()
    run = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(30):
            while len(applied) < len(backlog):
                await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        await run
        await producer.stop()
        await pool.close()
    assert applied == ["agent away", "request 0", "request 1", "request 2"]
