"""Helpers for recording tests: the service in-process, a publisher of the real input topics,
a reader of `recording.event`, and a builder of one contact's events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from conftest import Stack
from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import interaction_pb2, ivr_pb2, routing_pb2
from lianluo.events.v1 import recording_pb2 as events_pb
from lianluo.events.v1.envelope_pb2 import Envelope
from lianluo.media.v1 import media_pb2 as media
from lianluo.recording.v1 import recording_pb2_grpc as rpc
from lianluo.runtime.kafka import new_envelope
from lianluo.runtime.service import Service
from lianluo.services.recording.app import build
from lianluo.services.recording.settings import RecordingSettings

T = TypeVar("T")


@asynccontextmanager
async def running_recording(stack: Stack, **extra: str) -> AsyncIterator[Service]:
    """The recording service serving in this process until the block ends."""
    env = stack.env(LIANLUO_GRPC_PORT="0", **extra)
    values: dict[str, Any] = {k.removeprefix("LIANLUO_").lower(): v for k, v in env.items()}
    service = await build(RecordingSettings(**values))
    task = asyncio.create_task(service.serve())
    try:
        async with asyncio.timeout(20):
            while not service.grpc.port:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield service
    finally:
        service.request_stop()
        await task


class Publisher:
    """Publishes envelopes on the real topics, keyed by tenant id, as the other services do."""

    def __init__(self, stack: Stack) -> None:
        self._prefix = stack.topic_prefix
        self._producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, envelope: Envelope) -> None:
        await self._producer.send_and_wait(
            self._prefix + topic,
            value=envelope.SerializeToString(),
            key=envelope.tenant_id.encode(),
        )


class RecordingEvents:
    """Reads `recording.event` from its beginning, keeping every event seen."""

    def __init__(self, stack: Stack) -> None:
        self._topic = f"{stack.topic_prefix}recording.event"
        self._consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka, group_id=None)
        self.seen: list[tuple[Envelope, events_pb.RecordingEvent]] = []

    async def start(self) -> None:
        await self._consumer.start()
        parts = [
            TopicPartition(self._topic, p)
            for p in sorted(self._consumer.partitions_for_topic(self._topic) or [])
        ]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_for(
        self, match: Callable[[Envelope, events_pb.RecordingEvent], bool]
    ) -> events_pb.RecordingEvent:
        """The first event that matches (bound the wait with a timeout)."""
        while True:
            for envelope, event in self.seen:
                if match(envelope, event):
                    return event
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    envelope = Envelope.FromString(record.value)
                    event = events_pb.RecordingEvent()
                    envelope.payload.Unpack(event)
                    self.seen.append((envelope, event))


@dataclass
class Contact:
    """Builds the events of one contact in the order they happen, one second apart."""

    tenant_id: str
    start: datetime
    interaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    sequence: int = 0
    steps: int = 0
    # (topic, envelope) in the order they happened.
    published: list[tuple[str, Envelope]] = field(default_factory=list)

    def _envelope(self, topic: str, event_type: str, payload: Message, producer: str) -> Envelope:
        envelope = new_envelope(event_type, self.tenant_id, payload, producer)
        envelope.occur_time.FromDatetime(self.start + timedelta(seconds=self.steps))
        self.steps += 1
        self.published.append((topic, envelope))
        return envelope

    def interaction(self, case: str, value: Message) -> Envelope:
        self.sequence += 1
        event = interaction_pb2.InteractionEvent(
            interaction_id=self.interaction_id, sequence=self.sequence
        )
        getattr(event, case).CopyFrom(value)
        return self._envelope("interaction.event", f"interaction.{case}", event, "media")

    def message(self, participant_id: str, role: int, **content: Any) -> Envelope:
        msg = media.Message(
            id=str(uuid.uuid4()),
            interaction_id=self.interaction_id,
            sequence=self.sequence + 1,
            sender_participant_id=participant_id,
            sender_role=role,  # type: ignore[arg-type]
            content=media.MessageContent(**content),
        )
        msg.send_time.FromDatetime(self.start + timedelta(seconds=self.steps))
        return self.interaction("message", msg)

    def state(self, from_state: int, to_state: int, reason: str = "") -> Envelope:
        change = media.StateChange(from_state=from_state, to_state=to_state, reason=reason)  # type: ignore[arg-type]
        return self.interaction("state_changed", change)

    def ivr(self, case: str, value: Message) -> Envelope:
        out = ivr_pb2.IvrOutput(interaction_id=self.interaction_id, flow_id="f-1", node_id="n")
        getattr(out, case).CopyFrom(value)
        return self._envelope("ivr.output", f"ivr.{case}", out, "ivr")

    def routing_request(self, requirements: common.RoutingRequirements) -> Envelope:
        request = ivr_pb2.RoutingRequest(interaction_id=self.interaction_id)
        request.requirements.CopyFrom(requirements)
        return self._envelope("routing.request", "routing.requested", request, "media")

    def decision(self, case: str, value: Message, explanation: acd.RoutingExplanation) -> Envelope:
        decision = routing_pb2.RoutingDecision(interaction_id=self.interaction_id)
        decision.explanation.CopyFrom(explanation)
        getattr(decision, case).CopyFrom(value)
        return self._envelope("routing.decision", f"routing.{case}", decision, "acd")


async def eventually(check: Callable[[], Awaitable[T | None]], seconds: float = 20) -> T:
    """Poll `check` until it returns something, within `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            found = await check()
            if found is not None:
                return found
            await asyncio.sleep(0.1)


def stub(channel: grpc.aio.Channel) -> rpc.RecordingServiceStub:
    return rpc.RecordingServiceStub(channel)


def media_participant(
    participant_id: str, role: int, subject_id: str, name: str
) -> media.Participant:
    return media.Participant(
        id=participant_id,
        role=role,  # type: ignore[arg-type]
        subject_id=subject_id,
        display_name=name,
    )


def now() -> datetime:
    return datetime.now(UTC)
