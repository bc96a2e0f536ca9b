"""The delivery worker: sends due deliveries and records what each attempt came to.

Every replica runs one. A claim moves due rows to SENDING under `for update skip locked`, so
replicas share the work and never send one attempt twice; the send happens outside any
transaction, and a lease returns the delivery to the queue if its replica dies mid-attempt.
Every status change is published on `notification.status` in the transaction that makes it.

A notice to a customer is checked in the claim's transaction, against what went to the same
recipient lately (their rows are locked or already settled): one in the customer's quiet hours
or over their daily count goes back to wait, and a text they just got is not sent again.
The clock is injected, so a test can bring a scheduled notice's time forward.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lianluo.domain import notices
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.notification import domain, events
from lianluo.services.notification.deliveries import (
    FAILED,
    PENDING,
    SENDING,
    AttemptResult,
    Delivery,
    RetryPolicy,
    after_attempt,
)
from lianluo.services.notification.repository import WAKE_CHANNEL, Repository
from lianluo.services.notification.senders import Sender

log = get_logger(__name__)
INTERRUPTED = AttemptResult(False, "the attempt was interrupted")


def _now() -> datetime:
    return datetime.now(UTC)


Clock = Callable[[], datetime]


class DeliveryWorker:
    """Claims due deliveries, sends them, and moves them to DELIVERED, PENDING or FAILED."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        senders: Mapping[int, Sender],
        *,
        status_topic: str,
        policy: RetryPolicy,
        batch_size: int,
        poll_seconds: float,
        lease_seconds: float,
        clock: Clock = _now,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._clock = clock
        self._senders = senders
        self._topic = status_topic
        self._policy = policy
        self._batch = batch_size
        self._poll = poll_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # Attempts finished, whatever they came to.
        self.attempts = 0

    def _distinct_senders(self) -> list[Sender]:
        """Each sender once, though it may serve several channels."""
        return list({id(s): s for s in self._senders.values()}.values())

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Work until stop(); the attempts in hand finish and are recorded first."""
        for sender in self._distinct_senders():
            await sender.start()
        try:
            async with self._pool.acquire() as listener:
                await listener.add_listener(WAKE_CHANNEL, self._on_wake)
                try:
                    await self._loop()
                finally:
                    await listener.remove_listener(WAKE_CHANNEL, self._on_wake)
        finally:
            for sender in self._distinct_senders():
                await sender.close()

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._recover_lost()
                claimed = await self._claim()
                failures = 0
            except (asyncpg.PostgresError, OSError) as error:
                # The database is away; what was claimed is recovered by its lease later.
                failures += 1
                delay = min(30.0, self._poll * 2.0**failures)
                log.warning("delivery worker cannot reach the database", error=repr(error))
                await self._sleep(delay)
                continue
            if claimed:
                await asyncio.gather(*(self._attempt(d) for d in claimed))
            if len(claimed) < self._batch:
                await self._sleep(self._poll)

    def _on_wake(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _claim(self) -> list[Delivery]:
        now = self._clock()
        going: list[Delivery] = []
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await self._repo.claim_due(conn, now, now + self._lease, self._batch)
            for i, d in enumerate(claimed):
                unchecked = [later.id for later in claimed[i:]]
                if await self._check(conn, d, now, unchecked):
                    await events.publish_status(conn, self._topic, d, PENDING)
                    going.append(d)
        return going

    async def _check(
        self, conn: asyncpg.Connection, d: Delivery, now: datetime, unchecked: list[Any]
    ) -> bool:
        """True when `d` goes out now; else it is put back to wait, or refused."""
        if d.channel not in domain.TO_CUSTOMER:
            return True
        tenant = self._view.tenant(d.tenant_id)
        limits = notices.limits(tenant.notices if tenant is not None else None)
        recent = await self._repo.recently_sent(
            conn, d, now - timedelta(days=1), now - limits.dedupe, unchecked
        )
        verdict = domain.verdict(d, limits, recent, now)
        if verdict.hold_until is not None:
            log.info(
                "notice held",
                delivery_id=str(d.id),
                reason=verdict.reason,
                until=verdict.hold_until.isoformat(),
            )
            await self._repo.hold(conn, d, verdict.hold_until, now)
            return False
        if verdict.refused:
            refused = replace(
                d,
                status=FAILED,
                last_error=verdict.refused,
                next_attempt_at=None,
                updated_at=now,
            )
            await self._repo.save_outcome(conn, refused)
            await events.publish_status(conn, self._topic, refused, PENDING)
            return False
        return True

    async def _recover_lost(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            now = self._clock()
            for d in await self._repo.lost_attempts(conn, now, self._batch):
                log.warning("attempt lost with its replica", delivery_id=str(d.id))
                await self._save(conn, after_attempt(d, INTERRUPTED, self._policy, now))

    async def _attempt(self, delivery: Delivery) -> None:
        sender = self._senders.get(delivery.channel)
        if sender is None:
            result = AttemptResult(False, "no sender for this channel", permanent=True)
        else:
            try:
                result = await sender.send(delivery)
            except Exception as error:
                # A sender's bug costs one attempt, never the worker.
                log.exception("sender failed", delivery_id=str(delivery.id))
                result = AttemptResult(False, f"internal error: {error!r}")
        self.attempts += 1
        outcome = after_attempt(delivery, result, self._policy, self._clock())
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await self._save(conn, outcome)
        except (asyncpg.PostgresError, OSError) as error:
            # The lease brings the delivery back; the receiver dedupes by delivery id.
            log.warning(
                "attempt outcome not saved", delivery_id=str(delivery.id), error=repr(error)
            )
            return
        log.info(
            "delivery attempt",
            delivery_id=str(delivery.id),
            tenant_id=delivery.tenant_id,
            attempts=outcome.attempts,
            status=outcome.status,
            error=outcome.last_error,
        )

    async def _save(self, conn: asyncpg.Connection, outcome: Delivery) -> None:
        if await self._repo.save_outcome(conn, outcome):
            await events.publish_status(conn, self._topic, outcome, SENDING)
