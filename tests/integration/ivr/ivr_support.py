"""The IVR running in the test process, a tenant configured through the tenants API, and the
real topics: events published to `interaction.event`, outputs read back from `ivr.output`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from conftest import ADMIN_KEY, Served, Stack
from factories import Client, onboard, queue

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import envelope_pb2, interaction_pb2
from lianluo.events.v1 import ivr_pb2 as ivr_events
from lianluo.media.v1 import media_pb2 as media
from lianluo.runtime.kafka import Envelope, new_envelope
from lianluo.runtime.service import Service
from lianluo.services.ivr.service import latest_flow
from lianluo.tenants.v1 import tenants_pb2 as pb

FLOW_NAME = "card-services"
WAIT = 30.0  # the first assignment of a new consumer group takes a few seconds


def card_flow(menu_timeout: int = 0) -> pb.Flow:
    """A menu by digit or words, the card's last four digits, then the cards queue."""
    return pb.Flow(
        name=FLOW_NAME,
        entry_node="welcome",
        nodes=[
            pb.FlowNode(id="welcome", prompt=pb.PromptNode(text="Welcome to Acme.", next="menu")),
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(
                    prompt="Lost card, or a payment?",
                    choices=[
                        pb.MenuChoice(
                            digit="1", keywords=["lost", "stolen"], label="Lost card", next="last4"
                        ),
                        pb.MenuChoice(
                            digit="2", keywords=["payment"], label="Payments", next="bye"
                        ),
                    ],
                    timeout_seconds=menu_timeout,
                    max_retries=1,
                    no_match_next="bye",
                ),
            ),
            pb.FlowNode(
                id="last4",
                collect=pb.CollectNode(
                    prompt="The last four digits of your card, please.",
                    variable="card_last4",
                    pattern=r"\d{4}",
                    max_retries=1,
                    next="to-queue",
                    failure_next="to-queue",
                ),
            ),
            pb.FlowNode(
                id="to-queue",
                route_to_queue=pb.RouteToQueueNode(
                    queue="cards", priority=7, skills=[common.SkillLevel(skill="cards", level=5)]
                ),
            ),
            pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye.")),
        ],
    )


@dataclass
class Tenant:
    id: str
    client: Client


async def start_ivr(stack: Stack) -> tuple[Service, asyncio.Task[None]]:
    from lianluo.services.ivr.app import build
    from lianluo.services.ivr.settings import IvrSettings

    env = stack.env(LIANLUO_GRPC_PORT="0", LIANLUO_TIMEOUT_POLL_SECONDS="0.2")
    settings = IvrSettings(**{k.removeprefix("LIANLUO_").lower(): v for k, v in env.items()})
    service = await build(settings)
    task = asyncio.create_task(service.serve())
    while not service.grpc.port:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return service, task


@pytest.fixture(scope="module")
async def ivr(stack: Stack) -> AsyncIterator[Service]:
    async with asyncio.timeout(WAIT):
        service, task = await start_ivr(stack)
    yield service
    service.request_stop()
    async with asyncio.timeout(WAIT):
        await task


@pytest.fixture(scope="module")
async def admin(tenants_service: Served) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(tenants_service.address) as channel:
        yield Client(channel, ADMIN_KEY)


async def configured_tenant(admin: Client, ivr: Service, menu_timeout: int = 0) -> Tenant:
    """A new tenant with the cards queue and the card flow, once the IVR has seen both."""
    t, client = await onboard(admin)
    await client.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=t.id, queue=queue("cards")), metadata=client.md
    )
    await client.flows.PutFlow(
        pb.PutFlowRequest(tenant_id=t.id, flow=card_flow(menu_timeout)), metadata=client.md
    )
    view = ivr.config
    assert view is not None
    async with asyncio.timeout(WAIT):
        await view.wait_until(lambda: latest_flow(view, t.id, FLOW_NAME) is not None)
    return Tenant(t.id, client)


# ---------------------------------------------------------------------- input events


def created(
    interaction_id: str, flow: str = FLOW_NAME, queue_name: str = ""
) -> interaction_pb2.InteractionEvent:
    interaction = media.Interaction(
        id=interaction_id,
        channel=common.CHANNEL_WEB,
        state=media.INTERACTION_STATE_IN_IVR,
        customer=media.Customer(
            id="cust-42", display_name="Wang Fang", language="zh-CN", attributes={"value": "high"}
        ),
        media=[media.MediaLeg(id="leg-1", media=common.MEDIA_TYPE_CHAT)],
    )
    if queue_name:
        interaction.entry_queue = queue_name
    else:
        interaction.entry_flow = flow
    return interaction_pb2.InteractionEvent(
        interaction_id=interaction_id, sequence=1, created=interaction
    )


def message(
    interaction_id: str,
    text: str,
    sequence: int,
    role: media.ParticipantRole.ValueType = media.PARTICIPANT_ROLE_CUSTOMER,
) -> interaction_pb2.InteractionEvent:
    return interaction_pb2.InteractionEvent(
        interaction_id=interaction_id,
        sequence=sequence,
        message=media.Message(
            id=str(uuid.uuid4()),
            interaction_id=interaction_id,
            sequence=sequence,
            sender_participant_id="p-1",
            sender_role=role,
            content=media.MessageContent(text=text),
        ),
    )


def ended(interaction_id: str, sequence: int) -> interaction_pb2.InteractionEvent:
    return interaction_pb2.InteractionEvent(
        interaction_id=interaction_id,
        sequence=sequence,
        ended=media.InteractionEnd(
            final_state=media.INTERACTION_STATE_ABANDONED,
            resolution=media.Resolution(code="customer_left"),
        ),
    )


class Publisher:
    """Publishes interaction events as the media service would (key: the tenant id)."""

    def __init__(self, stack: Stack) -> None:
        self._topic = f"{stack.topic_prefix}interaction.event"
        self._producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, tenant_id: str, event: interaction_pb2.InteractionEvent) -> Envelope:
        case = event.WhichOneof("event")
        envelope = new_envelope(f"interaction.{case}", tenant_id, event, "media")
        await self.resend(envelope)
        return envelope

    async def resend(self, envelope: Envelope) -> None:
        await self._producer.send_and_wait(
            self._topic, envelope.SerializeToString(), key=envelope.tenant_id.encode()
        )


# ---------------------------------------------------------------------- output topics


@dataclass(frozen=True)
class Output:
    type: str
    tenant_id: str
    interaction_id: str
    ivr: ivr_events.IvrOutput | None


class Tap:
    """Everything the IVR publishes from now on (on `ivr.output`)."""

    def __init__(self, stack: Stack) -> None:
        self._topics = [f"{stack.topic_prefix}ivr.output"]
        self._consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka, group_id=None)
        self.seen: list[Output] = []
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or [])
        ]
        assert partitions, "the IVR creates its topics at start-up"
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, before anything is published
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        async with asyncio.timeout(WAIT):
            await self._consumer.stop()

    async def _collect(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            found = []
            for records in batches.values():
                for record in records:
                    envelope = envelope_pb2.Envelope.FromString(record.value or b"")
                    found.append(_output(envelope))
            if found:
                async with self._arrived:
                    self.seen.extend(found)
                    self._arrived.notify_all()

    def of(self, interaction_id: str) -> list[Output]:
        return [o for o in self.seen if o.interaction_id == interaction_id]

    async def wait_for(
        self, interaction_id: str, predicate: Callable[[list[Output]], bool], seconds: float = WAIT
    ) -> list[Output]:
        """The interaction's outputs once `predicate` holds for them."""
        async with asyncio.timeout(seconds), self._arrived:
            await self._arrived.wait_for(lambda: predicate(self.of(interaction_id)))
        return self.of(interaction_id)

    async def wait_count(self, interaction_id: str, count: int, **kw: Any) -> list[Output]:
        return await self.wait_for(interaction_id, lambda found: len(found) >= count, **kw)


def _output(envelope: Envelope) -> Output:
    output = ivr_events.IvrOutput()
    envelope.payload.Unpack(output)
    return Output(envelope.type, envelope.tenant_id, output.interaction_id, output)


def prompts(found: list[Output]) -> list[str]:
    return [o.ivr.prompt.text for o in found if o.ivr is not None and o.ivr.HasField("prompt")]
