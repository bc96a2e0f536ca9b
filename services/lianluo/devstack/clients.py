"""Clients shared by the demo, the terminal clients and tests: the media Connect stream, a
person's signed-in session, a customer's session token, and a browser on the web chat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc

from lianluo.media.v1 import media_pb2 as pb
from lianluo.media.v1 import media_pb2_grpc as rpc
from lianluo.tenants.v1 import tenants_pb2 as tpb
from lianluo.tenants.v1 import tenants_pb2_grpc as trpc

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
        self.send(pb.MessageContent(text=text), client_id)

    def send(self, content: pb.MessageContent, client_id: str) -> None:
        self._outgoing.put_nowait(
            pb.ClientFrame(send=pb.SendMessage(client_message_id=client_id, content=content))
        )

    def typing(self, active: bool = True) -> None:
        self._outgoing.put_nowait(pb.ClientFrame(typing=pb.Typing(active=active)))

    def read(self, sequence: int) -> None:
        """A read receipt: everything up to `sequence` was shown."""
        self._outgoing.put_nowait(pb.ClientFrame(ack=pb.Ack(sequence=sequence)))

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


class Session:
    """A person signed in: their access token, renewed with the refresh token before it
    expires, so a desk open for hours keeps working."""

    RENEW_BEFORE = timedelta(seconds=60)

    def __init__(self, channel: grpc.aio.Channel, tokens: tpb.Tokens) -> None:
        self._auth = trpc.AuthServiceStub(channel)
        self._tokens = tokens

    @classmethod
    async def login(
        cls, channel: grpc.aio.Channel, tenant: str, name: str, password: str
    ) -> Session:
        tokens = await trpc.AuthServiceStub(channel).Login(
            tpb.LoginRequest(tenant=tenant, name=name, password=password)
        )
        return cls(channel, tokens)

    @property
    def user(self) -> tpb.User:
        return self._tokens.user

    async def token(self) -> str:
        """The access token, renewed first when it is about to expire."""
        expires = self._tokens.access_expire_time.ToDatetime(UTC)
        if expires - datetime.now(UTC) < self.RENEW_BEFORE:
            self._tokens = await self._auth.Refresh(
                tpb.RefreshRequest(refresh_token=self._tokens.refresh_token)
            )
        return self._tokens.access_token

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {await self.token()}"),)

    async def logout(self) -> None:
        await self._auth.Logout(tpb.LogoutRequest(refresh_token=self._tokens.refresh_token))


async def customer_session(
    channel: grpc.aio.Channel, key: str, tenant_id: str, customer_id: str, on: int
) -> str:
    """What an app's backend does for its signed-in customer: a session token bound to that
    customer on one channel, minted with a key that has `sessions:write`."""
    request = tpb.CreateCustomerSessionRequest(tenant_id=tenant_id, customer_id=customer_id)
    request.channel = on  # type: ignore[assignment]
    session: tpb.CustomerSession = await trpc.AuthServiceStub(channel).CreateCustomerSession(
        request, metadata=(("authorization", f"Bearer {key}"),)
    )
    return session.token


class WebVisitor:
    """A browser with the web chat widget, over the gateway's WebSocket: it says hello (to
    resume, with the visitor, interaction and last sequence seen), then JSON both ways."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.items: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, socket_url: str, origin: str, **hello: Any
    ) -> WebVisitor:
        ws = await http.ws_connect(socket_url, origin=origin)
        await ws.send_json({"type": "hello", **hello})
        return cls(ws)

    async def next(
        self, predicate: Callable[[dict[str, Any]], bool], seconds: float = 30
    ) -> dict[str, Any]:
        """The first item, received or arriving, for which `predicate` holds."""
        for seen in self.items:
            if predicate(seen):
                return seen
        async with asyncio.timeout(seconds):
            while True:
                message = await self.ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"the chat closed: {message.type.name} {message.data}")
                item: dict[str, Any] = json.loads(message.data)
                self.items.append(item)
                if predicate(item):
                    return item

    async def say(self, text: str, client_id: str) -> None:
        await self.ws.send_json({"type": "message", "id": client_id, "text": text})

    def texts(self) -> list[str]:
        return [i["text"] for i in self.items if i.get("type") == "message"]

    def prompts(self) -> list[str]:
        return [i["text"] for i in self.items if i.get("type") == "prompt"]
