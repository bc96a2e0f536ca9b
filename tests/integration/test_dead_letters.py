"""Dead letters on the real broker and Postgres: a poison event or record never holds up the rest
of its partition, is kept whole with its error, and can be replayed with the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from conftest import Stack

from lianluo.events.v1 import envelope_pb2
from lianluo.runtime import dead_letters, kafka, outbox, postgres
from lianluo.tenants.v1 import tenants_pb2

pytestmark = pytest.mark.integration


@dataclass
class Bench:
    stack: Stack
    prefix: str
    pool: asyncpg.Pool
    producer: kafka.EventProducer
    sink: kafka.DeadLetterSink

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"


@pytest.fixture
async def bench(stack: Stack) -> AsyncIterator[Bench]:
    prefix = f"dl{uuid.uuid4().hex[:8]}."
    schema = f"dl_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    await kafka.ensure_topics(
        stack.kafka, [f"{prefix}events", f"{prefix}{dead_letters.TOPIC}"], partitions=1
    )
    pool = await postgres.create_pool(stack.database_url, schema)
    producer = kafka.EventProducer(stack.kafka, client_id="dead-letter-test")
    await producer.start()
    sink = kafka.DeadLetterSink(producer, f"{prefix}{dead_letters.TOPIC}")
    try:
        yield Bench(stack, prefix, pool, producer, sink)
    finally:
        await producer.stop()
        await pool.close()


def event(tenant_id: str, name: str) -> envelope_pb2.Envelope:
    return kafka.new_envelope("test.event", tenant_id, tenants_pb2.Tenant(name=name), "test")


async def wait_for(check: object, seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def consuming(
    bench: Bench, handle: kafka.Handler
) -> tuple[kafka.EventConsumer, asyncio.Task[None]]:
    consumer = kafka.EventConsumer(
        bootstrap_servers=bench.stack.kafka,
        pool=bench.pool,
        group_id=f"{bench.prefix}group",
        topics=[bench.topic("events")],
        handler=handle,
        consumer_name="dead-letter-test",
        dead_letters=bench.sink,
        max_attempts=3,
    )
    await consumer.start()
    return consumer, asyncio.create_task(consumer.run())


async def publish(bench: Bench, tenant: str, events: list[envelope_pb2.Envelope]) -> None:
    key = tenant.encode()
    await bench.producer.send_batch(
        [(bench.topic("events"), key, key, e.SerializeToString(), []) for e in events]
    )


def cli(bench: Bench, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lianluo.cli", "dead-letters", *args]
    command += ["--bootstrap", bench.stack.kafka, "--prefix", bench.prefix]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


async def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_partition_applied(
    bench: Bench,
) -> None:
    tenant = "tenant-a"
    names = ["one", "two", "poison", "four", "five"]
    events = [event(tenant, n) for n in names]
    poison_cured = asyncio.Event()
    outages = {"left": 3}
    # The effects are rows written in the consumer's transaction, as a service's are: a run
    # that fails is rolled back whole and applied again one by one.
    await bench.pool.execute("create table effects (id bigserial primary key, name text)")

    async def handle(conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        name = kafka.unpack(envelope, tenants_pb2.Tenant).name
        await conn.execute("insert into effects (name) values ($1)", name)
        if name == "two" and outages["left"]:
            # An outage of Postgres is waited out, however long: never a dead letter.
            outages["left"] -= 1
            raise asyncpg.exceptions.CannotConnectNowError("the database is starting up")
        if name == "poison" and not poison_cured.is_set():
            raise ValueError("a value no column can hold")

    async def applied() -> list[str]:
        return [r["name"] for r in await bench.pool.fetch("select name from effects order by id")]

    consumer, run = await consuming(bench, handle)
    try:
        await publish(bench, tenant, events)
        await wait_for(lambda: consumer.processed >= len(events))
        assert await applied() == ["one", "two", "four", "five"], "in order, the poison passed"
        assert consumer.dead_lettered == 1

        letters = await dead_letters.read_all(bench.stack.kafka, bench.topic(dead_letters.TOPIC))
        assert len(letters) == 1
        letter = letters[0]
        assert (letter.source_topic, letter.source_offset) == (bench.topic("events"), 2)
        assert letter.who == "dead-letter-test" and letter.attempts == 3
        assert "ValueError" in letter.error and letter.key == tenant.encode()
        assert envelope_pb2.Envelope.FromString(letter.value).event_id == events[2].event_id

        listed = cli(bench, "list")
        assert listed.returncode == 0, listed.stderr
        assert letter.ref in listed.stdout and "ValueError" in listed.stdout
        shown = cli(bench, "show", letter.ref)
        assert shown.returncode == 0 and events[2].event_id in shown.stdout
        missing = cli(bench, "show", "0:999")
        assert missing.returncode == 1 and "no dead letter 0:999" in missing.stderr

        # Once the cause is fixed, a replay applies the event, once.
        poison_cured.set()
        replayed = cli(bench, "replay", letter.ref)
        assert replayed.returncode == 0, replayed.stderr
        await wait_for(lambda: consumer.processed >= len(events) + 1)
        cli(bench, "replay", letter.ref)
        await wait_for(lambda: consumer.processed >= len(events) + 2)
        assert (await applied()).count("poison") == 1, "a replayed event is applied at most once"
    finally:
        consumer.stop()
        await run


async def test_an_event_no_consumer_could_store_is_dead_lettered_at_its_first_delivery(
    bench: Bench,
) -> None:
    """Whoever produced it (an old producer, a tool): the consumer's entry check stops it."""
    tenant = "tenant-c"
    events = [event(tenant, "one"), event(tenant, "a\x00b"), event(tenant, "three")]
    seen: list[str] = []

    async def handle(_conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        seen.append(kafka.unpack(envelope, tenants_pb2.Tenant).name)

    consumer, run = await consuming(bench, handle)
    try:
        await publish(bench, tenant, events)
        await wait_for(lambda: consumer.processed >= len(events))
    finally:
        consumer.stop()
        await run
    assert seen == ["one", "three"], "the handler never saw it"
    [letter] = await dead_letters.read_all(bench.stack.kafka, bench.topic(dead_letters.TOPIC))
    assert letter.attempts == 1 and letter.source_offset == 1
    assert "payload.name must not contain NUL" in letter.error


async def test_a_record_the_broker_refuses_goes_to_the_dead_letters_and_the_outbox_moves_on(
    bench: Bench,
) -> None:
    tenant = "tenant-b"
    huge = kafka.new_envelope(
        "test.event", tenant, tenants_pb2.Tenant(display_name="x" * 1_200_000), "test"
    )
    after = event(tenant, "after")
    async with bench.pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, bench.topic("events"), huge)
        await outbox.enqueue(conn, bench.topic("events"), after)
    schema = await bench.pool.fetchval("select current_schema()")
    relay = outbox.OutboxRelay(bench.pool, bench.producer, schema, bench.sink, poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: relay.dead_lettered == 1 and relay.published >= 1)
        assert await bench.pool.fetchval("select count(*) from outbox") == 0
    finally:
        relay.stop()
        await task
    letters = await dead_letters.read_all(bench.stack.kafka, bench.topic(dead_letters.TOPIC))
    assert [(d.source_topic, d.value, d.value_bytes > 1_200_000) for d in letters] == [
        (bench.topic("events"), b"", True)
    ]
    assert "MessageSizeTooLarge" in letters[0].error
    published = await _events_on(bench, bench.topic("events"))
    assert after.event_id in published and huge.event_id not in published


async def _events_on(bench: Bench, topic: str) -> list[str]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bench.stack.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        ids: list[str] = []
        async with asyncio.timeout(20):
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    ids += [envelope_pb2.Envelope.FromString(r.value).event_id for r in records]
        return ids
    finally:
        await consumer.stop()
