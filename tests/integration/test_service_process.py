"""A service as its own process (`lianluo serve NAME`): health, reflection, SIGTERM (also with a
consumer stuck on a dependency), bad settings, an event that survives a crash between the
database commit and the publish, and the Prometheus figures it serves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
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
from prometheus_client.parser import text_string_to_metric_families
from tls_files import issue, make_ca

from lianluo.devstack import infra
from lianluo.devstack.cell import wait_serving
from lianluo.events.v1 import envelope_pb2
from lianluo.events.v1 import notification_pb2 as events_notification_pb2
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.notification.v1 import notification_pb2_grpc as nrpc
from lianluo.runtime import contract, kafka, postgres
from lianluo.runtime.grpc_server import platform_channel
from lianluo.runtime.kafka import EventConsumer, behind
from lianluo.runtime.settings import GrpcTlsSettings
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

    # A kubelet reads the same over HTTP on the metrics port (gRPC probes need 1.24).
    healthz = f"http://127.0.0.1:{_logged_port(proc.log, 'metrics serving')}/healthz"
    probed = []
    async with grpc.aio.insecure_channel(proc.address) as channel, aiohttp.ClientSession() as http:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        seen = [(await watch.read()).status]
        probed.append((await http.get(healthz)).status)
        proc.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                while (reply := await watch.read()) is not grpc.aio.EOF:
                    seen.append(reply.status)
                    if reply.status == NOT_SERVING:
                        # Still draining (this stream holds it open): not ready any more.
                        probed.append((await http.get(healthz)).status)
        except grpc.aio.AioRpcError:
            pass  # the server closes the stream once it has drained
    assert seen[0] == SERVING
    assert NOT_SERVING in seen, "health must turn NOT_SERVING before the server goes"
    assert probed == [200, 503]
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


Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _logged_port(log: Path, event: str) -> int:
    """The port of the first log line `event` (the process logs it before it serves gRPC)."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and (entry := json.loads(line)).get("event") == event:
            return int(entry["port"])
    raise AssertionError(f"no {event!r} line in {log}")


async def _scrape(port: int) -> Figures:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as reply,
    ):
        assert reply.status == 200
        text = await reply.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _series(figures: Figures, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of `name` that carry `labels` (and maybe more)."""
    wanted = set(labels.items())
    return {key: v for (n, key), v in figures.items() if n == name and wanted <= key}


def _total(figures: Figures, name: str, **labels: str) -> float:
    return sum(_series(figures, name, **labels).values())


async def test_metrics_count_calls_by_method_and_code_and_show_lag_and_backlog(
    spawn: object, stack: Stack
) -> None:
    """What an SRE reads on /metrics: each call counted once under the code the client got (a
    refusal by the auth check and one by validation included), the events it published
    relayed and consumed, and the consumer lag and the outbox backlog back at 0."""
    # Topics and a consumer group of its own, so every record consumed is one of this test's.
    prefix = f"metrics{uuid.uuid4().hex[:8]}."
    tenants: ServiceProcess = spawn("tenants", LIANLUO_TOPIC_PREFIX=prefix)  # type: ignore[operator]
    await wait_serving(tenants.port, 30)
    async with grpc.aio.insecure_channel(tenants.address) as channel:
        created = await rpc.TenantServiceStub(channel).CreateTenant(
            pb.CreateTenantRequest(tenant=tenant()), metadata=ADMIN, timeout=10
        )
    # On the topic before notification starts: its view then knows the tenant from the start.
    async with asyncio.timeout(30):
        while await _pending_outbox(stack.database_url, created.id):
            await asyncio.sleep(0.1)

    proc: ServiceProcess = spawn(  # type: ignore[operator]
        "notification", LIANLUO_TOPIC_PREFIX=prefix, LIANLUO_METRICS_PORT="0"
    )
    await wait_serving(proc.port, 30)
    port = _logged_port(proc.log, "metrics serving")
    method = "lianluo.notification.v1.NotificationService/PublishBusinessEvent"
    before = await _scrape(port)

    def event(request_id: str, kind: str = "card_spend") -> npb.PublishBusinessEventRequest:
        return npb.PublishBusinessEventRequest(
            tenant_id=created.id, request_id=request_id, type=kind, metrics={"amount": 12.5}
        )

    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = nrpc.NotificationServiceStub(channel)
        for request_id in ("spend-1", "spend-2"):
            await stub.PublishBusinessEvent(event(request_id), metadata=ADMIN, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as no_key:
            await stub.PublishBusinessEvent(event("spend-3"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as bad_type:
            await stub.PublishBusinessEvent(
                event("spend-4", "not a name!"), metadata=ADMIN, timeout=10
            )
    assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert bad_type.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    after = await _scrape(port)
    calls = "lianluo_grpc_requests_total"

    def moved(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    assert moved(calls, method=method, code="OK") == 2
    assert moved(calls, method=method, code="UNAUTHENTICATED") == 1
    assert moved(calls, method=method, code="INVALID_ARGUMENT") == 1
    assert moved(calls) == 4, "a call that was not made was counted"
    assert moved("lianluo_grpc_request_duration_seconds_count", method=method) == 4
    assert _total(after, "lianluo_grpc_requests_in_flight") == 0
    assert {dict(key)["service"] for _, key in after} == {"notification"}

    # The two events go out through the outbox and come back through the service's own
    # consumer group (joined in the background: about 5 s on the development broker).
    business, interactions = f"{prefix}business.event", f"{prefix}interaction.event"
    receipts = f"{prefix}notice.receipt"
    lag_name = "lianluo_kafka_consumer_lag"
    async with asyncio.timeout(60):
        while True:
            figures = await _scrape(port)
            lag = _series(figures, lag_name)
            if (
                _total(figures, "lianluo_kafka_records_consumed_total", topic=business) == 2
                and len(lag) == 24
                and not any(lag.values())
                and _total(figures, "lianluo_outbox_backlog") == 0
            ):
                break
            await asyncio.sleep(0.2)
    # Every partition of the three topics it consumes (8 each), this replica being the only
    # member.
    assert {(dict(k)["topic"], dict(k)["partition"]) for k in lag} == {
        (topic, str(p)) for topic in (business, interactions, receipts) for p in range(8)
    }
    assert _series(figures, "lianluo_outbox_backlog")
    assert _total(figures, "lianluo_outbox_oldest_age_seconds") == 0
    assert _total(figures, "lianluo_kafka_handler_failures_total") == 0
    assert _total(figures, "lianluo_dead_letters_total") == 0

    # A consumer stuck on its database (its inbox locked) shows what it has not handled yet,
    # on the partition of the tenant's events, and catches up once the lock goes.
    partition = str(kafka.partition_for(created.id.encode(), 8))
    consumed = "lianluo_kafka_records_consumed_total"
    holder = await asyncpg.connect(stack.database_url)
    try:
        locked = holder.transaction()
        await locked.start()
        await holder.execute("lock table notification.inbox in access exclusive mode")
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = nrpc.NotificationServiceStub(channel)
            for n in range(3):
                await stub.PublishBusinessEvent(event(f"later-{n}"), metadata=ADMIN, timeout=10)
        async with asyncio.timeout(30):
            while _total(await _scrape(port), lag_name, topic=business, partition=partition) != 3:
                await asyncio.sleep(0.2)
        await locked.rollback()
    finally:
        await holder.close()
    async with asyncio.timeout(30):
        while True:
            figures = await _scrape(port)
            if _total(figures, consumed, topic=business) == 5 and not _total(figures, lag_name):
                break
            await asyncio.sleep(0.2)
    assert _total(figures, "lianluo_kafka_handler_failures_total") == 0


async def _serving(proc: ServiceProcess) -> None:
    """Until the process logs that it serves (a TLS port answers no plaintext health check)."""
    async with asyncio.timeout(30):
        while '"event": "serving"' not in proc.log.read_text(errors="replace"):
            assert proc.process.poll() is None, proc.log.read_text(errors="replace")
            await asyncio.sleep(0.1)


async def test_services_speak_tls_and_with_client_auth_serve_only_the_platforms_certificates(
    spawn: object, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "platform")
    own = issue(ca, tmp_path, "tenants", server_ip="127.0.0.1", client=True)
    stranger = make_ca(tmp_path, "stranger")
    env = {
        "LIANLUO_GRPC_TLS_CERT_FILE": str(own.cert),
        "LIANLUO_GRPC_TLS_KEY_FILE": str(own.key),
        "LIANLUO_GRPC_TLS_CA_FILE": str(ca.path),
    }
    listing = pb.ListTenantsRequest()

    async def answer(made: grpc.aio.Channel) -> grpc.StatusCode:
        async with made:
            try:
                await rpc.TenantServiceStub(made).ListTenants(listing, metadata=ADMIN, timeout=5)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                return error.code()

    def tls(ca_file: Path, mutual: bool = False) -> GrpcTlsSettings:
        return GrpcTlsSettings(
            grpc_tls_ca_file=str(ca_file),
            grpc_tls_cert_file=str(own.cert) if mutual else "",
            grpc_tls_key_file=str(own.key) if mutual else "",
            grpc_tls_client_auth=mutual,
        )

    served: ServiceProcess = spawn(**env)  # type: ignore[operator]
    await _serving(served)
    assert await answer(platform_channel(served.address, tls(ca.path))) == grpc.StatusCode.OK
    # Plaintext, or a server checked against another CA, gets nothing.
    unreachable = grpc.StatusCode.UNAVAILABLE
    assert await answer(grpc.aio.insecure_channel(served.address)) == unreachable
    assert await answer(platform_channel(served.address, tls(stranger.path))) == unreachable

    mutual: ServiceProcess = spawn(LIANLUO_GRPC_TLS_CLIENT_AUTH="true", **env)  # type: ignore[operator]
    await _serving(mutual)
    # Without a certificate of the platform's, a caller with the right CA is refused.
    assert await answer(platform_channel(mutual.address, tls(ca.path))) == unreachable
    ok = await answer(platform_channel(mutual.address, tls(ca.path, mutual=True)))
    assert ok == grpc.StatusCode.OK

    # A certificate issued to the platform's name, not to an address: callers check that name.
    named = issue(ca, tmp_path, "named", dns="lianluo.internal", client=True)
    by_name: ServiceProcess = spawn(  # type: ignore[operator]
        **env | {"LIANLUO_GRPC_TLS_CERT_FILE": str(named.cert),
                 "LIANLUO_GRPC_TLS_KEY_FILE": str(named.key)}
    )  # fmt: skip
    await _serving(by_name)
    assert await answer(platform_channel(by_name.address, tls(ca.path))) == unreachable
    expecting = tls(ca.path).model_copy(update={"grpc_tls_server_name": "lianluo.internal"})
    assert await answer(platform_channel(by_name.address, expecting)) == grpc.StatusCode.OK
