"""The transactional outbox: a database change and its event happen together or not at all.

Writers call `enqueue` inside the transaction of their change. The relay publishes the rows in
id order and deletes them once the broker has acknowledged them. A crash between publish and
delete publishes a row twice; consumers dedupe by event id, so that is harmless. One relay per
schema holds an advisory lock, so replicas never publish out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from lianluo.runtime.faults import is_outage
from lianluo.runtime.kafka import DeadLetterSink, Envelope, EventProducer
from lianluo.runtime.logs import get_logger
from lianluo.runtime.telemetry import inject_headers

log = get_logger(__name__)
NOTIFY_CHANNEL = "lianluo_outbox"


_INSERT = (
    "insert into outbox (topic, record_key, partition_key, value, headers) "
    "values ($1, $2, $3, $4, $5)"
)
Row = tuple[str, bytes, bytes, bytes, list[list[str]]]
# The rows enqueued on one connection inside `batched`: written together when it ends.
_batch: ContextVar[tuple[asyncpg.Connection, list[Row]] | None] = ContextVar(
    "outbox_batch", default=None
)


async def enqueue(
    conn: asyncpg.Connection,
    topic: str,
    envelope: Envelope,
    *,
    key: str | None = None,
    partition_key: str | None = None,
) -> None:
    """Queue `envelope` for `topic` in the caller's transaction.

    The record key defaults to the tenant id; `partition_key` (default: the tenant id) picks the
    partition, so a tenant's events keep their order even when keys are finer-grained.
    """
    with trace.get_tracer("lianluo.kafka").start_as_current_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.message.id": envelope.event_id,
        },
    ):
        headers = [[k, v.decode()] for k, v in inject_headers()]
    row = (
        topic,
        (key or envelope.tenant_id).encode(),
        (partition_key or envelope.tenant_id).encode(),
        envelope.SerializeToString(),
        headers,
    )
    batch = _batch.get()
    if batch is not None and batch[0] is conn:
        batch[1].append(row)
    else:
        await _write(conn, [row])


@contextlib.asynccontextmanager
async def batched(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Inside a transaction on `conn`: what is enqueued on it meanwhile is written in one round
    trip, with one wake-up for the relay, when the block ends without an error.

    A consumer applying a run of events, or a write of several events, saves two round trips
    to Postgres per event this way. Enqueues on another connection are not held back.
    """
    outer = _batch.get()
    if outer is not None and outer[0] is conn:
        yield  # inside a batch on the same connection already: it writes these, in order
        return
    rows: list[Row] = []
    token = _batch.set((conn, rows))
    try:
        yield
    finally:
        _batch.reset(token)
    await _write(conn, rows)


async def _write(conn: asyncpg.Connection, rows: list[Row]) -> None:
    if not rows:
        return
    # executemany sends every row in one pipeline; ids follow the order of `rows`.
    await conn.executemany(_INSERT, rows)
    await conn.execute("select pg_notify($1, current_schema())", NOTIFY_CHANNEL)


class OutboxRelay:
    """Publishes the outbox of one schema; run one per service replica.

    It survives its dependencies: a lost Postgres connection (a restart, a failover) is
    reconnected with backoff, and leadership taken again; a broker outage is waited out with the
    rows kept. A record the broker refuses for good (too large, say) goes to the dead letters,
    so it cannot hold up every later event of the schema.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        schema: str,
        dead_letters: DeadLetterSink | None = None,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._schema = schema
        self._dead_letters = dead_letters
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published = 0
        self.dead_lettered = 0
        self._failures = 0

    async def run(self) -> None:
        """Lead the schema's outbox and publish until stop(), reconnecting after outages."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._session()
                return
            except Exception as error:
                if not is_outage(error):
                    raise
                log.warning("outbox relay lost Postgres; reconnecting", error=repr(error))
                if await self._sleep(delay):
                    return
                delay = min(delay * 2, 10.0)

    async def _session(self) -> None:
        """One connection's worth of leading and publishing; returns only when stopping."""
        async with self._pool.acquire() as conn:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                while not await self._try_lead(conn):
                    if await self._sleep(self._poll_seconds):
                        return
                while True:
                    delay = await self._drain(conn)
                    if await self._sleep(delay):
                        # One last pass: what was committed before the stop still goes out.
                        await self._drain(conn)
                        return
            finally:
                # The connection may be the one that died: nothing here may raise over that.
                with contextlib.suppress(Exception):
                    await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                with contextlib.suppress(Exception):
                    await conn.execute("select pg_advisory_unlock_all()")

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _try_lead(self, conn: asyncpg.Connection) -> bool:
        locked: bool = await conn.fetchval(
            "select pg_try_advisory_lock(hashtext($1))", f"lianluo.outbox.{self._schema}"
        )
        return locked

    async def _sleep(self, seconds: float) -> bool:
        """Sleep until woken or timed out; True when the relay is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
        return self._stopping.is_set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._schema:
            self._wake.set()

    async def _drain(self, conn: asyncpg.Connection) -> float:
        """Publish until the outbox is empty; the seconds to wait before the next pass.

        A broker outage is waited out with backoff: the rows stay until they are acknowledged.
        """
        try:
            while await self._publish_batch(conn):
                pass
        except KafkaError as error:
            if not error.retriable and self._dead_letters is not None:
                # Some record of the batch is refused for good: find it, one by one.
                await self._publish_singly(conn)
                return 0.0
            self._failures += 1
            delay = min(30.0, 0.5 * 2.0**self._failures)
            log.warning("outbox publish failed; retrying", error=repr(error), retry_in=delay)
            return delay
        self._failures = 0
        return self._poll_seconds

    async def _rows(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            "select id, topic, record_key, partition_key, value, headers from outbox "
            "order by id limit $1",
            limit,
        )
        return rows

    async def _publish_batch(self, conn: asyncpg.Connection) -> bool:
        """Publish one batch in id order; True when there may be more."""
        rows = await self._rows(conn, self._batch_size)
        if not rows:
            return False
        await self._producer.send_batch([_record(r) for r in rows])
        await conn.execute(
            "delete from outbox where id = any($1::bigint[])", [r["id"] for r in rows]
        )
        self.published += len(rows)
        return len(rows) == self._batch_size

    async def _publish_singly(self, conn: asyncpg.Connection) -> None:
        """Publish a batch row by row; a row refused for good goes to the dead letters.

        Rows before it may go out a second time; consumers dedupe by event id.
        """
        assert self._dead_letters is not None
        for row in await self._rows(conn, self._batch_size):
            topic, key, partition_key, value, headers = _record(row)
            try:
                await self._producer.send_batch([(topic, key, partition_key, value, headers)])
                self.published += 1
            except KafkaError as error:
                if error.retriable:
                    raise
                await self._dead_letters.outbox_failed(
                    topic, key, partition_key, value, headers, f"outbox {self._schema}", repr(error)
                )
                self.dead_lettered += 1
            await conn.execute("delete from outbox where id = $1", row["id"])


async def backlog(conn: asyncpg.Connection) -> int:
    """Rows not yet published, of every tenant: the outbox is the service's, not a tenant's."""
    rows: int = await conn.fetchval("select count(*) from outbox")
    return rows


async def oldest_age_seconds(conn: asyncpg.Connection) -> float:
    """How long the oldest unpublished row has waited; 0 when there is none."""
    age = await conn.fetchval(
        "select extract(epoch from clock_timestamp() - min(created_at)) from outbox"
    )
    return max(0.0, float(age)) if age is not None else 0.0


def _record(row: asyncpg.Record) -> tuple[str, bytes, bytes, bytes, list[tuple[str, bytes]]]:
    headers = [(k, v.encode()) for k, v in row["headers"]]
    return row["topic"], row["record_key"], row["partition_key"], row["value"], headers
