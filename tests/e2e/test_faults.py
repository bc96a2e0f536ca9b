"""Faults survived: a cell of real processes (two replicas of media and of the ACD) carries
chats while its parts fail, and after each fault what users would notice still holds.

A wave of contacts is under way when the fault strikes: every service SIGKILLed in turn and
restarted, the broker frozen for 10 s, Postgres restarted. After each wave:
- every contact ends (closed, overflowed or abandoned);
- none is assigned twice, and no agent holds more chats than its capacity;
- every offer an agent accepted (RespondToOffer said OK) is the one that connected the chat;
- every customer message was stored exactly once;
- no replica exited by itself;
- a new contact is offered to an agent again; the time it took is printed (the bound asserted
  is generous, a check of liveness, not of speed: see docs/operations.md for the figures).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cell_support import FINAL_STATES, assigns_per_interaction, most_held
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, onboard

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack import infra
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import StreamClient
from lianluo.events.v1 import interaction_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
from lianluo.services import LOCAL_SERVICES
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
S = mpb.InteractionState
AGENTS = 6
CAPACITY = 2
WAVE = 14  # contacts per fault
MESSAGES = 2  # each customer's messages
SETTLE_SECONDS = 180  # every contact of a wave ends within this (a liveness bound)
ROUTE_BOUND_SECONDS = 90  # a new contact after a fault is offered within this
# Calls fail while a replica or a dependency is down; the clients here retry like a real one.
RETRIED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAUTHENTICATED,  # a restarted replica that has not read its keys yet
    grpc.StatusCode.NOT_FOUND,  # ... nor the agents and queues
}


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("faults"))
    replicas = {"media": 2, "acd": 2}
    with running_cell(stack, folder, f"faults_{uuid.uuid4().hex[:10]}", replicas) as running:
        yield running


async def retried(call: Callable[[], Awaitable[Any]], seconds: float = 60) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRIED:
                    raise
                await asyncio.sleep(0.3)


@dataclass
class Floor:
    """One tenant's contact center on the cell: agents at their desks, customers arriving."""

    cell: Cell
    tenant_id: str = ""
    key: str = ""
    agents: list[pb.Agent] = field(default_factory=list)
    accepted: dict[str, tuple[str, str]] = field(default_factory=dict)  # offer: agent, chat
    offered_at: dict[str, float] = field(default_factory=dict)  # interaction: first offer
    sent: dict[str, list[str]] = field(default_factory=dict)  # interaction: client ids
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    stopping: bool = False
    _calls: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to one of the service's replicas, in turn."""
        addresses = self.cell.addresses(service)
        return grpc.aio.insecure_channel(addresses[next(self._calls) % len(addresses)])

    async def call(self, service: str, stub_class: Any, method: str, request: Any) -> Any:
        """A unary call to any replica of `service`, retried across replicas while they fail."""

        async def once() -> Any:
            async with self.channel(service) as channel:
                return await getattr(stub_class(channel), method)(
                    request, metadata=self.md, timeout=10
                )

        return await retried(once)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open(self) -> None:
        async with grpc.aio.insecure_channel(self.cell.address("tenants")) as tch:
            tenant, client = await onboard(Client(tch, ADMIN_KEY))
            self.tenant_id, self.key = tenant.id, client.key
            for i in range(AGENTS):
                capacity = pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=CAPACITY)
                self.agents.append(
                    await rpc.AgentServiceStub(tch).CreateAgent(
                        pb.CreateAgentRequest(
                            tenant_id=tenant.id,
                            agent=pb.Agent(
                                name=f"agent{i}", kind=pb.AGENT_KIND_STAFF, capacity=[capacity]
                            ),
                        ),
                        metadata=self.md,
                    )
                )
            await rpc.QueueServiceStub(tch).CreateQueue(
                pb.CreateQueueRequest(
                    tenant_id=tenant.id,
                    queue=pb.Queue(
                        name="faults",
                        priority=5,
                        max_wait_seconds=SETTLE_SECONDS - 30,
                        media=common.MEDIA_TYPE_CHAT,
                        service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
                        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
                    ),
                ),
                metadata=self.md,
            )
        for agent in self.agents:
            await self.call(
                "acd",
                acd_rpc.AcdServiceStub,
                "SetPresence",
                acd_pb2.SetPresenceRequest(
                    tenant_id=self.tenant_id, agent_id=agent.id, presence=acd_pb2.PRESENCE_AVAILABLE
                ),
            )
            self.spawn(self.desk(agent))

    async def desk(self, agent: pb.Agent) -> None:
        """An agent's desk stream, joined again on another replica whenever it breaks."""
        join = mpb.Join(
            tenant_id=self.tenant_id, role=mpb.PARTICIPANT_ROLE_AGENT, subject_id=agent.id
        )

        def on_frame(frame: mpb.ServerFrame) -> None:
            if frame.WhichOneof("frame") == "offer":
                offer = frame.offer
                self.offered_at.setdefault(offer.interaction_id, time.monotonic())
                self.spawn(self.work(agent, offer))

        while not self.stopping:
            stream = None
            try:
                async with self.channel("media") as channel:
                    stream = await StreamClient.connect(channel, self.key, join, on_frame, 10)
                    while not stream.done and not self.stopping:
                        await asyncio.sleep(0.2)
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError):
                pass
            finally:
                if stream is not None:
                    await stream.close()
            await asyncio.sleep(0.5)

    async def work(self, agent: pb.Agent, offer: acd_pb2.Offer) -> None:
        """Accept, wait for the chat to connect, reply, end it."""
        try:
            await self.call(
                "acd",
                acd_rpc.AcdServiceStub,
                "RespondToOffer",
                acd_pb2.RespondToOfferRequest(
                    tenant_id=self.tenant_id, offer_id=offer.id, agent_id=agent.id, accept=True
                ),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return  # the offer ended first (the customer left, or it was withdrawn)
            raise
        self.accepted[offer.id] = (agent.id, offer.interaction_id)
        get = mpb.GetInteractionRequest(
            tenant_id=self.tenant_id, interaction_id=offer.interaction_id
        )
        async with asyncio.timeout(SETTLE_SECONDS):
            while True:
                it = await self.call("media", media_rpc.MediaServiceStub, "GetInteraction", get)
                if it.state in FINAL_STATES:
                    return
                if it.state == S.INTERACTION_STATE_CONNECTED:
                    break
                await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)  # the conversation
        await self.call(
            "media",
            media_rpc.MediaServiceStub,
            "End",
            mpb.EndRequest(
                tenant_id=self.tenant_id,
                interaction_id=offer.interaction_id,
                resolution=mpb.Resolution(code="resolved"),
            ),
        )

    async def contact(self, label: str) -> str:
        """A customer starts a chat in the queue and writes MESSAGES messages."""
        started = await self.call(
            "media",
            media_rpc.MediaServiceStub,
            "StartInteraction",
            mpb.StartInteractionRequest(
                tenant_id=self.tenant_id,
                request_id=label,  # a retry on another replica is the same contact
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                queue="faults",
                customer=mpb.Customer(id=f"cust-{label}"),
            ),
        )
        iid = started.interaction.id
        self.sent[iid] = []
        for n in range(MESSAGES):
            client_id = f"{label}-m{n}"
            try:
                await self.call(
                    "media",
                    media_rpc.MediaServiceStub,
                    "Send",
                    mpb.SendRequest(
                        tenant_id=self.tenant_id,
                        interaction_id=iid,
                        participant_id=started.customer_participant_id,
                        client_message_id=client_id,
                        content=mpb.MessageContent(text=f"message {n} of {label}"),
                    ),
                )
                self.sent[iid].append(client_id)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise  # only an interaction that already ended may refuse a message
            await asyncio.sleep(0.3)
        return str(iid)

    async def finals(self, ids: list[str]) -> list[mpb.Interaction]:
        """Wait until every interaction has ended; their final states."""
        final: dict[str, mpb.Interaction] = {}
        async with asyncio.timeout(SETTLE_SECONDS):
            while len(final) < len(ids):
                for iid in ids:
                    if iid not in final:
                        it = await self.call(
                            "media",
                            media_rpc.MediaServiceStub,
                            "GetInteraction",
                            mpb.GetInteractionRequest(tenant_id=self.tenant_id, interaction_id=iid),
                        )
                        if it.state in FINAL_STATES:
                            final[iid] = it
                await asyncio.sleep(0.5)
        return list(final.values())

    async def stored_messages(self, iid: str) -> list[str]:
        """The client ids of the customer messages in the interaction's recording."""
        request = rpb.GetRecordingRequest(tenant_id=self.tenant_id, interaction_id=iid)
        async with asyncio.timeout(60):
            while True:
                recording = await self.call(
                    "recording", recording_rpc.RecordingServiceStub, "GetRecording", request
                )
                types = [e.event.type for e in recording.entries]
                if "interaction.ended" in types:
                    break
                await asyncio.sleep(0.5)
        ids = []
        for entry in recording.entries:
            if entry.event.type == "interaction.message":
                event = interaction_pb2.InteractionEvent()
                entry.event.payload.Unpack(event)
                if event.message.client_message_id:
                    ids.append(event.message.client_message_id)
        return ids

    async def close(self) -> None:
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture(scope="module")
async def floor(cell: Cell) -> AsyncIterator[Floor]:
    opened = Floor(cell)
    await opened.open()
    yield opened
    await opened.close()


async def wave(floor: Floor, fault: Callable[[], Awaitable[None]], name: str) -> None:
    """Contacts arrive, the fault strikes among them, and then everything is checked."""
    restarted_before = {id(r): r.process.pid for r in floor.cell.running}
    ids: list[str] = []

    async def arrive() -> None:
        for n in range(WAVE):
            floor.spawn(_collect(ids, floor.contact(f"{name}-{n}-{uuid.uuid4().hex[:4]}")))
            await asyncio.sleep(0.4)

    arrivals = asyncio.create_task(arrive())
    await asyncio.sleep(2.0)
    await fault()
    # Recovery: a contact that starts the moment the fault is over, until an agent is offered it.
    recovered_at = time.monotonic()
    probe = asyncio.create_task(floor.contact(f"{name}-probe-{uuid.uuid4().hex[:4]}"))
    await arrivals
    async with asyncio.timeout(SETTLE_SECONDS):
        while len(ids) < WAVE:
            await asyncio.sleep(0.2)
    finals = await floor.finals(ids)

    states = {S.Name(it.state) for it in finals}
    assert states <= {S.Name(s) for s in FINAL_STATES}, states
    assigns = await assigns_per_interaction(floor.cell, floor.tenant_id)
    twice = {i: n for i, n in assigns.items() if n > 1}
    assert not twice, f"{name}: interactions assigned more than once: {twice}"
    over = {a: n for a, n in most_held(finals).items() if n > CAPACITY}
    assert not over, f"{name}: agents over capacity: {over}"
    by_id = {it.id: it for it in finals}
    for offer_id, (agent_id, iid) in list(floor.accepted.items()):
        it = by_id.get(iid)
        if it is None or it.state != S.INTERACTION_STATE_CLOSED:
            continue
        people = {p.subject_id for p in it.participants if p.role == mpb.PARTICIPANT_ROLE_AGENT}
        assert people == {agent_id}, f"{name}: offer {offer_id} accepted by {agent_id}: {people}"
    for iid in ids:
        stored = await floor.stored_messages(iid)
        for client_id in floor.sent[iid]:
            assert stored.count(client_id) == 1, (
                f"{name}: {client_id} stored {stored.count(client_id)}x"
            )
    exited = [
        r.service
        for r in floor.cell.running
        if r.process.poll() is not None and restarted_before.get(id(r)) == r.process.pid
    ]
    assert not exited, f"{name}: replicas exited by themselves: {exited}"

    async with asyncio.timeout(ROUTE_BOUND_SECONDS):
        probe_id = await probe
        while probe_id not in floor.offered_at:
            await asyncio.sleep(0.1)
    print(
        f"\n{name}: {WAVE} contacts ended {sorted(states)}; a contact started as the fault "
        f"ended was offered {floor.offered_at[probe_id] - recovered_at:.1f}s later"
    )
    await floor.finals([probe_id])


async def _collect(ids: list[str], contact: Awaitable[str]) -> None:
    ids.append(await contact)


async def test_every_service_killed_in_turn_and_restarted(cell: Cell, floor: Floor) -> None:
    async def kill_each() -> None:
        for service in LOCAL_SERVICES:
            replica = cell.kill(service, 0)
            await asyncio.sleep(1.0)
            await cell.restart(replica)

    await wave(floor, kill_each, "kill")


async def test_the_broker_frozen_for_ten_seconds(cell: Cell, floor: Floor, stack: Stack) -> None:
    broker = next(s for s in infra.status(stack.config) if s.name == "kafka")
    assert broker.pid

    stopped: dict[str, int | None] = {}

    async def freeze() -> None:
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(3)
            # A replica told to stop while its consumers cannot reach the broker still stops:
            # nothing stuck on a dependency holds up SIGTERM past the grace period (5 s here).
            # Not an ACD replica: on the development broker, a group whose leader leaves during
            # a freeze never forms again (docs/operations.md, "Known issue").
            leaving = [cell.replica("notification", 0)]
            for replica in leaving:
                replica.process.terminate()
            for replica in leaving:
                try:
                    code = await asyncio.to_thread(replica.process.wait, 60)
                except subprocess.TimeoutExpired:
                    code = None
                stopped[replica.service] = code
            await asyncio.sleep(max(0.0, 7 - 3))
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        # It stays stopped: the cell carries on without notifications.
        for replica in leaving:
            if replica.process.poll() is None:
                replica.process.kill()
            cell.running.remove(replica)

    await wave(floor, freeze, "freeze")
    assert stopped == {"notification": 0}, f"exit code after SIGTERM: {stopped}"


async def test_a_postgres_restart(cell: Cell, floor: Floor, stack: Stack) -> None:
    async def restart() -> None:
        await asyncio.to_thread(infra.down, stack.config, ["postgres"])
        await asyncio.sleep(2)
        # Started from another process: forking from this one, whose gRPC threads are busy,
        # is not safe.
        up = await asyncio.create_subprocess_exec(sys.executable, "-m", "lianluo.cli", "dev", "up")
        async with asyncio.timeout(60):
            assert await up.wait() == 0

    await wave(floor, restart, "postgres")
