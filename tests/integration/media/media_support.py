"""Running media replicas in the test process, and clients for their streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from lianluo.runtime.kafka import new_envelope
from lianluo.runtime.service import Service


@asynccontextmanager
async def media_replica(stack: Any) -> AsyncIterator[tuple[str, Service]]:
    from lianluo.services.media.app import build
    from lianluo.services.media.settings import MediaSettings

    env = stack.env(LIANLUO_GRPC_PORT="0")
    settings = MediaSettings(**{k.removeprefix("LIANLUO_").lower(): v for k, v in env.items()})
    service = await build(settings)
    task = asyncio.create_task(service.serve())
    while not service.grpc.port:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{service.grpc.port}", service
    finally:
        service.request_stop()
        await task


async def publish(
    stack: Any, topic: str, event_type: str, tenant_id: str, payload: Message
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
    await producer.start()
    try:
        envelope = new_envelope(event_type, tenant_id, payload, "test")
        await producer.send_and_wait(
            f"{stack.topic_prefix}{topic}", envelope.SerializeToString(), key=tenant_id.encode()
        )
    finally:
        await producer.stop()
