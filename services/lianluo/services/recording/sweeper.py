"""The purge loop: records past their retention, and records of deleted tenants, are deleted
unless under legal hold, and each purge is announced as `recording.purged`. Their objects in
the store (files, call audio) follow: deleted, looked up to be sure they are gone, and
announced as `recording.objects_deleted`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, date, datetime

import asyncpg

from lianluo.events.v1 import recording_pb2 as events_pb
from lianluo.events.v1 import tenant_config_pb2
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import Objects
from lianluo.services.recording import events
from lianluo.services.recording.repository import Repository

log = get_logger(__name__)


class RetentionSweeper:
    """Runs a purge pass every `interval` seconds, or at once when a tenant is deleted."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        recording_topic: str,
        objects: Objects,
        *,
        interval: float,
        batch_size: int,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._objects = objects
        self._topic = recording_topic
        self._interval = interval
        self._batch = batch_size
        self._deleted_tenants: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.purged = 0

    def on_tenant_config(
        self, tenant_id: str, change: tenant_config_pb2.TenantConfigChanged
    ) -> None:
        """A TenantConfigView listener: a deleted tenant's records are purged."""
        if change.kind == "tenant" and change.deleted:
            self._deleted_tenants.add(tenant_id)
            self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except (asyncpg.PostgresError, OSError) as error:
                # The next pass retries; a database blip must not stop the service.
                log.warning("retention sweep failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()

    async def sweep(self) -> int:
        """One pass over deleted tenants and expired records; the number of records purged."""
        purged = 0
        for tenant_id in list(self._deleted_tenants):
            purged += await self._purge_all(tenant_id, events_pb.PURGE_REASON_TENANT_DELETED)
            self._deleted_tenants.discard(tenant_id)
        now = datetime.now(UTC)
        await self.publish_roots(now.date())
        async with self._pool.acquire() as conn:
            tenants = await self._repo.tenants_with_expired(conn, now, self._batch)
        for tenant_id in tenants:
            expired = events_pb.PURGE_REASON_RETENTION_EXPIRED
            purged += await self._purge_all(tenant_id, expired, now)
        self.purged += purged
        deleted = self._batch
        while deleted == self._batch:  # batch after batch, until one comes back short
            deleted = await self.delete_objects()
        return purged

    async def delete_objects(self) -> int:
        """Delete one batch of purged records' objects from the store, check each is gone, and
        announce them; the number deleted. A store that fails keeps its rows for the next pass."""
        async with self._pool.acquire() as conn, conn.transaction():
            doomed = await self._repo.doomed_objects(conn, self._batch)
            gone: dict[tuple[str, str], list[str]] = defaultdict(list)
            for tenant_id, interaction_id, key in doomed:
                try:
                    with contextlib.suppress(FileNotFoundError):
                        await self._objects.delete(key)
                    if not await self._objects.absent(key):
                        log.error("an object is still there after its deletion", key=key)
                        continue
                except OSError as error:
                    log.warning("an object could not be deleted", key=key, error=repr(error))
                    continue
                gone[(tenant_id, interaction_id)].append(key)
            for (tenant_id, interaction_id), keys in gone.items():
                await self._repo.objects_deleted(conn, tenant_id, keys)
                await events.publish_objects_deleted(
                    conn, self._topic, tenant_id, interaction_id, keys
                )
        return sum(len(keys) for keys in gone.values())

    async def publish_roots(self, today: date) -> int:
        """Keep and publish each tenant's root of every ended day (UTC) it has entries from;
        the number published. Once per tenant and day, whichever replica comes first."""
        published = 0
        async with self._pool.acquire() as conn:
            due = await self._repo.days_without_root(conn, today, self._batch)
        for tenant_id, day in due:
            async with self._pool.acquire() as conn, conn.transaction():
                leaves = await self._repo.day_leaves(conn, tenant_id, day)
                root = await self._repo.insert_root(conn, tenant_id, day, leaves)
                if root is not None:
                    await events.publish_root(conn, self._topic, tenant_id, day, root, len(leaves))
                    published += 1
        return published

    async def _purge_all(
        self,
        tenant_id: str,
        reason: events_pb.PurgeReason.ValueType,
        now: datetime | None = None,
    ) -> int:
        total = 0
        while not self._stopping.is_set():
            # One batch per transaction: its deletions and their events commit together.
            async with self._pool.acquire() as conn, conn.transaction():
                if now is None:
                    batch = await self._repo.delete_unheld(conn, tenant_id, self._batch)
                else:
                    batch = await self._repo.delete_expired(conn, tenant_id, now, self._batch)
                for summary in batch:
                    await events.publish_purged(conn, self._topic, summary, reason)
            total += len(batch)
            if len(batch) < self._batch:
                break
        if total:
            log.info("records purged", tenant_id=tenant_id, count=total, reason=reason)
        return total
