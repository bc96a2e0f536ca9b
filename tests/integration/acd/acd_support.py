"""Helpers for the ACD's integration tests: the service in-process, its inputs and outputs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from conftest import ADMIN_KEY, Stack
from factories import Client, agent, onboard, queue, unique
from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import envelope_pb2, interaction_pb2, ivr_pb2, routing_pb2
from lianluo.media.v1 import media_pb2
from lianluo.runtime.kafka import new_envelope
from lianluo.runtime.service import Service
from lianluo.services.acd.app import build
from lianluo.services.acd.settings import AcdSettings
from lianluo.tenants.v1 import tenants_pb2 as pb

OFFER_TIMEOUT_SECONDS = 2.0
WAIT = 20  # seconds any single expectation may take


def acd_settings(stack: Stack, offer_timeout: float = OFFER_TIMEOUT_SECONDS) -> AcdSettings:
    env = stack.env(
        LIANLUO_GRPC_PORT="0",
        LIANLUO_OFFER_TIMEOUT_SECONDS=str(offer_timeout),
        LIANLUO_ANSWER_GRACE_SECONDS="1",
    )
    return AcdSettings(**{k.removeprefix("LIANLUO_").lower(): v for k, v in env.items()})


async def start_acd(
    stack: Stack, offer_timeout: float = OFFER_TIMEOUT_SECONDS
) -> tuple[Service, asyncio.Task[None]]:
    """Build and serve the ACD; return once it serves and its consumer holds partitions."""
    # build() joins the consumer group, which this broker sometimes takes a while to settle.
    async with asyncio.timeout(60):
        service = await build(acd_settings(stack, offer_timeout))
    task = asyncio.create_task(service.serve())
    async with asyncio.timeout(30):
        while not service.grpc.port:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        await service.consumers[0].wait_assigned()
    return service, task


@dataclass
class Decisions:
    """Every record on routing.decision (and agent.event) since the tests started."""

    stack: Stack
    seen: list[envelope_pb2.Envelope] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> None:
        topics = [f"{self.stack.topic_prefix}{t}" for t in ("routing.decision", "agent.event")]
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.kafka, group_id=None)
        await self._consumer.start()
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self._consumer.partitions_for_topic(t) or [])
        ]
        assert partitions, "the ACD creates its topics at start"
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self.seen.append(envelope_pb2.Envelope.FromString(record.value))
            if batches:
                async with self._changed:
                    self._changed.notify_all()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def of(
        self, tenant_id: str, event_type: str | None = None
    ) -> list[routing_pb2.RoutingDecision]:
        out = []
        for e in self.seen:
            if (
                e.tenant_id == tenant_id
                and e.type.startswith("routing.")
                and (event_type is None or e.type == event_type)
            ):
                decision = routing_pb2.RoutingDecision()
                e.payload.Unpack(decision)
                out.append(decision)
        return out

    def types(self, tenant_id: str, interaction_id: str) -> list[str]:
        return [
            e.type
            for e in self.seen
            if e.tenant_id == tenant_id
            and e.type.startswith("routing.")
            and _interaction(e) == interaction_id
        ]

    async def wait(
        self, tenant_id: str, event_type: str, interaction_id: str, nth: int = 1
    ) -> routing_pb2.RoutingDecision:
        """The nth decision of `event_type` for an interaction, waiting for it if needed."""

        def found() -> list[routing_pb2.RoutingDecision]:
            return [d for d in self.of(tenant_id, event_type) if d.interaction_id == interaction_id]

        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= nth)
        return found()[nth - 1]

    def agent_events(self, tenant_id: str, event_type: str) -> list[envelope_pb2.Envelope]:
        return [e for e in self.seen if e.tenant_id == tenant_id and e.type == event_type]


def _interaction(e: envelope_pb2.Envelope) -> str:
    decision = routing_pb2.RoutingDecision()
    e.payload.Unpack(decision)
    return decision.interaction_id


@dataclass
class Tenant:
    """A tenant configured through the tenants API, as the ACD sees it."""

    id: str
    client: Client
    acd: acd_rpc.AcdServiceStub
    agents: dict[str, pb.Agent]
    queues: dict[str, pb.Queue]

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return self.client.md

    async def set_presence(
        self,
        agent_name: str,
        presence: int = acd.PRESENCE_AVAILABLE,
        capacity: list[pb.MediaCapacity] | None = None,
    ) -> acd.AgentPresence:
        request = acd.SetPresenceRequest(
            tenant_id=self.id,
            agent_id=self.agents[agent_name].id,
            presence=presence,  # type: ignore[arg-type]
            capacity=capacity or [],
        )
        return await self.acd.SetPresence(request, metadata=self.md)

    async def respond(self, offer: acd.Offer, accept: bool, reason: str = "") -> acd.Offer:
        request = acd.RespondToOfferRequest(
            tenant_id=self.id,
            offer_id=offer.id,
            agent_id=offer.agent_id,
            accept=accept,
            decline_reason=reason,
        )
        return await self.acd.RespondToOffer(request, metadata=self.md)

    async def stats(self, queue_name: str = "cards") -> acd.QueueFigures:
        response = await self.acd.QueueStats(
            acd.QueueStatsRequest(tenant_id=self.id, queues=[queue_name]), metadata=self.md
        )
        return response.queues[0]

    async def until_stats(self, check: Callable[[acd.QueueFigures], bool]) -> acd.QueueFigures:
        """Poll QueueStats until the owner has applied what the test did."""
        async with asyncio.timeout(WAIT):
            while not check(figures := await self.stats()):
                await asyncio.sleep(0.1)
        return figures

    def agent_name(self, agent_id: str) -> str:
        return next(name for name, a in self.agents.items() if a.id == agent_id)


async def configure_tenant(
    channel: grpc.aio.Channel,
    acd_channel: grpc.aio.Channel,
    service: Service,
    agents: dict[str, dict[str, object]],
    **queue_overrides: object,
) -> Tenant:
    """A new tenant with one queue "cards" and the given agents; wait until the ACD has them."""
    admin = Client(channel, ADMIN_KEY)
    t, client = await onboard(admin)
    q = await client.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=t.id, queue=queue("cards", **queue_overrides)),
        metadata=client.md,
    )
    created = {}
    for name, overrides in agents.items():
        a = agent(unique(name))
        for key, value in overrides.items():
            a.ClearField(key)  # type: ignore[arg-type]
            getattr(a, key).extend(value)
        created[name] = await client.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=a), metadata=client.md
        )
    view = service.config
    assert view is not None
    async with asyncio.timeout(WAIT):
        await view.wait_until(
            lambda: (
                view.get(t.id, "queue", q.id) is not None
                and all(view.get(t.id, "agent", a.id) for a in created.values())
            )
        )
    tenant = Tenant(t.id, client, acd_rpc.AcdServiceStub(acd_channel), created, {"cards": q})
    # The tenant's key reaches the ACD through tenant.config too.
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await tenant.stats()
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
                await asyncio.sleep(0.1)
    return tenant


class Requests:
    """Publishes what the IVR and the media service would: routing requests and ends."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def _send(self, topic: str, event_type: str, tenant_id: str, payload: Message) -> None:
        envelope = new_envelope(event_type, tenant_id, payload, "test")
        await self.producer.send_and_wait(
            f"{self.stack.topic_prefix}{topic}",
            value=envelope.SerializeToString(),
            key=tenant_id.encode(),
        )

    async def route(
        self,
        tenant_id: str,
        queue_name: str = "cards",
        transferred_by: str = "",
        **requirements: object,
    ) -> str:
        interaction_id = unique("interaction")
        request = ivr_pb2.RoutingRequest(
            interaction_id=interaction_id,
            transferred_by=transferred_by,
            requirements=common.RoutingRequirements(queue=queue_name, **requirements),  # type: ignore[arg-type]
        )
        await self._send("routing.request", "routing.requested", tenant_id, request)
        return interaction_id

    async def end(self, tenant_id: str, interaction_id: str) -> None:
        event = interaction_pb2.InteractionEvent(
            interaction_id=interaction_id,
            ended=media_pb2.InteractionEnd(final_state=media_pb2.INTERACTION_STATE_CLOSED),
        )
        await self._send("interaction.event", "interaction.ended", tenant_id, event)


class Acd:
    """The running ACD, with channels to it and to the tenants service."""

    def __init__(
        self, service: Service, channel: grpc.aio.Channel, tenants: grpc.aio.Channel
    ) -> None:
        self.service = service
        self.channel = channel
        self.tenants = tenants

    async def tenant(self, agents: dict[str, dict[str, object]], **queue: object) -> Tenant:
        return await configure_tenant(self.tenants, self.channel, self.service, agents, **queue)


@contextlib.asynccontextmanager
async def running_acd(
    stack: Stack, tenants_address: str
) -> AsyncIterator[tuple[Acd, Decisions, Requests]]:
    """The ACD serving in this process, a reader of its outputs and a writer of its inputs."""
    service, task = await start_acd(stack)
    decisions, requests = Decisions(stack), Requests(stack)
    await decisions.start()
    await requests.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel,
            grpc.aio.insecure_channel(tenants_address) as tenants,
        ):
            yield Acd(service, channel, tenants), decisions, requests
    finally:
        await requests.stop()
        await decisions.stop()
        service.request_stop()
        await task
