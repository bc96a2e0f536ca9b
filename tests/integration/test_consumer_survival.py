"""A consumer outlives a broker outage long enough to cost it its group membership: the offset it
then cannot commit is delivered again (and dropped as a duplicate), and it keeps consuming."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import asyncpg
import pytest
from conftest import Stack

from lianluo.devstack import infra
from lianluo.events.v1 import envelope_pb2
from lianluo.runtime import kafka, postgres
from lianluo.tenants.v1 import tenants_pb2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
FREEZE_SECONDS = 15  # longer than the consumer's 10 s session: the group drops the member


async def test_a_consumer_keeps_consuming_after_losing_its_group_in_a_broker_freeze(
    stack: Stack,
) -> None:
    prefix = f"survive{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}events"
    await kafka.ensure_topics(stack.kafka, [topic], partitions=1)
    schema = f"survive_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    pool = await postgres.create_pool(stack.database_url, schema)
    producer = kafka.EventProducer(stack.kafka, client_id="survival-test")
    await producer.start()
    applied: list[str] = []
    first_seen = asyncio.Event()
    release = asyncio.Event()

    async def handle(_conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        name = kafka.unpack(envelope, tenants_pb2.Tenant).name
        if name == "first" and not first_seen.is_set():
            first_seen.set()
            await release.wait()  # still applying when the broker freezes
        applied.append(name)

    async def send(name: str) -> None:
        event = kafka.new_envelope("test", "tenant-a", tenants_pb2.Tenant(name=name), "test")
        await producer.send_batch(
            [(topic, b"tenant-a", b"tenant-a", event.SerializeToString(), [])]
        )

    def member() -> kafka.EventConsumer:
        return kafka.EventConsumer(
            bootstrap_servers=stack.kafka,
            pool=pool,
            group_id=f"{prefix}group",
            topics=[topic],
            handler=handle,
        )

    consumer = member()
    await consumer.start()
    run = asyncio.create_task(consumer.run())
    # A second member of the group, which may be given the partition after the freeze: the
    # first one's commit then fails for good, as it does with two replicas.
    other = member()
    await other.start()
    other_run = asyncio.create_task(other.run())
    broker = next(s for s in infra.status(stack.config) if s.name == "kafka")
    assert broker.pid
    try:
        await send("first")
        async with asyncio.timeout(30):
            await first_seen.wait()
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(FREEZE_SECONDS)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        release.set()  # the batch ends now; its commit meets a group that moved on
        await send("second")
        async with asyncio.timeout(90):
            while "second" not in applied:
                for loop in (run, other_run):
                    assert not loop.done(), f"a consumer loop ended: {loop.exception()!r}"
                await asyncio.sleep(0.1)
        assert applied.count("first") == 1, "the redelivered event was applied once"
    finally:
        release.set()
        consumer.stop()
        other.stop()
        await asyncio.wait_for(asyncio.gather(run, other_run, return_exceptions=True), 60)
        await producer.stop()
        await pool.close()
