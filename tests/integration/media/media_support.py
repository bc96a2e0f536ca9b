"""Running media replicas in the test process, and clients for their streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from lianluo.media.v1 import media_pb2 as pb
from lianluo.media.v1 import media_pb2_grpc as rpc
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


class StreamClient:
    """One Connect stream: sends client frames, collects server frames."""

    def __init__(self, channel: grpc.aio.Channel, key: str, join: pb.Join) -> None:
        self._outgoing: asyncio.Queue[pb.ClientFrame | None] = asyncio.Queue()
        self._outgoing.put_nowait(pb.ClientFrame(join=join))
        self.frames: list[pb.ServerFrame] = []
        self._arrived = asyncio.Condition()
        self._call = rpc.MediaServiceStub(channel).Connect(
            self._requests(), metadata=(("authorization", f"Bearer {key}"),)
        )
        self._task = asyncio.create_task(self._collect())

    async def _requests(self) -> AsyncIterator[pb.ClientFrame]:
        while (frame := await self._outgoing.get()) is not None:
            yield frame

    async def _collect(self) -> None:
        try:
            async for frame in self._call:
                async with self._arrived:
                    self.frames.append(frame)
                    self._arrived.notify_all()
        finally:
            async with self._arrived:
                self._arrived.notify_all()

    def send_text(self, text: str, client_id: str) -> None:
        content = pb.MessageContent(text=text)
        self._outgoing.put_nowait(
            pb.ClientFrame(send=pb.SendMessage(client_message_id=client_id, content=content))
        )

    async def wait_for(self, predicate: Any, seconds: float = 15) -> pb.ServerFrame:
        async with asyncio.timeout(seconds), self._arrived:
            while True:
                for frame in self.frames:
                    if predicate(frame):
                        return frame
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the stream ended first")
                await self._arrived.wait()

    def texts(self) -> list[str]:
        return [f.message.content.text for f in self.frames if f.WhichOneof("frame") == "message"]

    async def close(self) -> None:
        self._outgoing.put_nowait(None)
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
