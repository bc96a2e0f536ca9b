"""A client of the media Connect stream, shared by the demo, the terminal clients and tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from lianluo.media.v1 import media_pb2 as pb
from lianluo.media.v1 import media_pb2_grpc as rpc

FramePredicate = Callable[[pb.ServerFrame], bool]


class StreamClient:
    """One Connect stream: sends client frames, collects server frames as they arrive."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        key: str,
        join: pb.Join,
        on_frame: Callable[[pb.ServerFrame], None] | None = None,
    ) -> None:
        self._outgoing: asyncio.Queue[pb.ClientFrame | None] = asyncio.Queue()
        self._outgoing.put_nowait(pb.ClientFrame(join=join))
        self._on_frame = on_frame
        self.frames: list[pb.ServerFrame] = []
        self._arrived = asyncio.Condition()
        self._call = rpc.MediaServiceStub(channel).Connect(
            self._requests(), metadata=(("authorization", f"Bearer {key}"),)
        )
        self._task = asyncio.create_task(self._collect())

    @classmethod
    async def connect(
        cls,
        channel: grpc.aio.Channel,
        key: str,
        join: pb.Join,
        on_frame: Callable[[pb.ServerFrame], None] | None = None,
        retry_seconds: float = 30,
    ) -> StreamClient:
        """A joined stream. A replica that has not yet learned a new key or agent from
        tenant.config answers UNAUTHENTICATED or NOT_FOUND for a moment: that is retried."""
        deadline = asyncio.get_running_loop().time() + retry_seconds
        while True:
            stream = cls(channel, key, join, on_frame)
            try:
                await stream.wait_for(lambda f: f.WhichOneof("frame") == "joined", retry_seconds)
                return stream
            except grpc.aio.AioRpcError as error:
                await stream.close()
                late = asyncio.get_running_loop().time() > deadline
                if late or error.code() not in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.NOT_FOUND,
                ):
                    raise
                await asyncio.sleep(0.3)

    async def _requests(self) -> AsyncIterator[pb.ClientFrame]:
        while (frame := await self._outgoing.get()) is not None:
            yield frame

    async def _collect(self) -> None:
        try:
            async for frame in self._call:
                if self._on_frame is not None:
                    self._on_frame(frame)
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

    def leave(self, reason: str = "") -> None:
        self._outgoing.put_nowait(pb.ClientFrame(leave=pb.Leave(reason=reason)))

    async def wait_for(self, predicate: FramePredicate, seconds: float = 15) -> pb.ServerFrame:
        """The first frame, arrived or arriving, for which `predicate` holds."""
        seen = 0
        async with asyncio.timeout(seconds), self._arrived:
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self._task.done():
                    self._task.result()
                    raise ConnectionError("the stream ended first")
                await self._arrived.wait()

    def texts(self) -> list[str]:
        return [f.message.content.text for f in self.frames if f.WhichOneof("frame") == "message"]

    @property
    def done(self) -> bool:
        return self._task.done()

    async def close(self) -> None:
        self._outgoing.put_nowait(None)
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
