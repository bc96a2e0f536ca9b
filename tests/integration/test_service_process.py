"""A service as its own process (`lianluo serve NAME`): health, reflection, SIGTERM (also with a
consumer stuck on a dependency), bad settings, and an event that survives a crash between the
database commit and the publish."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from conftest import ADMIN, Stack
from factories import tenant
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from lianluo.devstack import infra
from lianluo.devstack.cell import wait_serving
from lianluo.events.v1 import envelope_pb2
from lianluo.events.v1 import notification_pb2 as events_notification_pb2
from lianluo.runtime import contract, kafka, postgres
from lianluo.runtime.kafka import EventConsumer, behind
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    def __init__(self, stack: Stack, log: Path, service: str, **env: str) -> None:
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lianluo.cli", "serve", service],
            env={**os.environ, **stack.env(LIANLUO_GRPC_PORT=str(self.port), **env)},
            stderr=log.open("ab"),
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def spawn(stack: Stack, tmp_path: Path) -> Iterator[object]:
    started: list[ServiceProcess] = []

    def start(service: str = "tenants", **env: str) -> ServiceProcess:
        p = ServiceProcess(stack, tmp_path / f"{service}-{len(started)}.log", service, **env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


async def test_serves_health_and_reflection_then_drains_on_sigterm(spawn: object) -> None:
    proc: ServiceProcess = spawn()  # type: ignore[operator]
    await wait_serving(proc.port, 30)
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(proc.address))
    listed = set(database.get_services())
    tenant_apis = {s.full_name for s in pb.DESCRIPTOR.services_by_name.values()}
    assert tenant_apis | {"grpc.health.v1.Health"} <= listed

    async with grpc.aio.insecure_channel(proc.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        seen = [(await watch.read()).status]
        proc.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                while (reply := await watch.read()) is not grpc.aio.EOF:
                    seen.append(reply.status)
        except grpc.aio.AioRpcError:
            pass  # the server closes the stream once it has drained
    assert seen[0] == SERVING
    assert NOT_SERVING in seen, "health must turn NOT_SERVING before the server goes"
    assert await asyncio.to_thread(proc.process.wait, 15) == 0
    assert '"event": "stopped"' in proc.log.read_text()


async def test_sigterm_stops_a_replica_whose_consumer_is_stuck_on_a_dependency(
    spawn: object, stack: Stack
) -> None:
    """A consumer hung in a query (here: on a lock that is never released) does not hold up
    SIGTERM: the stuck part is cancelled after the grace period and the process exits."""
    # Topics and a consumer group of its own: no member left by an earlier test of the session
    # holds the partitions while the group rebalances.
    prefix = f"stuck{uuid.uuid4().hex[:8]}."
    proc: ServiceProcess = spawn(  # type: ignore[operator]
        "notification", LIANLUO_SHUTDOWN_GRACE_SECONDS="2", LIANLUO_TOPIC_PREFIX=prefix
    )
    await wait_serving(proc.port, 30)
    holder = await asyncpg.connect(stack.database_url)
    # pg_stat_activity is read once per transaction: the holder, inside its own, would see the
    # consumer as it was at its first look for the whole test. Another connection looks.
    watcher = await asyncpg.connect(stack.database_url)
    try:
        locked = holder.transaction()
        await locked.start()
        await holder.execute("lock table notification.inbox in access exclusive mode")
        producer = kafka.EventProducer(stack.kafka, client_id="stuck-test")
        await producer.start()
        tenant_id = f"stuck-{uuid.uuid4().hex[:8]}"

        async def publish() -> None:
            event = contract.envelope(
                contract.BUSINESS_EVENT,
                "notification",
                tenant_id,
                events_notification_pb2.BusinessEvent(type="card_spend", customer_id="c-1"),
            )
            await producer.send_batch(
                [
                    (
                        f"{prefix}{contract.BUSINESS_EVENT.name}",
                        tenant_id.encode(),
                        tenant_id.encode(),
                        event.SerializeToString(),
                        [],
                    )
                ]
            )

        # The consumer is stuck once its inbox insert waits on the lock. Another event every
        # few seconds until it is, in case one was published before the topics were ready.
        try:
            async with asyncio.timeout(120):
                while True:
                    await publish()
                    for _ in range(15):
                        if await watcher.fetchval(
                            "select count(*) from pg_stat_activity where application_name = "
                            "'lianluo-notification' and wait_event_type = 'Lock'"
                        ):
                            break
                        await asyncio.sleep(0.2)
                    else:
                        continue
                    break
        finally:
            await producer.stop()
        proc.process.send_signal(signal.SIGTERM)
        # Bounded only so that a hang fails the test instead of stalling it.
        assert await asyncio.to_thread(proc.process.wait, 60) == 0
        assert "cancelling a stuck part" in proc.log.read_text()
    finally:
        await watcher.close()
        await holder.close()


def test_bad_settings_stop_the_start_naming_each_variable(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANLUO_")}
    env |= {"LIANLUO_KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "LIANLUO_ADMIN_KEY": "changeme"}
    done = subprocess.run(
        [sys.executable, "-m", "lianluo.cli", "serve", "tenants"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "LIANLUO_DATABASE_URL: Field required" in done.stderr
    assert "LIANLUO_ADMIN_KEY" in done.stderr
    assert "Traceback" not in done.stderr


async def _pending_outbox(database_url: str, tenant_id: str) -> list[bytes]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("select value from tenants.outbox order by id")
    finally:
        await conn.close()
    values = [r["value"] for r in rows]
    return [v for v in values if envelope_pb2.Envelope.FromString(v).tenant_id == tenant_id]


async def _records_of(stack: Stack, topic: str, tenant_id: str) -> list[bytes]:
    """Every record of `tenant_id` on `topic`, read to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found = []
        async with asyncio.timeout(20):
            while await behind(consumer, end):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [
                        r.value
                        for r in records
                        if envelope_pb2.Envelope.FromString(r.value).tenant_id == tenant_id
                    ]
        return found
    finally:
        await consumer.stop()


async def _end_offset_total(stack: Stack, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def test_an_event_committed_before_a_crash_is_still_delivered_once(
    spawn: object, stack: Stack
) -> None:
    topic = f"{stack.topic_prefix}tenant.config"
    first: ServiceProcess = spawn()  # type: ignore[operator]
    await wait_serving(first.port, 30)
    broker = next(s for s in infra.status(stack.config) if s.name == "kafka")
    assert broker.pid
    # The broker is frozen, so the relay cannot publish what the call below commits.
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            created = await rpc.TenantServiceStub(channel).CreateTenant(
                pb.CreateTenantRequest(tenant=tenant()), metadata=ADMIN, timeout=10
            )
        # The tenant, and its first signing key.
        assert len(await _pending_outbox(stack.database_url, created.id)) == 2
        first.process.send_signal(signal.SIGKILL)  # crash: committed, never published
        first.process.wait(10)
    finally:
        os.kill(broker.pid, signal.SIGCONT)

    second: ServiceProcess = spawn()  # type: ignore[operator]
    await wait_serving(second.port, 30)
    async with asyncio.timeout(30):
        while await _pending_outbox(stack.database_url, created.id):
            await asyncio.sleep(0.2)
    delivered = await _records_of(stack, topic, created.id)
    assert delivered, "the committed change never reached the topic"

    # A relay that dies after publishing but before deleting publishes again: replay it.
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
    await producer.start()
    await producer.send_and_wait(topic, delivered[0], key=created.id.encode())
    await producer.stop()

    schema = f"probe_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    pool = await postgres.create_pool(stack.database_url, schema)
    applied: list[str] = []

    async def record(_conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        if envelope.tenant_id == created.id:
            applied.append(envelope.event_id)

    total = await _end_offset_total(stack, topic)
    consumer = EventConsumer(
        bootstrap_servers=stack.kafka, pool=pool, group_id=schema, topics=[topic], handler=record
    )
    await consumer.start()
    run = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(30):
            while consumer.processed < total:
                await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await run
        await pool.close()
    assert len(await _records_of(stack, topic, created.id)) > len(delivered)
    events = {envelope_pb2.Envelope.FromString(v).event_id for v in delivered}
    assert sorted(applied) == sorted(events), "an event was applied twice, or not at all"
