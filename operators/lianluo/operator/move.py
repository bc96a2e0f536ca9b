"""Moving a tenant from one cell to another, its open conversations with it.

1. **Drain.** The tenant is suspended in the source cell: its keys and people are refused there,
   and its open streams are ended, so nothing new of it is written there (the cell's services
   are given SETTLE_SECONDS to apply it). Then the cell is quiet for the tenant: no row of it
   waits in a service's outbox, every consumer group has applied the tenant's partition of each
   topic it reads to its end, and no record of it came for SETTLE_SECONDS more (what the
   suspension itself caused is waited for in turn).
2. **Copy.** Every row of the tenant goes from the source cell's database to the target's, read
   in one snapshot and written in one transaction (lianluo.runtime.tenant_copy).
3. **Serve.** The tenant is resumed in the target cell, and its configuration published there,
   so each of the target's services serves it.
4. **Switch.** The registry names the target cell, so the edge directs clients there. They
   connect again with the same keys and sign-ins (the tenant's signing keys moved with it), and
   a conversation goes on where it was (a stream joins again from the last sequence it saw).
5. **Retire.** The tenant is deleted from the source cell's tenants service (the cell's services
   forget it); once the cell is quiet for it again, its other rows there are removed.

A failure before the copy commits resumes the tenant where it was, with nothing of it in the
target. A failure after it leaves the tenant suspended in the source and served by the target:
running the move again finishes it (the copy is skipped when the target already has the
tenant's rows).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from google.protobuf import field_mask_pb2

from lianluo.operator.tenants_api import TenantsApi
from lianluo.runtime import contract
from lianluo.runtime.kafka import client_security, partition_for
from lianluo.runtime.logs import get_logger
from lianluo.runtime.settings import KafkaSecuritySettings
from lianluo.runtime.tenant_copy import CopyRefused, copy_tenant, has_rows, remove_tenant
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

log = get_logger(__name__)
DRAIN_SECONDS = 60.0
# How long the cell's services take to apply a suspension: each follows `tenant.config` within
# its fetch wait (500 ms unless set), then ends the tenant's open streams. Only then can nothing
# new of the tenant be written there.
SETTLE_SECONDS = 2.0


class MoveFailed(Exception):
    """The move stopped; the message says at which step and why."""


@dataclass(frozen=True)
class CellEnds:
    """What a move reaches of one cell: its database (as an admin), its tenants service, and its
    broker and topic prefix (to see that its consumers have caught up)."""

    name: str
    database_url: str
    tenants_address: str
    kafka_bootstrap_servers: str
    topic_prefix: str


@dataclass
class Mover:
    """Moves tenants between cells with the platform's admin key."""

    # The tenants services, with the admin key: the global registry (whose cell map the edge
    # answers from) at its address, and each cell's own.
    tenants: TenantsApi
    # How to read the cells' consumer offsets (LIANLUO_KAFKA_* of the mover's environment).
    kafka: KafkaSecuritySettings = field(default_factory=KafkaSecuritySettings)
    drain_seconds: float = DRAIN_SECONDS
    settle_seconds: float = SETTLE_SECONDS

    @property
    def _md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tenants.admin_key}"),)

    async def move(self, tenant_id: str, source: CellEnds, target: CellEnds) -> dict[str, int]:
        """Move the tenant from `source` to `target`; the rows copied, by table."""
        source_tenants = self.tenants.stub(source.tenants_address)
        target_tenants = self.tenants.stub(target.tenants_address)
        registry = self.tenants.stub(self.tenants.address)
        try:
            copied = await self._drain_and_copy(tenant_id, source, target, source_tenants)
            await target_tenants.ResumeTenant(
                pb.ResumeTenantRequest(tenant_id=tenant_id), metadata=self._md
            )
            await target_tenants.PublishTenantConfig(
                pb.PublishTenantConfigRequest(tenant_id=tenant_id), metadata=self._md
            )
            await registry.UpdateTenant(
                pb.UpdateTenantRequest(
                    tenant=pb.Tenant(id=tenant_id, cell=target.name),
                    update_mask=field_mask_pb2.FieldMask(paths=["cell"]),
                ),
                metadata=self._md,
            )
            await self._retire(tenant_id, source, source_tenants)
        except grpc.aio.AioRpcError as error:
            raise MoveFailed(f"{error.code().name}: {error.details()}") from error
        except (OSError, KafkaError, asyncpg.PostgresError, CopyRefused) as error:
            raise MoveFailed(f"{type(error).__name__}: {error}") from error
        log.info("tenant moved", tenant_id=tenant_id, source=source.name, target=target.name)
        return copied

    async def _drain_and_copy(
        self,
        tenant_id: str,
        source: CellEnds,
        target: CellEnds,
        source_tenants: rpc.TenantServiceStub,
    ) -> dict[str, int]:
        """Steps 1 and 2. The tenant is resumed in the source if anything fails before the
        copy is committed."""
        into = await asyncpg.connect(target.database_url)
        try:
            if await has_rows(into, tenant_id):
                log.info("the target has the tenant already: not copied again")
                return {}
            await source_tenants.SuspendTenant(
                pb.SuspendTenantRequest(tenant_id=tenant_id, reason=f"moving to {target.name}"),
                metadata=self._md,
            )
            try:
                await asyncio.sleep(self.settle_seconds)
                async with asyncio.timeout(self.drain_seconds):
                    await quiet(tenant_id, source, self.kafka, self.settle_seconds)
                origin = await asyncpg.connect(source.database_url)
                try:
                    return await copy_tenant(origin, into, tenant_id)
                finally:
                    await origin.close()
            except BaseException:
                await source_tenants.ResumeTenant(
                    pb.ResumeTenantRequest(tenant_id=tenant_id), metadata=self._md
                )
                raise
        except TimeoutError:
            raise MoveFailed(
                f"{source.name} did not finish the tenant's events in {self.drain_seconds:.0f} s"
            ) from None
        finally:
            await into.close()

    async def _retire(
        self, tenant_id: str, source: CellEnds, source_tenants: rpc.TenantServiceStub
    ) -> None:
        """Step 5: the source cell forgets the tenant, then holds none of its rows."""
        try:
            await source_tenants.DeleteTenant(
                pb.DeleteTenantRequest(tenant_id=tenant_id), metadata=self._md
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # a repeat: deleted already
                raise
        async with asyncio.timeout(self.drain_seconds):
            # The deletions are announced, and what they cause is done, first.
            await quiet(tenant_id, source, self.kafka, self.settle_seconds)
        conn = await asyncpg.connect(source.database_url)
        try:
            await remove_tenant(conn, tenant_id)
        finally:
            await conn.close()


async def drained(tenant_id: str, cell: CellEnds) -> None:
    """Until no row of the tenant waits in any outbox of the cell (each row's partition key is
    its tenant's id)."""
    conn = await asyncpg.connect(cell.database_url)
    try:
        schemas = [
            r[0]
            for r in await conn.fetch(
                "select table_schema from information_schema.tables where table_name = 'outbox'"
            )
        ]
        waiting = " + ".join(
            f'(select count(*) from "{s}".outbox where partition_key = $1)'  # noqa: S608
            for s in schemas
        )
        while schemas:  # polled: the outboxes are other processes' tables
            if not await conn.fetchval(f"select {waiting}", tenant_id.encode()):
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def quiet(
    tenant_id: str, cell: CellEnds, security: KafkaSecuritySettings, settle: float
) -> None:
    """Until the cell has said and heard everything of the tenant, and then nothing more for
    `settle` seconds: its outbox rows are published, every consumer group has applied them,
    and no new record of the tenant (each record's key starts with its tenant's id) came on
    its partitions meanwhile. A late effect (a stream ended by the suspension, an event that
    causes another) is seen as a record, and waited for in turn."""
    seen: dict[TopicPartition, int] | None = None
    while True:
        await drained(tenant_id, cell)
        ends = await caught_up(tenant_id, cell, security)
        if seen is not None and not await _said_since(tenant_id, cell, security, seen, ends):
            return
        seen = ends
        await asyncio.sleep(settle)


async def _said_since(
    tenant_id: str,
    cell: CellEnds,
    security: KafkaSecuritySettings,
    since: dict[TopicPartition, int],
    until: dict[TopicPartition, int],
) -> bool:
    """Whether a record of the tenant was published between the two ends of each partition."""
    grown = {tp: (since.get(tp, 0), end) for tp, end in until.items() if end > since.get(tp, 0)}
    if not grown:
        return False
    reader = AIOKafkaConsumer(
        bootstrap_servers=cell.kafka_bootstrap_servers,
        enable_auto_commit=False,
        **client_security(security),
    )
    await reader.start()
    try:
        reader.assign(list(grown))
        for tp, (start, _) in grown.items():
            reader.seek(tp, start)
        prefix = tenant_id.encode()
        while any([await reader.position(tp) < end for tp, (_, end) in grown.items()]):
            for records in (await reader.getmany(timeout_ms=500)).values():
                if any((r.key or b"").startswith(prefix) for r in records):
                    return True
        return False
    finally:
        await reader.stop()


async def caught_up(
    tenant_id: str, cell: CellEnds, security: KafkaSecuritySettings
) -> dict[TopicPartition, int]:
    """Until every consumer group of the cell has applied the tenant's partition of each topic
    it reads up to its end: nothing published of the tenant is still on its way. The ends
    waited for, by partition."""
    ends: dict[TopicPartition, int] = {}
    uuid.UUID(tenant_id)  # a partition is chosen from the id as given
    groups: dict[str, list[str]] = {}
    for read in contract.TOPICS:
        for service in read.consumers:
            groups.setdefault(service, []).append(f"{cell.topic_prefix}{read.name}")
    for service, topics in sorted(groups.items()):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=cell.kafka_bootstrap_servers,
            group_id=f"{cell.topic_prefix}{service}",
            enable_auto_commit=False,
            **client_security(security),
        )
        await consumer.start()
        try:
            await consumer.topics()  # the cluster's metadata, with each topic's partitions
            for topic in topics:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    continue  # not made yet: nothing was published on it
                tp = TopicPartition(topic, partition_for(tenant_id.encode(), len(partitions)))
                end = (await consumer.end_offsets([tp]))[tp]
                ends[tp] = max(end, ends.get(tp, 0))
                while True:  # polled: the offsets are other processes' commits
                    if (await consumer.committed(tp) or 0) >= end:
                        break
                    await asyncio.sleep(0.2)
        finally:
            await consumer.stop()
    return ends
