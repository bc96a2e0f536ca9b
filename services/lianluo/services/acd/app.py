"""Composition root of the ACD: wire the parts together and serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as rpc
from lianluo.runtime.kafka import EventConsumer
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.acd import events
from lianluo.services.acd.grpc_api import AcdServicer
from lianluo.services.acd.repository import Repository
from lianluo.services.acd.router import Router
from lianluo.services.acd.service import AcdApi
from lianluo.services.acd.settings import AcdSettings

SPEC = ServiceSpec(
    name="acd",
    settings=AcdSettings,
    migrations=Path(__file__).parent / "migrations",
    topics=[*events.CONSUMED, events.ROUTING_DECISION],
)
# How long the timers wait for the consumer's assignment before treating it as empty.
ASSIGNMENT_POLL_SECONDS = 0.05


class AcdRuntime(Service):
    """The shared service lifecycle, plus the routing timers, which stop before the pool."""

    router: Router | None = None
    view: TenantConfigView | None = None
    timers: asyncio.Task[None] | None = None
    consumer: EventConsumer | None = None

    async def owned_partitions(self) -> set[int]:
        """The partitions of routing.request this replica's consumer holds now."""
        if self.consumer is None:
            return set()
        try:
            async with asyncio.timeout(ASSIGNMENT_POLL_SECONDS):
                assigned = await self.consumer.wait_assigned()
        except TimeoutError:
            return set()
        topic = self.settings.topic(events.ROUTING_REQUEST)
        return {tp.partition for tp in assigned if tp.topic == topic}

    async def shutdown(self) -> None:
        if self.router is not None and self.timers is not None:
            self.router.stop()
            await self.timers
        await super().shutdown()


async def build(settings: AcdSettings) -> AcdRuntime:
    """Start storage, follow configuration, consume and wire every part; the caller serves it."""
    service = AcdRuntime(SPEC, settings)
    await service.start_storage()
    view = service.view = await service.follow_tenant_config()
    repo = Repository()
    topics = events.Topics.of(settings)
    router = Router(service.pool, repo, view, topics, settings)
    await service.add_consumer(events.CONSUMED, router.handle)
    # The runtime keeps the consumer to itself; the timers need its partition assignment to
    # know which tenants this replica owns.
    service.consumer = service._consumers[-1]
    service.router = router
    service.timers = asyncio.create_task(
        router.run_timers(service.owned_partitions), name="acd: routing timers"
    )
    api = AcdApi(service.pool, repo, view, topics, settings)
    service.add_grpc(
        rpc.add_AcdServiceServicer_to_server,
        AcdServicer(api),
        acd.DESCRIPTOR.services_by_name["AcdService"].full_name,
    )
    return service


async def serve(settings: AcdSettings) -> None:
    await (await build(settings)).serve()
