"""The runtime's Kafka clients reach a secured broker: over TLS, verified by the CA file, with a
client certificate, and with SASL, against the real broker.

The development broker (Tansu 0.6.0) serves no TLS itself (its --cert and --key options exclude
each other, and it needs both), and keeps no SCRAM credentials (its storage here accepts them and
forgets them). So:
- TLS: a TLS-terminating proxy (asyncio and ssl, with certificates made here) stands in front of
  a broker of its own that advertises the proxy's address, so every connection the clients make
  (bootstrap, partition leaders, the group coordinator) goes through TLS;
- SASL: a broker that demands authentication, behind the same kind of proxy (SASL_SSL). No
  password can succeed there, so the test shows what can be shown: the runtime's client does the
  SCRAM handshake with the configured mechanism and username, inside TLS, and a client without
  SASL is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError
from conftest import Stack
from tls_files import Ca, Issued, issue, make_ca

from lianluo.devstack import infra
from lianluo.events.v1 import envelope_pb2
from lianluo.runtime import dead_letters, kafka, postgres
from lianluo.runtime.settings import KafkaSecuritySettings
from lianluo.tenants.v1 import tenants_pb2

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SASL_USER = "lianluo-cell"


class TlsProxy:
    """Ends TLS on a loopback port and relays the bytes to a broker's plain port."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext) -> None:
        self._upstream_port = upstream_port
        self.context = context
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, 0, ssl=self.context)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # Reached only after a completed handshake: a refused client never counts.
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            broker_r, broker_w = await asyncio.open_connection(HOST, self._upstream_port)
            pipes = [
                asyncio.create_task(_pipe(client_r, broker_w)),
                asyncio.create_task(_pipe(broker_r, client_w)),
            ]
            try:
                # Kafka never half-closes: when either side ends, so does the connection.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
                broker_w.close()
        except OSError:
            pass  # the broker is gone: the client's connection is closed below
        finally:
            client_w.close()
            self._relays.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@dataclass(frozen=True)
class Tls:
    ca: Ca
    other_ca: Ca
    server: Issued
    client_ca: Ca
    client: Issued


@dataclass(frozen=True)
class SecuredBroker:
    bootstrap: str
    proxy: TlsProxy
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    folder = tmp_path_factory.mktemp("kafka-tls")
    ca, other = make_ca(folder, "kafka-ca"), make_ca(folder, "another-ca")
    client_ca = make_ca(folder, "kafka-clients-ca")
    return Tls(
        ca=ca,
        other_ca=other,
        server=issue(ca, folder, "broker", server_ip=HOST),
        client_ca=client_ca,
        client=issue(client_ca, folder, "lianluo", client=True),
    )


@contextlib.asynccontextmanager
async def _secured_broker(
    folder: Path, tls: Tls, *, authentication: bool = False
) -> AsyncIterator[SecuredBroker]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server.cert, tls.server.key)
    context.load_verify_locations(tls.client_ca.path)
    broker_port = _free_port()
    proxy = TlsProxy(broker_port, context)
    port = await proxy.start()
    # The broker's metadata names the proxy: clients reconnect there, never to its plain port.
    broker = infra.start_broker(
        folder,
        broker_port,
        advertised_port=port,
        authentication=authentication,
        # Its authentication steps are logged at debug level only; its errors as usual.
        env={"RUST_LOG": "error,tansu_auth=debug"} if authentication else None,
    )
    try:
        yield SecuredBroker(f"{HOST}:{port}", proxy, broker.log_file)
    finally:
        await proxy.stop()
        broker.stop()


@pytest.fixture(scope="module")
async def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls
) -> AsyncIterator[SecuredBroker]:
    async with _secured_broker(tmp_path_factory.mktemp("tls-broker"), tls) as broker:
        yield broker


@contextlib.contextmanager
def _client_certificates_required(proxy: TlsProxy) -> Iterator[None]:
    proxy.context.verify_mode = ssl.CERT_REQUIRED
    try:
        yield
    finally:
        proxy.context.verify_mode = ssl.CERT_NONE


def _tls(tls: Tls, ca: Ca | None = None, **more: str) -> KafkaSecuritySettings:
    return KafkaSecuritySettings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=str((ca or tls.ca).path),
        **more,  # type: ignore[arg-type]
    )


async def _produce(
    bootstrap: str, security: KafkaSecuritySettings, topic: str, names: list[str]
) -> None:
    producer = kafka.EventProducer(bootstrap, client_id="tls-test", security=security)
    await producer.start()
    try:
        for name in names:
            event = kafka.new_envelope("test", "tenant-a", tenants_pb2.Tenant(name=name), "test")
            await producer.send_batch(
                [(topic, b"tenant-a", b"tenant-a", event.SerializeToString(), [])]
            )
    finally:
        await producer.stop()


async def test_events_go_round_trip_over_tls_verified_by_the_ca_file(
    stack: Stack, tls: Tls, tls_broker: SecuredBroker
) -> None:
    security = _tls(tls)
    topic = f"tls{uuid.uuid4().hex[:8]}.events"
    await kafka.ensure_topics(tls_broker.bootstrap, [topic], 2, security=security)
    sent = [f"event {i}" for i in range(5)]
    await _produce(tls_broker.bootstrap, security, topic, sent)
    schema = f"tls_{uuid.uuid4().hex[:8]}"
    await postgres.migrate_dsn(stack.database_url, schema, {})
    pool = await postgres.create_pool(stack.database_url, schema)
    applied: list[str] = []

    async def handle(_conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        applied.append(kafka.unpack(envelope, tenants_pb2.Tenant).name)

    # A consumer group: it finds its coordinator and joins through the advertised address.
    consumer = kafka.EventConsumer(
        bootstrap_servers=tls_broker.bootstrap,
        pool=pool,
        group_id=f"{topic}.group",
        topics=[topic],
        handler=handle,
        security=security,
    )
    await consumer.start()
    run = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(60):
            while len(applied) < len(sent):
                await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        await run
        await pool.close()
    assert applied == sent
    assert tls_broker.proxy.connections >= 2


async def test_a_broker_certificate_another_ca_signed_is_refused(
    tls: Tls, tls_broker: SecuredBroker, caplog: pytest.LogCaptureFixture
) -> None:
    producer = kafka.EventProducer(
        tls_broker.bootstrap, client_id="tls-test", security=_tls(tls, tls.other_ca)
    )
    before = tls_broker.proxy.connections
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        async with asyncio.timeout(30):
            await producer.start()
    await producer.stop()
    # The log says why, as a replica that cannot start says it before it exits.
    assert "certificate verify failed" in caplog.text
    assert tls_broker.proxy.connections == before


async def test_a_broker_that_demands_a_client_certificate_takes_the_configured_one(
    tls: Tls, tls_broker: SecuredBroker
) -> None:
    topic = f"mtls{uuid.uuid4().hex[:8]}.events"
    mutual = _tls(
        tls, kafka_ssl_cert_file=str(tls.client.cert), kafka_ssl_key_file=str(tls.client.key)
    )
    with _client_certificates_required(tls_broker.proxy):
        await kafka.ensure_topics(tls_broker.bootstrap, [topic], 1, security=mutual)
        await _produce(tls_broker.bootstrap, mutual, topic, ["with a certificate"])
        assert await _count(tls_broker.bootstrap, topic, mutual) == 1
        without = kafka.EventProducer(tls_broker.bootstrap, "tls-test", security=_tls(tls))
        with pytest.raises(KafkaConnectionError):
            async with asyncio.timeout(30):
                await without.start()
        await without.stop()


async def _count(bootstrap: str, topic: str, security: KafkaSecuritySettings) -> int:
    """How many records `topic` holds, read through the runtime's own reader of a whole topic."""
    return len(await dead_letters.read_all(bootstrap, topic, 30, security=security))


async def test_the_runtime_authenticates_with_its_mechanism_and_username_inside_tls(
    tmp_path: Path, tls: Tls
) -> None:
    sasl = KafkaSecuritySettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=SASL_USER,
        kafka_sasl_password="a-password-no-broker-here-knows",
        kafka_ssl_ca_file=str(tls.ca.path),
    )
    async with _secured_broker(tmp_path, tls, authentication=True) as broker:
        # Without SASL, the broker answers nothing but the handshake's requests.
        without_sasl = kafka.EventProducer(broker.bootstrap, "sasl-test", security=_tls(tls))
        with pytest.raises(KafkaConnectionError):
            async with asyncio.timeout(30):
                await without_sasl.start()
        await without_sasl.stop()
        assert "NotAuthenticated" in _plain(broker.log.read_text())
        # With it, the SCRAM exchange runs to the password check, which this broker cannot
        # pass: it keeps no credentials (a real Kafka with the user's credential lets it in).
        producer = kafka.EventProducer(broker.bootstrap, "sasl-test", security=sasl)
        with pytest.raises(Exception):  # noqa: B017, PT011 - the client's error varies by broker
            async with asyncio.timeout(30):
                await producer.start()
        await producer.stop()
        log = _plain(broker.log.read_text())
    assert 'SaslHandshakeRequest { mechanism: "SCRAM-SHA-512" }' in log
    assert f'auth_id="{SASL_USER}"' in log


def _plain(log: str) -> str:
    """The broker's log without its terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", log)
