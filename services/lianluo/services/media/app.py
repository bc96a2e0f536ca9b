"""Composition root of the media service: wire the parts together and serve."""

from __future__ import annotations

from pathlib import Path

from lianluo.media.v1 import media_pb2 as pb
from lianluo.media.v1 import media_pb2_grpc as rpc
from lianluo.runtime import contract
from lianluo.runtime.metrics import Figure
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.media import events
from lianluo.services.media.grpc_api import MediaApi
from lianluo.services.media.hub import Hub, TimelineFollower
from lianluo.services.media.repository import Repository
from lianluo.services.media.service import MediaService
from lianluo.services.media.settings import MediaSettings

SPEC = ServiceSpec(
    name="media",
    settings=MediaSettings,
    migrations=Path(__file__).parent / "migrations",
)


async def build(settings: MediaSettings) -> Service:
    service = Service(SPEC, settings)
    await service.start_storage()
    view = await service.follow_tenant_config()
    hub = Hub()
    follower = TimelineFollower(
        settings.kafka_bootstrap_servers,
        settings.topic(contract.MEDIA_TIMELINE.name),
        hub,
        settings.kafka_fetch_wait_ms,
        security=settings,
    )
    await follower.start()
    service.add_background(follower, "timeline relay")
    repo = Repository()
    media = MediaService(
        service.pool,
        repo,
        view,
        event_topic=settings.topic(contract.INTERACTION_EVENT.name),
        routing_topic=settings.topic(contract.ROUTING_REQUEST.name),
        timeline_topic=settings.topic(contract.MEDIA_TIMELINE.name),
        secret_topic=settings.topic(contract.IVR_SECRET.name),
    )
    await service.add_consumer(events.handlers(media))
    service.add_grpc(
        rpc.add_MediaServiceServicer_to_server,
        MediaApi(media, hub, settings.stream_buffer_frames),
        pb.DESCRIPTOR.services_by_name["MediaService"].full_name,
    )

    async def live_interactions() -> float:
        async with service.pool.acquire() as conn:
            return await repo.live_count(conn)

    service.metrics.add(
        Figure(
            "lianluo_media_interactions_live",
            "Interactions started and not ended, of the whole cell (every replica reads the "
            "same table)",
            live_interactions,
        )
    )
    return service


async def serve(settings: MediaSettings) -> None:
    await (await build(settings)).serve()
