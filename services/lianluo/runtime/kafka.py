"""Kafka events: the envelope, the producer, topic creation and the consumer loop.

Correctness does not rest on idempotent or transactional producers (the local broker lacks
them, and they do not cover a database write anyway): writes go through the outbox, and
consumers apply each event id once, in the same transaction as its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError, Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from lianluo.events.v1 import envelope_pb2
from lianluo.runtime import dead_letters, metrics, validation
from lianluo.runtime.faults import is_outage
from lianluo.runtime.logs import get_logger
from lianluo.runtime.telemetry import extract_headers

if TYPE_CHECKING:
    # Only for the annotation: the settings module imports this one.
    from lianluo.runtime.settings import KafkaSecuritySettings

log = get_logger(__name__)
M = TypeVar("M", bound=Message)

Envelope = envelope_pb2.Envelope

# How long a fetch may wait for records (LIANLUO_KAFKA_FETCH_WAIT_MS). Every hop of a contact is
# a consume, so on the local broker, which holds a fetch for about half of it instead of
# answering when a record arrives, this bounds the latency a quiet partition adds per hop
# (measured: 250 ms at the client default of 500, 12 ms at 20). A real Kafka answers as soon as
# a record arrives and wants its default: there a low value only costs fetch requests while idle.
FETCH_MAX_WAIT_MS = 20


def client_security(settings: KafkaSecuritySettings | None) -> dict[str, Any]:
    """The aiokafka keyword arguments of the security settings, for every client made (None:
    PLAINTEXT, as on the local broker)."""
    if settings is None:
        return {}
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    if protocol in ("SSL", "SASL_SSL"):
        # Verifies the broker's certificate and host name; without a CA file, against the
        # system's trust store (a managed Kafka's public CA).
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_ca_file or None,
            certfile=settings.kafka_ssl_cert_file or None,
            keyfile=settings.kafka_ssl_key_file or None,
        )
    return options


def new_envelope(event_type: str, tenant_id: str, payload: Message, producer: str) -> Envelope:
    occur = timestamp_pb2.Timestamp()
    occur.FromDatetime(datetime.now(UTC))
    envelope = Envelope(
        event_id=str(uuid.uuid4()),
        type=event_type,
        tenant_id=tenant_id,
        occur_time=occur,
        producer=producer,
    )
    envelope.payload.Pack(payload)
    return envelope


def unpack(envelope: Envelope, message_type: type[M]) -> M:
    message = message_type()
    if not envelope.payload.Unpack(message):
        raise DecodeError(f"{envelope.type}: payload is {envelope.payload.type_url}")
    return message


def partition_for(partition_key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so every client agrees on a tenant's partition."""
    hashed: int = murmur2(partition_key)
    return (hashed & 0x7FFFFFFF) % partitions


class EventProducer:
    """An acks=all producer that awaits delivery of every record it sends."""

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        *,
        security: KafkaSecuritySettings | None = None,
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            **client_security(security),
            client_id=client_id,
            acks="all",
            linger_ms=2,
            max_batch_size=1_048_576,
            request_timeout_ms=15_000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def partitions(self, topic: str) -> int:
        found = await self._producer.partitions_for(topic)
        if not found:
            raise RuntimeError(f"topic {topic} has no partitions")
        return len(found)

    async def send_batch(
        self, records: Sequence[tuple[str, bytes, bytes, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Send (topic, key, partition_key, value, headers) records in order; wait for all acks."""
        futures = []
        for topic, key, partition_key, value, headers in records:
            partition = partition_for(partition_key, await self.partitions(topic))
            futures.append(
                await self._producer.send(
                    topic, value=value, key=key, partition=partition, headers=headers
                )
            )
        await asyncio.gather(*futures)

    async def send_to(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send one record to a known partition (dead letters and their replay)."""
        delivered = await self._producer.send(
            topic, value=value, key=key, partition=partition, headers=headers
        )
        await delivered


async def behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    """True while a partition's position is short of the end offset read earlier.

    At or past counts as caught up: the local broker at times reports an end one short.
    """
    return any([await consumer.position(tp) < offset for tp, offset in end.items()])


async def ensure_topics(
    bootstrap_servers: str,
    topics: Sequence[str],
    partitions: int,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    *,
    security: KafkaSecuritySettings | None = None,
) -> None:
    """Create missing topics (development and tests; production topics come from the operator)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_security(security))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            new = [
                NewTopic(
                    name=t,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=dict((configs or {}).get(t, {})),
                )
                for t in missing
            ]
            # Another replica may have created it first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


Handler = Callable[[asyncpg.Connection, Envelope], Awaitable[None]]
# How often a consumer asks the broker where its partitions end, for its lag.
ENDS_EVERY_SECONDS = 2.0


class PoisonEvent(Exception):
    """An event that no number of attempts can apply: it goes to the dead letters at once."""


class DeadLetterSink:
    """Publishes dead letters to the cell's dead-letter topic, with the record kept whole."""

    def __init__(self, producer: EventProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def consumer_failed(
        self, record: ConsumerRecord[Any, Any], who: str, error: str, attempts: int
    ) -> None:
        value: bytes = record.value or b""
        headers = list(record.headers or ()) + dead_letters.failure_headers(
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            who=who,
            error=error,
            attempts=attempts,
            value_bytes=len(value),
        )
        key: bytes = record.key or b""
        await self._publish(key, dead_letters.kept_value(value), headers)
        dead_letters.record_dead_letter(
            who, record.topic, error, partition=record.partition, offset=record.offset
        )
        metrics.DEAD_LETTERS.labels("consumer", record.topic).inc()

    async def outbox_failed(
        self,
        topic: str,
        key: bytes,
        partition_key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        who: str,
        error: str,
    ) -> None:
        partition = partition_for(partition_key, await self._producer.partitions(topic))
        failure = dead_letters.failure_headers(
            source_topic=topic,
            source_partition=partition,
            source_offset=-1,
            who=who,
            error=error,
            attempts=1,
            value_bytes=len(value),
        )
        await self._publish(key, dead_letters.kept_value(value), headers + failure)
        dead_letters.record_dead_letter(who, topic, error, partition=partition)
        metrics.DEAD_LETTERS.labels("outbox", topic).inc()

    async def _publish(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        # Keyed like the source record, so one tenant's dead letters stay in order.
        partition = partition_for(key or b"-", await self._producer.partitions(self.topic))
        await self._producer.send_to(self.topic, partition, key, value, headers)


class EventConsumer:
    """A consumer group loop: each event is applied once, then its offset is committed.

    Each fetched run of a partition's records is applied in one transaction: one inbox insert
    for the run (a duplicate event id is skipped), then each new event's handler. A run that
    fails is rolled back whole and its records applied one by one, each in a transaction of its
    own, so a handler's effects must all be in the transaction it is given (or be harmless to
    repeat). Offsets are committed only after the effects are durable.
    An outage of Postgres is waited out, keeping the partition's order. An event that fails for
    any other reason is tried `max_attempts` times, then moved to the dead-letter topic, so one
    poison event never holds up the rest of its partition.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        pool: asyncpg.Pool,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        consumer_name: str | None = None,
        client_id: str | None = None,
        dead_letters: DeadLetterSink | None = None,
        max_attempts: int = dead_letters.DEFAULT_MAX_ATTEMPTS,
        fetch_wait_ms: int = FETCH_MAX_WAIT_MS,
        run_scope: Callable[[asyncpg.Connection], AbstractAsyncContextManager[None]] | None = None,
        security: KafkaSecuritySettings | None = None,
    ) -> None:
        self._pool = pool
        self._handler = handler
        # Wraps the handlers of one run inside its transaction (the service's outbox batches
        # what they enqueue there).
        self._run_scope = run_scope or (lambda _conn: contextlib.nullcontext())
        self._topics = list(topics)
        # Partitions of one fetch are applied in the order the topics were given.
        self._rank = {topic: i for i, topic in enumerate(self._topics)}
        self._name = consumer_name or group_id
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            **client_security(security),
            group_id=group_id,
            client_id=client_id or group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_wait_ms,
            # Range assignment gives one member partition N of every topic it reads. All topics
            # are keyed by tenant with the same partition count, so one replica sees all of a
            # tenant's events, across topics, in order: the basis of single-writer state.
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        self._stopping = asyncio.Event()
        self._tracer = trace.get_tracer("lianluo.kafka")
        # Records handled (duplicates included), events applied for the first time, and
        # events given up on.
        self.processed = 0
        self.applied = 0
        self.dead_lettered = 0
        # Newly assigned partitions and the end offset each must be read to; then caught up.
        self._catch_up_to: dict[TopicPartition, int] = {}
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._caught_up: set[TopicPartition] = set()
        # The next offset to handle in each assigned partition, for its lag (see `lag`).
        self._handled: dict[TopicPartition, int] = {}
        # Each assigned partition's end, asked of the broker every few seconds: the client's
        # own (its highwater) is as old as its last fetch, and a consumer stuck in a handler
        # fetches nothing, so its lag would stop growing just when it matters.
        self._ends: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Connect, and join the group in the background.

        Subscribing after the start keeps the group join (seconds, longer while the group waits
        out a member that vanished) from holding up the service: its API serves meanwhile, and
        `run` consumes once the group has given it partitions.
        """
        await self._consumer.start()
        self._consumer.subscribe(self._topics)

    async def run(self) -> None:
        """Consume until stop(); what was applied is committed before returning.

        A rebalance or a broker outage never ends the loop: an offset that cannot be committed
        is delivered again to whoever owns the partition next, and the inbox makes that harmless.
        """
        ends = asyncio.create_task(self._watch_ends())
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume_once()
                except KafkaError as error:
                    log.warning(
                        "consumer lost the broker or its partitions; carrying on",
                        consumer=self._name,
                        error=repr(error),
                    )
                    await self._pause(1.0)
        finally:
            ends.cancel()
            # A frozen broker must not hold up shutdown: leaving the group is best effort.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _consume_once(self) -> None:
        batches = await self._consumer.getmany(timeout_ms=500, max_records=200)
        assigned = frozenset(self._consumer.assignment())
        if assigned != self._assigned:
            # When a replica starts consuming, and after each rebalance: how it shares the work.
            log.info("partitions assigned", consumer=self._name, partitions=len(assigned))
            self._assigned = assigned
            self._handled = {tp: at for tp, at in self._handled.items() if tp in assigned}
        in_order = sorted(batches.items(), key=lambda item: self._rank.get(item[0].topic, 0))
        for tp, records in in_order:
            done, batching = 0, True
            self._handled[tp] = records[0].offset
            while done < len(records) and not self._stopping.is_set():
                if batching:
                    # As many as apply together; after a failed run, the rest one by one.
                    applied, batching = await self._apply_batch(records[done:])
                    done += applied
                    if applied:
                        self._handled[tp] = records[done - 1].offset + 1
                    if done == len(records):
                        break
                # On its own: outages waited out, dead-lettered after max_attempts.
                if not await self._apply_until_done(records[done]):
                    break  # stopping: the rest is delivered again later
                done += 1
                self.processed += 1
                metrics.RECORDS_CONSUMED.labels(tp.topic).inc()
                self._handled[tp] = records[done - 1].offset + 1
            if done:
                await self._consumer.commit({tp: records[done - 1].offset + 1})
            if self._stopping.is_set():
                return
        await self._note_positions()

    async def _note_positions(self) -> None:
        """Once a fetch is handled, each assigned partition is handled up to its position: also
        those the fetch had no records for, so an idle partition shows a lag of 0."""
        for tp in self._consumer.assignment():
            # Asked again for each: a rebalance may take a partition while a position is awaited.
            if tp not in self._consumer.assignment() or self._consumer.highwater(tp) is None:
                continue  # gone, or not fetched since it was assigned: no position to trust
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(1):
                    self._handled[tp] = await self._consumer.position(tp)

    def lag(self) -> dict[TopicPartition, int]:
        """Records of each assigned partition not handled yet: its end offset (the newer of the
        last fetch's and the broker's last answer), less the next offset to handle. A partition
        not fetched yet is left out."""
        found = {}
        for tp in self._consumer.assignment():
            end, handled = self._consumer.highwater(tp), self._handled.get(tp)
            if end is not None and handled is not None:
                found[tp] = max(0, max(end, self._ends.get(tp, end)) - handled)
        return found

    async def _watch_ends(self) -> None:
        """Ask the broker for the assigned partitions' ends every few seconds (lag())."""
        while not self._stopping.is_set():
            assigned = list(self._consumer.assignment())
            if assigned:
                # A broker away or a rebalance under way: the figure waits for the next ask.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        self._ends = dict(await self._consumer.end_offsets(assigned))
            if await self._pause(ENDS_EVERY_SECONDS):
                return

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def _apply_until_done(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Apply, wait out outages, dead-letter after max_attempts; False if stopped first."""
        failures, delay = 0, 0.1
        while True:
            try:
                await self._apply(record)
                return True
            except Exception as error:
                cause = "outage" if is_outage(error) else "error"
                cause = "poison" if isinstance(error, PoisonEvent) else cause
                metrics.HANDLER_FAILURES.labels(record.topic, cause).inc()
                if not is_outage(error):
                    failures += 1
                    # A record that can never succeed is not tried again.
                    given_up = failures >= self._max_attempts or isinstance(error, PoisonEvent)
                    if given_up and self._dead_letters is not None:
                        with contextlib.suppress(KafkaError):
                            await self._dead_letters.consumer_failed(
                                record, self._name, repr(error), failures
                            )
                            self.dead_lettered += 1
                            return True
                log.warning(
                    "event handler failed; retrying",
                    consumer=self._name,
                    topic=record.topic,
                    offset=record.offset,
                    attempt=failures,
                    outage=is_outage(error),
                    error=repr(error)[:500],
                )
            if await self._pause(delay):
                return False
            delay = min(delay * 2, 5.0)

    async def _apply_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> tuple[int, bool]:
        """Apply a run of one partition's records in one transaction.

        The run stops before the first record that can never be applied (it is dead-lettered on
        its own). Returns how many records were applied, and False when the transaction failed:
        then none was, and the caller applies the rest one by one.
        """
        run: list[tuple[ConsumerRecord[Any, Any], Envelope]] = []
        for record in records:
            try:
                run.append((record, _checked(record)))
            except PoisonEvent:
                break
        if not run:
            return 0, True
        try:
            await self._apply_run(run)
        except Exception as error:
            log.info(
                "a run failed; applying its events one by one",
                consumer=self._name,
                events=len(run),
                error=repr(error)[:300],
            )
            return 0, False
        self.processed += len(run)
        metrics.RECORDS_CONSUMED.labels(run[0][0].topic).inc(len(run))
        return len(run), True

    async def _apply(self, record: ConsumerRecord[Any, Any]) -> None:
        await self._apply_run([(record, _checked(record))])

    async def _apply_run(self, run: Sequence[tuple[ConsumerRecord[Any, Any], Envelope]]) -> None:
        """In one transaction: one inbox insert for the run (an event id already applied, or
        twice in the run, is skipped), then each new event's handler."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "insert into inbox (consumer, event_id) select $1, unnest($2::text[]) "
                "on conflict do nothing returning event_id",
                self._name,
                [envelope.event_id for _, envelope in run],
            )
            fresh = {row["event_id"] for row in rows}
            applied = 0
            async with self._run_scope(conn):
                for record, envelope in run:
                    if envelope.event_id in fresh:
                        fresh.discard(envelope.event_id)
                        await self._handle(conn, record, envelope)
                        applied += 1
        self.applied += applied

    async def _handle(
        self, conn: asyncpg.Connection, record: ConsumerRecord[Any, Any], envelope: Envelope
    ) -> None:
        with self._tracer.start_as_current_span(
            f"{record.topic} process",
            context=extract_headers(record.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.operation.type": "process",
                "messaging.message.id": envelope.event_id,
                "messaging.kafka.offset": record.offset,
            },
        ):
            await self._handler(conn, envelope)

    def assignment(self) -> set[TopicPartition]:
        """The partitions the group gives this consumer now (empty while it rebalances)."""
        return set(self._consumer.assignment())

    async def caught_up(self) -> set[TopicPartition]:
        """Assigned partitions read at least up to where they stood when this consumer got them.

        A new owner acts on a partition's state only after this: an answer or a command that
        the previous owner never applied is applied first, not overtaken by a timer.
        """
        assigned = set(self._consumer.assignment())
        # A partition lost and later regained is caught up again from scratch.
        self._catch_up_to = {tp: end for tp, end in self._catch_up_to.items() if tp in assigned}
        self._caught_up &= assigned
        new = [tp for tp in assigned if tp not in self._catch_up_to and tp not in self._caught_up]
        if new:
            self._catch_up_to.update(await self._consumer.end_offsets(new))
        for tp, end in list(self._catch_up_to.items()):
            with contextlib.suppress(KafkaError):
                if await self._consumer.position(tp) >= end:
                    self._caught_up.add(tp)
                    del self._catch_up_to[tp]
        return assigned & self._caught_up

    async def wait_assigned(self) -> set[TopicPartition]:
        """Wait until the group gave this consumer its partitions (bound it with a timeout)."""
        # The group protocol offers no awaitable for "assigned"; polling is cheap here.
        while not self._consumer.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return set(self._consumer.assignment())


def _checked(record: ConsumerRecord[Any, Any]) -> Envelope:
    """The record's event, if any consumer could ever apply it; PoisonEvent otherwise."""
    envelope = Envelope()
    try:
        envelope.ParseFromString(record.value or b"")
    except DecodeError:
        raise PoisonEvent("the record is not an event envelope") from None
    problems = validation.event_violations(envelope)
    if problems:
        described = "; ".join(f"{p.field} {p.description}" for p in problems)
        raise PoisonEvent(f"the event breaks its contract: {described}")
    return envelope
