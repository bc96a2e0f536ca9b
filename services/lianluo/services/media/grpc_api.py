"""The gRPC adapter of the media service, including the Connect stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Gauge

from lianluo.media.v1 import media_pb2 as pb
from lianluo.media.v1 import media_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.runtime.errors import FieldViolation, InvalidArgument
from lianluo.services.media.hub import Hub, LocalStream
from lianluo.services.media.service import MediaService

R = pb.ParticipantRole
STREAMS_OPEN = Gauge(
    "lianluo_media_streams_open",
    "Connect streams open on this replica, by kind: interaction (a participant in one) or desk "
    "(an agent's offers)",
    ["kind"],
)
for _kind in ("interaction", "desk"):
    STREAMS_OPEN.labels(_kind)


class MediaApi(rpc.MediaServiceServicer):
    def __init__(self, media: MediaService, hub: Hub, buffer_frames: int) -> None:
        self.media = media
        self.hub = hub
        self.buffer_frames = buffer_frames

    @auth.needs("interaction:write", emits=True)
    async def StartInteraction(
        self, request: pb.StartInteractionRequest, _: Any
    ) -> pb.StartInteractionResponse:
        interaction, customer = await self.media.start(request)
        return pb.StartInteractionResponse(
            interaction=interaction, customer_participant_id=customer
        )

    @auth.needs("interaction:write", emits=True)
    async def Send(self, request: pb.SendRequest, _: Any) -> pb.Message:
        return await self.media.send(
            request.tenant_id,
            request.interaction_id,
            request.participant_id,
            request.client_message_id,
            request.content,
            request.whisper,
        )

    @auth.needs("interaction:write")
    async def AddMedia(self, request: pb.AddMediaRequest, _: Any) -> pb.MediaLeg:
        return await self.media.add_media(request)

    @auth.needs("interaction:write")
    async def RemoveMedia(self, request: pb.RemoveMediaRequest, _: Any) -> pb.MediaLeg:
        return await self.media.remove_media(request)

    @auth.needs("interaction:write")
    async def Transfer(self, request: pb.TransferRequest, _: Any) -> pb.Interaction:
        return await self.media.transfer(request)

    @auth.needs("interaction:write")
    async def End(self, request: pb.EndRequest, _: Any) -> pb.Interaction:
        return await self.media.end(request)

    @auth.needs("interaction:write", emits=True)
    async def ScheduleCallback(self, request: pb.ScheduleCallbackRequest, _: Any) -> pb.Interaction:
        return await self.media.schedule_callback(request)

    @auth.needs("interaction:write", emits=True)
    async def TakeOver(self, request: pb.TakeOverRequest, _: Any) -> pb.Interaction:
        return await self.media.take_over(request)

    @auth.needs("interaction:write", emits=True)
    async def Rate(self, request: pb.RateRequest, _: Any) -> pb.Interaction:
        return await self.media.rate(request)

    @auth.needs("interaction:read")
    async def GetInteraction(self, request: pb.GetInteractionRequest, _: Any) -> pb.Interaction:
        return await self.media.get(request.tenant_id, request.interaction_id)

    @auth.needs("routing:read")
    async def ListInteractions(
        self, request: pb.ListInteractionsRequest, _: Any
    ) -> pb.ListInteractionsResponse:
        return await self.media.list_open(request)

    @auth.needs("interaction:write")
    async def Connect(
        self, requests: AsyncIterator[pb.ClientFrame], context: Any
    ) -> AsyncIterator[pb.ServerFrame]:
        """Join, replay what the client missed, then relay live frames until the end."""
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("frame") != "join":
            raise InvalidArgument([FieldViolation("join", "the first frame must be join")])
        join = first.join
        interaction, me = await self.media.join(join)
        stream = LocalStream(
            tenant_id=join.tenant_id,
            interaction_id=join.interaction_id,
            agent_id=join.subject_id if interaction is None else "",
            staff=me is None or self.media.is_staff(me.role),
            capacity=self.buffer_frames,
        )
        # Registered before the replay is read, so nothing falls between replay and live.
        self.hub.register(stream)
        open_streams = STREAMS_OPEN.labels("desk" if interaction is None else "interaction")
        open_streams.inc()
        reader: asyncio.Task[None] | None = None
        try:
            yield pb.ServerFrame(
                interaction_id=join.interaction_id,
                joined=pb.Joined(participant_id=me.id if me else "", interaction=interaction),
            )
            last = join.last_seen_sequence
            if interaction is None:
                backlog = await self.media.pending_offers(join.tenant_id, join.subject_id)
            else:
                backlog = await self.media.replay(
                    join.tenant_id, join.interaction_id, last, stream.staff
                )
            for frame in backlog:
                yield frame
                last = max(last, frame.sequence)
                if frame.WhichOneof("frame") == "ended":
                    return
            reader = asyncio.create_task(self._read(requests, join, me))
            while True:
                getter = asyncio.create_task(stream.frames.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    reader.result()  # re-raise what the client's frames caused
                    return
                item = getter.result()
                if item is None:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "the stream fell too far behind; rejoin"
                    )
                    return
                if item.sequence and item.sequence <= last:
                    continue  # already sent by the replay
                yield item
                last = max(last, item.sequence)
                if item.WhichOneof("frame") == "ended":
                    return
        finally:
            self.hub.unregister(stream)
            open_streams.dec()
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _read(
        self, requests: AsyncIterator[pb.ClientFrame], join: pb.Join, me: pb.Participant | None
    ) -> None:
        read_upto, typed_at = 0, 0.0
        async for frame in requests:
            kind = frame.WhichOneof("frame")
            if kind in ("ack", "typing") and me is not None:
                # Passed on to the others, outside the timeline: an ack only when it reads
                # further, typing at most once a second (stopping always).
                signal = pb.ServerFrame(interaction_id=join.interaction_id)
                if kind == "ack":
                    if not read_upto < frame.ack.sequence < 2**62:
                        continue
                    read_upto = frame.ack.sequence
                    signal.read.CopyFrom(pb.Receipt(participant_id=me.id, sequence=read_upto))
                else:
                    now = time.monotonic()
                    if frame.typing.active and now - typed_at < 1.0:
                        continue
                    typed_at = now if frame.typing.active else 0.0
                    signal.typing.CopyFrom(
                        pb.Typing(active=frame.typing.active, participant_id=me.id)
                    )
                auth.spend_event()
                await self.media.signal(join.tenant_id, signal)
            elif kind == "send" and me is not None:
                auth.spend_event()
                await self.media.send(
                    join.tenant_id,
                    join.interaction_id,
                    me.id,
                    frame.send.client_message_id,
                    frame.send.content,
                    frame.send.whisper,
                )
            elif kind == "leave":
                if me is not None and self.media.is_staff(me.role):
                    await self.media.leave(join.tenant_id, join.interaction_id, me.id)
                elif me is not None and me.role == R.PARTICIPANT_ROLE_CUSTOMER:
                    await self.media.end(
                        pb.EndRequest(
                            tenant_id=join.tenant_id,
                            interaction_id=join.interaction_id,
                            participant_id=me.id,
                            resolution=pb.Resolution(code="customer_left", note=frame.leave.reason),
                        )
                    )
                return
