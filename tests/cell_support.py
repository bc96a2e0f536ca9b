"""What the end-to-end tests count on the real topics and interactions of a running cell, and
an agent at work in it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from conftest import ADMIN_KEY
from factories import Client, onboard, queue

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, StreamClient
from lianluo.events.v1 import envelope_pb2, routing_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.kafka import behind
from lianluo.tenants.v1 import tenants_pb2 as tpb

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


class AgentAtWork:
    """A signed-in agent: available, their desk open, answering offers as they come."""

    def __init__(self, cell: Cell, session: Session, tenant_id: str) -> None:
        self.cell, self.session, self.tenant_id = cell, session, tenant_id
        self.media = grpc.aio.insecure_channel(cell.address("media"))
        self.acd = acd_rpc.AcdServiceStub(grpc.aio.insecure_channel(cell.address("acd")))
        self.desk: StreamClient | None = None
        self.answered: set[str] = set()
        # The offers accepted, by interaction: what the agent was told of each contact.
        self.offers: dict[str, apb.Offer] = {}

    async def start(self) -> AgentAtWork:
        agent_id = self.session.user.agent_id
        await self.acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=self.tenant_id, agent_id=agent_id, presence=apb.PRESENCE_AVAILABLE
            ),
            metadata=await self.session.metadata(),
        )
        self.desk = await StreamClient.connect(
            self.media,
            await self.session.token(),
            mpb.Join(
                tenant_id=self.tenant_id, role=mpb.PARTICIPANT_ROLE_AGENT, subject_id=agent_id
            ),
        )
        return self

    async def answer(self, interaction_id: str = "") -> StreamClient:
        """Accept the next offer not answered yet (of `interaction_id`, when given) and join
        its interaction."""
        assert self.desk is not None
        frame = await self.desk.wait_for(
            lambda f: (
                f.WhichOneof("frame") == "offer"
                and f.offer.id not in self.answered
                and (not interaction_id or f.offer.interaction_id == interaction_id)
            ),
            30,
        )
        offer = frame.offer
        self.answered.add(offer.id)
        self.offers[offer.interaction_id] = offer
        await self.acd.RespondToOffer(
            apb.RespondToOfferRequest(
                tenant_id=self.tenant_id,
                offer_id=offer.id,
                agent_id=offer.agent_id,
                accept=True,
            ),
            metadata=await self.session.metadata(),
        )
        return await StreamClient.connect(
            self.media,
            await self.session.token(),
            mpb.Join(
                tenant_id=self.tenant_id,
                interaction_id=offer.interaction_id,
                role=mpb.PARTICIPANT_ROLE_AGENT,
                subject_id=offer.agent_id,
            ),
        )

    async def stop(self) -> None:
        if self.desk is not None:
            await self.desk.close()
        await self.media.close()


async def retrying(call: Any, seconds: float = 30) -> Any:
    """`call()` until the cell's services know what a test just made: the tenant, its key,
    its queue (NOT_FOUND, UNAUTHENTICATED or INVALID_ARGUMENT until then)."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if error.code() not in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise
                await asyncio.sleep(0.3)


async def tenant_with_queue(tenants: grpc.aio.Channel) -> tuple[tpb.Tenant, Client]:
    """A new tenant with the queue "cards", and a client holding the tenant's key."""
    tenant, client = await onboard(Client(tenants, ADMIN_KEY))
    await client.queues.CreateQueue(
        tpb.CreateQueueRequest(tenant_id=tenant.id, queue=queue()), metadata=client.md
    )
    return tenant, client
