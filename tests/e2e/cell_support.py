"""What the end-to-end tests count on the real topics and interactions of a running cell."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition

from lianluo.devstack.cell import Cell
from lianluo.events.v1 import envelope_pb2, routing_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.kafka import behind

S = mpb.InteractionState
FINAL_STATES = {
    S.INTERACTION_STATE_CLOSED,
    S.INTERACTION_STATE_OVERFLOWED,
    S.INTERACTION_STATE_ABANDONED,
}


async def read_topic(cell: Cell, name: str, tenant_id: str) -> list[envelope_pb2.Envelope]:
    """Every event of `tenant_id` on the cell's topic `name`, read to its end."""
    topic = f"{cell.env['LIANLUO_TOPIC_PREFIX']}{name}"
    consumer = AIOKafkaConsumer(bootstrap_servers=cell.env["LIANLUO_KAFKA_BOOTSTRAP_SERVERS"])
    await consumer.start()
    found: list[envelope_pb2.Envelope] = []
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        async with asyncio.timeout(30):
            while await behind(consumer, end):
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for record in records:
                        envelope = envelope_pb2.Envelope.FromString(record.value)
                        if envelope.tenant_id == tenant_id:
                            found.append(envelope)
    finally:
        await consumer.stop()
    return found


async def assigns_per_interaction(cell: Cell, tenant_id: str) -> dict[str, int]:
    """routing.assign decisions per interaction, each event counted once (by event id)."""
    counts: dict[str, int] = defaultdict(int)
    seen: set[str] = set()
    for envelope in await read_topic(cell, "routing.decision", tenant_id):
        if envelope.type == "routing.assign" and envelope.event_id not in seen:
            seen.add(envelope.event_id)
            decision = routing_pb2.RoutingDecision()
            envelope.payload.Unpack(decision)
            counts[decision.interaction_id] += 1
    return dict(counts)


def most_held(interactions: list[mpb.Interaction]) -> dict[str, int]:
    """Per agent, the most interactions it was connected to at once, from the participants."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for it in interactions:
        for p in it.participants:
            if p.role == mpb.PARTICIPANT_ROLE_AGENT and p.HasField("join_time"):
                left = p.leave_time if p.HasField("leave_time") else it.end_time
                spans[p.subject_id].append((p.join_time.ToNanoseconds(), left.ToNanoseconds()))
    most = {}
    for agent_id, intervals in spans.items():
        edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
        load = peak = 0
        for _, step in edges:
            load += step
            peak = max(peak, load)
        most[agent_id] = peak
    return most
