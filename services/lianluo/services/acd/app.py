"""Composition root of the ACD: wire the parts together and serve."""

from __future__ import annotations

from pathlib import Path

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as rpc
from lianluo.runtime import contract
from lianluo.runtime.kafka import EventConsumer
from lianluo.runtime.metrics import Figure
from lianluo.runtime.service import Service, ServiceSpec
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
)


class RoutingTimers:
    """Offer expiry and max wait, for the tenants whose partition this replica owns."""

    def __init__(self, router: Router, consumer: EventConsumer, topic: str) -> None:
        self._router = router
        self._consumer = consumer
        self._topic = topic

    async def owned_partitions(self) -> set[int]:
        """Partitions this replica owns and has caught up on, in every topic it consumes.

        Timers of a tenant taken over from a replica that died wait until its backlog (an
        agent's accept, say) is applied; otherwise the accepted offer would time out first.
        """
        assigned = self._consumer.assignment()
        ready = await self._consumer.caught_up()
        behind = {tp.partition for tp in assigned - ready}
        return {tp.partition for tp in ready if tp.topic == self._topic} - behind

    async def run(self) -> None:
        await self._router.run_timers(self.owned_partitions)

    def stop(self) -> None:
        self._router.stop()


async def build(settings: AcdSettings) -> Service:
    """Start storage, follow configuration, consume and wire every part; the caller serves it."""
    service = Service(SPEC, settings)
    await service.start_storage()
    view = await service.follow_tenant_config()
    repo = Repository()
    topics = events.Topics.of(settings)
    router = Router(service.pool, repo, view, topics, settings)
    consumer = await service.add_consumer(events.handlers(router))
    timers = RoutingTimers(router, consumer, settings.topic(contract.ROUTING_REQUEST.name))
    service.add_background(timers, "routing timers")
    service.metrics.add(
        Figure(
            "lianluo_acd_contacts_waiting",
            "Contacts waiting in queues, not yet assigned (callbacks not yet due left out), of "
            "the tenants this replica owns",
            router.contacts_waiting,
        )
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
