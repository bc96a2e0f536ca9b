"""A consumer outlives losing partitions it is still applying (a broker outage long enough to cost
it its group membership, or a rebalance): the offset it then cannot commit is delivered again (and
dropped as a duplicate), and it keeps consuming."""

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


async def fresh(
    stack: Stack, name: str, partitions: int
) -> tuple[str, str, asyncpg.Pool, kafka.EventProducer]:
    """A group prefix, a topic of its own, a fresh schema's pool and a started producer."""
    prefix = f"{name}{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}events"
    await kafka.ensure_topics(stack.kafka, [topic], partitions=partitions)
    schema = f"{name}_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    pool = await postgres.create_pool(stack.database_url, schema)
    producer = kafka.EventProducer(stack.kafka, client_id=f"{name}-test")
    await producer.start()
    return prefix, topic, pool, producer


async def test_a_consumer_keeps_consuming_after_losing_its_group_in_a_broker_freeze(
    stack: Stack,
) -> None:
    prefix, topic, pool, producer = await fresh(stack, "survive", partitions=1)
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


async def test_a_consumer_keeps_consuming_when_a_rebalance_takes_a_partition_mid_batch(
    stack: Stack,
) -> None:
    """A replica that joins while another applies a fetched batch takes one of its partitions:
    the commit for that partition then fails (the partition is no longer assigned), as after a
    broker freeze with two replicas. The first replica keeps consuming, and the new owner applies
    the moved event again only as a duplicate that the inbox drops."""
    prefix, topic, pool, producer = await fresh(stack, "rebalance", partitions=2)
    applied: list[str] = []
    holding = asyncio.Event()
    consumers: list[kafka.EventConsumer] = []

    async def handle(_conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        name = kafka.unpack(envelope, tenants_pb2.Tenant).name
        if name.startswith("held"):
            holding.set()
            # Hold the fetched batch until the joining member owns a partition.
            while len(consumers) < 2 or not consumers[1].assignment():
                await asyncio.sleep(0.05)
        applied.append(name)

    async def send(name: str, partition: int) -> None:
        event = kafka.new_envelope("test", "tenant-a", tenants_pb2.Tenant(name=name), "test")
        await producer.send_to(topic, partition, b"tenant-a", event.SerializeToString(), [])

    async def member() -> asyncio.Task[None]:
        consumer = kafka.EventConsumer(
            bootstrap_servers=stack.kafka,
            pool=pool,
            group_id=f"{prefix}group",
            topics=[topic],
            handler=handle,
        )
        await consumer.start()
        consumers.append(consumer)
        return asyncio.create_task(consumer.run())

    # Both events wait before the first member starts, so its first fetch holds both.
    for partition in (0, 1):
        await send(f"held-{partition}", partition)
    loops = [await member()]
    try:
        async with asyncio.timeout(60):
            await holding.wait()
        loops.append(await member())
        await send("after-0", 0)
        await send("after-1", 1)
        async with asyncio.timeout(90):
            while not {"after-0", "after-1"} <= set(applied):
                for loop in loops:
                    assert not loop.done(), f"a consumer loop ended: {loop.exception()!r}"
                await asyncio.sleep(0.1)
        assert applied.count("held-0") == 1
        assert applied.count("held-1") == 1, "the moved event was applied once"
    finally:
        for consumer in consumers:
            consumer.stop()
        await asyncio.wait_for(asyncio.gather(*loops, return_exceptions=True), 60)
        await producer.stop()
        await pool.close()
