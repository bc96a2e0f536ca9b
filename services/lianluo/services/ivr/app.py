"""Composition root of the IVR service: wire the parts together and serve."""

from __future__ import annotations

from pathlib import Path

from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.ivr.v1 import ivr_pb2_grpc as rpc
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.ivr import events
from lianluo.services.ivr.grpc_api import IvrApi
from lianluo.services.ivr.repository import Repository
from lianluo.services.ivr.service import FlowTools, RunService
from lianluo.services.ivr.settings import IvrSettings
from lianluo.services.ivr.timeouts import TimeoutSweeper

SPEC = ServiceSpec(
    name="ivr",
    settings=IvrSettings,
    migrations=Path(__file__).parent / "migrations",
    topics=[events.INTERACTION_TOPIC, events.OUTPUT_TOPIC, events.ROUTING_TOPIC],
)


class IvrProcess(Service):
    """The shared lifecycle plus the timeout sweeper, a background loop of the IVR's own."""

    config: TenantConfigView
    runs: RunService
    sweeper: TimeoutSweeper | None = None

    def start_sweeper(self, sweeper: TimeoutSweeper) -> None:
        self.sweeper = sweeper
        # The runtime has no public hook for a service's own loop; _spawn gives it the same
        # supervision as the consumers (a loop that dies stops the process).
        self._spawn(sweeper.run(), "timeout sweeper")

    async def shutdown(self) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
        await super().shutdown()


async def build(settings: IvrSettings) -> IvrProcess:
    """Start storage, follow tenant configuration, and wire every part; the caller serves it."""
    service = IvrProcess(SPEC, settings)
    await service.start_storage()
    service.config = await service.follow_tenant_config()
    topics = events.Topics(
        output=settings.topic(events.OUTPUT_TOPIC), routing=settings.topic(events.ROUTING_TOPIC)
    )
    service.runs = RunService(Repository(), service.config, topics, settings.timeout_batch)
    await service.add_consumer([events.INTERACTION_TOPIC], service.runs.handle)
    service.start_sweeper(TimeoutSweeper(service.pool, service.runs, settings.timeout_poll_seconds))
    service.add_grpc(
        rpc.add_IvrServiceServicer_to_server,
        IvrApi(FlowTools(service.config)),
        api.DESCRIPTOR.services_by_name["IvrService"].full_name,
    )
    return service


async def serve(settings: IvrSettings) -> None:
    await (await build(settings)).serve()
