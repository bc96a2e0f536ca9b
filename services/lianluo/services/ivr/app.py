"""Composition root of the IVR service: wire the parts together and serve."""

from __future__ import annotations

from pathlib import Path

from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.ivr.v1 import ivr_pb2_grpc as rpc
from lianluo.runtime.service import Service, ServiceSpec
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
)


async def build(settings: IvrSettings) -> Service:
    """Start storage, follow tenant configuration, and wire every part; the caller serves it."""
    service = Service(SPEC, settings)
    await service.start_storage()
    config = await service.follow_tenant_config()
    runs = RunService(Repository(), config, events.Topics.of(settings), settings.timeout_batch)
    await service.add_consumer(events.handlers(runs))
    sweeper = TimeoutSweeper(service.pool, runs, settings.timeout_poll_seconds)
    service.add_background(sweeper, "prompt timeouts")
    service.add_grpc(
        rpc.add_IvrServiceServicer_to_server,
        IvrApi(FlowTools(config)),
        api.DESCRIPTOR.services_by_name["IvrService"].full_name,
    )
    return service


async def serve(settings: IvrSettings) -> None:
    await (await build(settings)).serve()
