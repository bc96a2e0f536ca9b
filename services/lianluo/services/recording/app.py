"""Composition root of the recording service: wire the parts together and serve."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from lianluo.domain.words import Segmenter
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.recording.v1 import recording_pb2_grpc as rpc
from lianluo.runtime import contract
from lianluo.runtime.objects import Links, Objects
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.recording import events
from lianluo.services.recording.grpc_api import RecordingApi
from lianluo.services.recording.repository import Repository
from lianluo.services.recording.service import RecordingService
from lianluo.services.recording.settings import RecordingSettings
from lianluo.services.recording.sweeper import RetentionSweeper

SPEC = ServiceSpec(
    name="recording",
    settings=RecordingSettings,
    migrations=Path(__file__).parent / "migrations",
)


async def build(settings: RecordingSettings) -> Service:
    """Start storage, the tenant configuration, the consumer and the purge loop."""
    service = Service(SPEC, settings)
    await service.start_storage()
    repo = Repository()
    topic = settings.topic(contract.RECORDING_EVENT.name)
    # The view authenticates API keys and tells the sweeper when a tenant is deleted.
    view = await service.follow_tenant_config()
    objects = Objects(settings)
    sweeper = RetentionSweeper(
        service.pool,
        repo,
        topic,
        objects,
        interval=settings.recording_purge_interval_seconds,
        batch_size=settings.recording_purge_batch_size,
    )
    view.subscribe(sweeper.on_tenant_config)
    # One jieba for the words of stored messages and of searches, loaded on first use.
    words = Segmenter()
    recorder = events.Recorder(
        repo, topic, timedelta(days=settings.recording_retention_days), words
    )
    await service.add_consumer(recorder.handlers())
    service.add_background(sweeper, "retention sweep")
    service.add_grpc(
        rpc.add_RecordingServiceServicer_to_server,
        RecordingApi(
            RecordingService(
                service.pool,
                repo,
                words,
                Links(
                    settings.admin_key.get_secret_value(),
                    lambda: settings.recording_link_base_url.rstrip("/"),
                ),
                objects,
            )
        ),
        pb.DESCRIPTOR.services_by_name["RecordingService"].full_name,
    )
    return service


async def serve(settings: RecordingSettings) -> None:
    await (await build(settings)).serve()
