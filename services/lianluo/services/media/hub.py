"""The relay: every replica follows the timeline topic and feeds the streams connected to it.

The replica that changes an interaction writes the frame to Postgres and, through the outbox,
to the media service's own topic `media.timeline`. Every replica reads that topic from its end
(no consumer group: each one needs every frame) and hands each frame to its local streams, so a
participant on any replica receives every item of its interaction, in sequence order. What a
stream missed before it joined comes from Postgres (replay), not from this topic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError

from lianluo.events.v1 import envelope_pb2
from lianluo.media.v1 import media_pb2 as pb
from lianluo.runtime.kafka import FETCH_MAX_WAIT_MS, client_security
from lianluo.runtime.logs import get_logger

if TYPE_CHECKING:
    from lianluo.runtime.settings import KafkaSecuritySettings

log = get_logger(__name__)
FRAME = "media.frame"
STAFF_FRAME = "media.frame.staff"
# Frames for an agent's desk (offers) carry the record key "<tenant>/desk/<agent id>".
DESK_FRAME = "media.desk"


class StreamOverflow(Exception):
    """A client that reads too slowly; its stream is closed rather than slowing the relay."""


@dataclass(eq=False)
class LocalStream:
    tenant_id: str
    interaction_id: str
    agent_id: str
    staff: bool
    capacity: int
    frames: asyncio.Queue[pb.ServerFrame | None] = field(init=False)
    overflowed: bool = False

    def __post_init__(self) -> None:
        self.frames = asyncio.Queue(self.capacity)

    def offer(self, frame: pb.ServerFrame) -> None:
        try:
            self.frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True
            self.frames = asyncio.Queue(1)
            self.frames.put_nowait(None)


class Hub:
    """Streams connected to this replica, by interaction and by agent desk."""

    def __init__(self) -> None:
        self._interactions: dict[tuple[str, str], set[LocalStream]] = {}
        self._desks: dict[tuple[str, str], set[LocalStream]] = {}

    def register(self, stream: LocalStream) -> None:
        if stream.interaction_id:
            key = (stream.tenant_id, stream.interaction_id)
            self._interactions.setdefault(key, set()).add(stream)
        else:
            self._desks.setdefault((stream.tenant_id, stream.agent_id), set()).add(stream)

    def unregister(self, stream: LocalStream) -> None:
        for table, key in (
            (self._interactions, (stream.tenant_id, stream.interaction_id)),
            (self._desks, (stream.tenant_id, stream.agent_id)),
        ):
            streams = table.get(key)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del table[key]

    @property
    def connected(self) -> int:
        return sum(len(s) for s in (*self._interactions.values(), *self._desks.values()))

    def dispatch(
        self, tenant_id: str, frame: pb.ServerFrame, staff_only: bool, desk_agent: str = ""
    ) -> None:
        if desk_agent:
            targets = self._desks.get((tenant_id, desk_agent), set())
        else:
            targets = self._interactions.get((tenant_id, frame.interaction_id), set())
        for stream in list(targets):
            if stream.staff or not staff_only:
                stream.offer(frame)


class TimelineFollower:
    """Reads `media.timeline` from its end and dispatches every frame to the hub."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        hub: Hub,
        fetch_wait_ms: int = FETCH_MAX_WAIT_MS,
        *,
        security: KafkaSecuritySettings | None = None,
    ) -> None:
        self._topic = topic
        self._hub = hub
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            **client_security(security),
            group_id=None,
            fetch_max_wait_ms=fetch_wait_ms,
        )
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [
            TopicPartition(self._topic, p)
            for p in self._consumer.partitions_for_topic(self._topic) or []
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(timeout_ms=300, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self._dispatch(record.key or b"", record.value or b"")
        finally:
            await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    def _dispatch(self, key: bytes, value: bytes) -> None:
        try:
            envelope = envelope_pb2.Envelope.FromString(value)
            frame = pb.ServerFrame()
            if not envelope.payload.Unpack(frame):
                return
        except DecodeError:
            log.error("not a timeline frame; skipped")
            return
        desk = key.decode().rpartition("/desk/")[2] if envelope.type == DESK_FRAME else ""
        self._hub.dispatch(envelope.tenant_id, frame, envelope.type == STAFF_FRAME, desk)
