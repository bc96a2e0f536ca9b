"""The transactional outbox: a database change and its event happen together or not at all.

Writers call `enqueue` inside the transaction of their change. The relay publishes the rows in
id order and deletes them once the broker has acknowledged them. A crash between publish and
delete publishes a row twice; consumers dedupe by event id, so that is harmless. One relay per
schema holds an advisory lock, so replicas never publish out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from lianluo.runtime.kafka import Envelope, EventProducer
from lianluo.runtime.logs import get_logger
from lianluo.runtime.telemetry import inject_headers

log = get_logger(__name__)
NOTIFY_CHANNEL = "lianluo_outbox"


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
    await conn.execute(
        "insert into outbox (topic, record_key, partition_key, value, headers) "
        "values ($1, $2, $3, $4, $5)",
        topic,
        (key or envelope.tenant_id).encode(),
        (partition_key or envelope.tenant_id).encode(),
        envelope.SerializeToString(),
        headers,
    )
    await conn.execute("select pg_notify($1, current_schema())", NOTIFY_CHANNEL)


class OutboxRelay:
    """Publishes the outbox of one schema; run one per service replica."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        schema: str,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._schema = schema
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published = 0
        self._failures = 0

    async def run(self) -> None:
        """Wait for leadership of the schema's outbox, then publish until stop()."""
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
            self._failures += 1
            delay = min(30.0, 0.5 * 2.0**self._failures)
            log.warning("outbox publish failed; retrying", error=repr(error), retry_in=delay)
            return delay
        self._failures = 0
        return self._poll_seconds

    async def _publish_batch(self, conn: asyncpg.Connection) -> bool:
        """Publish one batch in id order; True when there may be more."""
        rows = await conn.fetch(
            "select id, topic, record_key, partition_key, value, headers from outbox "
            "order by id limit $1",
            self._batch_size,
        )
        if not rows:
            return False
        await self._producer.send_batch(
            [
                (
                    r["topic"],
                    r["record_key"],
                    r["partition_key"],
                    r["value"],
                    [(k, v.encode()) for k, v in r["headers"]],
                )
                for r in rows
            ]
        )
        await conn.execute(
            "delete from outbox where id = any($1::bigint[])", [r["id"] for r in rows]
        )
        self.published += len(rows)
        return len(rows) == self._batch_size
