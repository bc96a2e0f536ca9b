"""What the recording service consumes (every interaction, IVR, routing and agent event) and
publishes (`recording.event`: stored, purged), each through the outbox in the change's
transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
from google.protobuf.message import Message

from lianluo.domain.words import Segmenter, document_text
from lianluo.events.v1 import recording_pb2 as events_pb
from lianluo.runtime import contract, outbox
from lianluo.runtime.kafka import Envelope
from lianluo.runtime.logs import get_logger
from lianluo.services.recording import domain
from lianluo.services.recording.domain import Summary
from lianluo.services.recording.repository import Repository

log = get_logger(__name__)
PRODUCER = "recording"


async def publish_stored(conn: asyncpg.Connection, topic: str, summary: Summary) -> None:
    event = events_pb.RecordingEvent(
        interaction_id=summary.interaction_id, stored=domain.summary_message(summary)
    )
    envelope = contract.envelope(contract.RECORDING_EVENT, PRODUCER, summary.tenant_id, event)
    await outbox.enqueue(conn, topic, envelope)


async def publish_purged(
    conn: asyncpg.Connection,
    topic: str,
    summary: Summary,
    reason: events_pb.PurgeReason.ValueType,
) -> None:
    event = events_pb.RecordingEvent(
        interaction_id=summary.interaction_id,
        purged=events_pb.RecordingPurged(
            reason=reason, entry_count=summary.entry_count, media_count=summary.media_count
        ),
    )
    envelope = contract.envelope(contract.RECORDING_EVENT, PRODUCER, summary.tenant_id, event)
    await outbox.enqueue(conn, topic, envelope)


async def publish_objects_deleted(
    conn: asyncpg.Connection, topic: str, tenant_id: str, interaction_id: str, keys: list[str]
) -> None:
    event = events_pb.RecordingEvent(
        interaction_id=interaction_id, objects_deleted=events_pb.ObjectsDeleted(keys=keys)
    )
    envelope = contract.envelope(contract.RECORDING_EVENT, PRODUCER, tenant_id, event)
    await outbox.enqueue(conn, topic, envelope)


async def publish_root(
    conn: asyncpg.Connection, topic: str, tenant_id: str, day: date, root: bytes, records: int
) -> None:
    event = events_pb.RecordingEvent(
        daily_root=events_pb.DailyRoot(day=day.isoformat(), root_sha256=root.hex(), records=records)
    )
    envelope = contract.envelope(contract.RECORDING_EVENT, PRODUCER, tenant_id, event)
    await outbox.enqueue(conn, topic, envelope)


class Recorder:
    """The consumer handler: adds each event to its interaction's record, once."""

    def __init__(
        self,
        repo: Repository,
        recording_topic: str,
        default_retention: timedelta,
        words: Segmenter,
    ) -> None:
        self._repo = repo
        self._topic = recording_topic
        self._retention = default_retention
        self._words = words

    def handlers(self) -> contract.Handlers:
        """Every event of the consumed topics, in the order of `domain.CONSUMED`."""
        on = contract.Handlers(PRODUCER)
        for topic in domain.CONSUMED:
            on.on_topic(topic, self.record)
        return on

    async def record(self, conn: asyncpg.Connection, envelope: Envelope, payload: Message) -> None:
        event = domain.decode(envelope, datetime.now(UTC), payload)
        if event is None:
            # Agent presence and anything without an interaction or a tenant has no record.
            log.debug("event not recorded", type=envelope.type, event_id=envelope.event_id)
            return
        tenant_id = envelope.tenant_id
        summary = await self._repo.lock_or_create(
            conn, tenant_id, event.interaction_id, event.occur_time
        )
        # The inbox already drops redeliveries; this also holds if an event is republished
        # under the same id by a producer's outbox replay.
        head = await self._repo.insert_entry(conn, tenant_id, event)
        if head is None:
            return
        summary.head_sha256 = head  # saved with the rest of the summary below
        domain.fold(summary, event, self._retention)
        items = domain.media_items(event)
        for item in items:
            await self._repo.upsert_media(conn, tenant_id, event.interaction_id, item)
        if items:
            summary.media_count = await self._repo.count_media(
                conn, tenant_id, event.interaction_id
            )
        text = domain.searchable_text(event)
        words = document_text(await self._words.terms(text)) if text else ""
        await self._repo.save_summary(conn, summary, words)
        # Complete means ended: announce it, and again with the new counts for each later event.
        if summary.complete:
            await publish_stored(conn, self._topic, summary)
