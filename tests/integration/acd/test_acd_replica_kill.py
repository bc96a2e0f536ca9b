"""Two ACD replicas as real processes (`lianluo serve acd`). The one that owns the tenant's
partition is SIGKILLed while routing is under way: contacts wait, offers are pending, answers
are in flight. The other replica takes the partition over, rebuilds from Postgres and replays.
Counted on routing.decision and agent.event across both replicas: no agent ever holds more
interactions than its capacity, no interaction is assigned twice, and every contact is still
routed (assigned, or overflowed by its queue)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from acd_support import Decisions, Requests
from conftest import ADMIN_KEY, Served, Stack
from factories import Client, agent, onboard, queue, unique

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import wait_serving
from lianluo.events.v1 import agent_pb2, envelope_pb2, routing_pb2
from lianluo.runtime.kafka import partition_for
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration

AGENTS = 6
CAPACITY = 2  # chats at once per agent: 12 places for 40 contacts, so contacts wait
CONTACTS = 40
ARRIVAL_SECONDS = 6.0  # the contacts arrive spread over this long
THINK = (0.3, 1.2)  # seconds an agent takes to accept an offer
HANDLE = (1.0, 2.5)  # seconds an assigned chat lasts before the customer ends it
# Far beyond the test's own bound: a contact must be routed, not just overflow by waiting.
MAX_WAIT = 240
SETTLE = 75  # seconds for every contact to get its final decision, from the first request
ASSIGN = "routing.assign"
OVERFLOW = "routing.overflow"
OFFER = "routing.offer"
WRAP_UP_DONE = "agent.wrap_up_done"
CALL = 5.0  # seconds a gRPC call may take
BACKLOG = 400  # agent events queued ahead of a late accept while the owner is frozen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AcdProcess:
    """`lianluo serve acd` as its own process, with its log and a channel to it."""

    def __init__(self, name: str, stack: Stack, log_dir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log = log_dir / f"{name}.log"
        # The default offer timeout (20 s), shorter than a takeover (the dead member's session
        # timeout, then a rejoin): an offer accepted just before the kill must still be honoured.
        env = stack.env(LIANLUO_GRPC_PORT=str(self.port))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lianluo.cli", "serve", "acd"],
                env={**os.environ, **env},
                stderr=log,
                stdout=subprocess.DEVNULL,
            )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = acd_rpc.AcdServiceStub(self.channel)

    def assignments(self) -> list[set[int]]:
        """The routing partitions this replica said it was given, oldest first. Only gains are
        logged: a replica that loses some partitions to a newcomer logs nothing."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "routing partitions assigned":
                    found.append(set(entry["partitions"]))
        return found

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    async def close(self) -> None:
        await self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
async def replicas(stack: Stack, tmp_path: Path) -> AsyncIterator[list[AcdProcess]]:
    """Two ACD replicas, serving; the processes are stopped (or already dead) at the end."""
    started = [AcdProcess(name, stack, tmp_path) for name in ("acd-a", "acd-b")]
    try:
        async with asyncio.timeout(60):
            for r in started:
                await wait_serving(r.port, 60)
        yield started
    finally:
        for r in started:
            await r.close()
        for r in started:
            print(f"--- {r.name} log (tail) ---\n{r.log.read_text(errors='replace')[-3000:]}")


def owner(partition: int, count: int, a: AcdProcess, b: AcdProcess) -> AcdProcess | None:
    """Which of two replicas in one group owns `partition`, from what they logged; None while
    the group has not settled. A replica that had every partition before the other joined
    logged nothing when it gave half away, so its full set beside a partial one is stale."""
    seen_a, seen_b = a.assignments(), b.assignments()
    if not seen_a or not seen_b:
        return None
    last_a, last_b = seen_a[-1], seen_b[-1]
    everything = set(range(count))
    if last_a.isdisjoint(last_b) and last_a | last_b == everything:
        return a if partition in last_a else b
    if last_a == everything and last_b < everything:
        return b if partition in last_b else a
    if last_b == everything and last_a < everything:
        return a if partition in last_a else b
    return None


async def _retry(call: Callable[[], Awaitable[object]], codes: set[grpc.StatusCode]) -> object:
    """Retry while the replica has not yet read the tenant's configuration."""
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in codes:
                raise
            await asyncio.sleep(0.1)


@dataclass
class Tenant:
    id: str
    md: tuple[tuple[str, str], ...]
    agents: list[pb.Agent]

    async def stats(self, stub: acd_rpc.AcdServiceStub) -> acd.QueueFigures:
        response = await stub.QueueStats(
            acd.QueueStatsRequest(tenant_id=self.id, queues=["cards"]),
            metadata=self.md,
            timeout=CALL,
        )
        figures: acd.QueueFigures = response.queues[0]
        return figures


async def configure(channel: grpc.aio.Channel, replicas: list[AcdProcess]) -> Tenant:
    """A tenant with AGENTS chat agents of CAPACITY and the queue "cards", known to both
    replicas, every agent available as the owner sees it."""
    t, client = await onboard(Client(channel, ADMIN_KEY))
    agents = []
    for i in range(AGENTS):
        a = agent(unique(f"agent{i}"))
        a.ClearField("capacity")
        a.capacity.append(pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=CAPACITY))
        agents.append(
            await client.agents.CreateAgent(
                pb.CreateAgentRequest(tenant_id=t.id, agent=a), metadata=client.md
            )
        )
    # Created last: tenant.config keeps a tenant's changes in order, so a replica that knows
    # the queue knows the agents and the key too.
    await client.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=t.id, queue=queue("cards", max_wait_seconds=MAX_WAIT)),
        metadata=client.md,
    )
    tenant = Tenant(t.id, client.md, agents)
    unknown = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND}
    async with asyncio.timeout(30):
        for r in replicas:
            await _retry(functools.partial(tenant.stats, r.stub), unknown)
        for i, a in enumerate(agents):
            request = acd.SetPresenceRequest(
                tenant_id=t.id, agent_id=a.id, presence=acd.PRESENCE_AVAILABLE
            )
            stub = replicas[i % 2].stub
            await stub.SetPresence(request, metadata=client.md, timeout=CALL)
        while (await tenant.stats(replicas[0].stub)).agents_available < AGENTS:
            await asyncio.sleep(0.1)
    return tenant


def _when(e: envelope_pb2.Envelope) -> datetime:
    return e.occur_time.ToDatetime(tzinfo=UTC)


def _decision(e: envelope_pb2.Envelope) -> routing_pb2.RoutingDecision:
    d = routing_pb2.RoutingDecision()
    e.payload.Unpack(d)
    return d


@dataclass
class Desk:
    """The agents: accept each offer after a moment, through either replica, and end each
    assigned chat after a while, as the media service would when the customer leaves."""

    tenant: Tenant
    replicas: list[AcdProcess]
    decisions: Decisions
    requests: Requests
    answering: set[str] = field(default_factory=set)  # offers seen, not yet answered
    offers: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # offer id -> agent, answered OK
    unexpected: list[str] = field(default_factory=list)  # answers refused for another reason
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _answers: int = 0

    async def run(self) -> None:
        read = 0
        while True:
            fresh = self.decisions.seen[read:]
            read += len(fresh)
            for e in fresh:
                if e.tenant_id != self.tenant.id:
                    continue
                if e.type == OFFER:
                    offer = _decision(e).offer.offer
                    if offer.id not in self.offers:  # the relay may publish a record twice
                        self.offers.add(offer.id)
                        self.answering.add(offer.id)
                        self._spawn(self._accept(offer))
                elif e.type == ASSIGN:
                    interaction = _decision(e).interaction_id
                    if interaction not in self.ended:
                        self.ended.add(interaction)
                        self._spawn(self._end(interaction))
            await asyncio.sleep(0.02)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, offer: acd.Offer) -> None:
        await asyncio.sleep(random.uniform(*THINK))
        self._answers += 1
        first = self._answers % 2
        request = acd.RespondToOfferRequest(
            tenant_id=self.tenant.id, offer_id=offer.id, agent_id=offer.agent_id, accept=True
        )
        try:
            for r in (self.replicas[first], self.replicas[1 - first]):
                try:
                    await r.stub.RespondToOffer(request, metadata=self.tenant.md, timeout=CALL)
                    self.outcomes[f"accepted via {r.name}"] += 1
                    self.accepted[offer.id] = offer.agent_id
                    return
                except grpc.aio.AioRpcError as error:
                    # A dead replica is UNAVAILABLE; an offer that expired while nobody owned
                    # the tenant is FAILED_PRECONDITION, and its contact is offered again.
                    self.outcomes[f"{error.code().name} from {r.name}"] += 1
                    if error.code() not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.FAILED_PRECONDITION,
                    ):
                        self.unexpected.append(f"{offer.id} via {r.name}: {error!r}")
                        return
        finally:
            self.answering.discard(offer.id)

    async def _end(self, interaction: str) -> None:
        await asyncio.sleep(random.uniform(*HANDLE))
        await self.requests.end(self.tenant.id, interaction)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def final_decisions(
    decisions: Decisions, tenant_id: str
) -> dict[str, list[tuple[str, envelope_pb2.Envelope]]]:
    """Per interaction, its assign and overflow decisions, each record once (by event id)."""
    out: dict[str, list[tuple[str, envelope_pb2.Envelope]]] = defaultdict(list)
    seen: set[str] = set()
    for e in list(decisions.seen):
        if e.tenant_id == tenant_id and e.type in (ASSIGN, OVERFLOW) and e.event_id not in seen:
            seen.add(e.event_id)
            out[_decision(e).interaction_id].append((e.type, e))
    return out


def most_held(decisions: Decisions, tenant_id: str) -> dict[str, int]:
    """Per agent, the most interactions it held at once, replaying its assignments and the
    releases the ACD announced (agent.wrap_up_done) in the order they were decided."""
    steps: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    seen: set[str] = set()
    for e in list(decisions.seen):
        if e.tenant_id != tenant_id or e.event_id in seen:
            continue
        seen.add(e.event_id)
        if e.type == ASSIGN:
            steps[_decision(e).assign.agent_id].append((_when(e), +1))
        elif e.type == WRAP_UP_DONE:
            event = agent_pb2.AgentEvent()
            e.payload.Unpack(event)
            steps[event.agent_id].append((_when(e), -1))
    most = {}
    for agent_id, changes in steps.items():
        held = peak = 0
        for _, change in sorted(changes):  # a release and an assignment at one instant: release
            held += change
            peak = max(peak, held)
        most[agent_id] = peak
    return most


async def test_killing_the_owning_replica_mid_routing_assigns_no_agent_twice_and_loses_no_contact(
    stack: Stack, tenants_service: Served, replicas: list[AcdProcess]
) -> None:
    a, b = replicas
    decisions, requests = Decisions(stack), Requests(stack)
    await decisions.start()
    await requests.start()
    desk: Desk | None = None
    desk_task: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(tenants_service.address) as channel:
            tenant = await configure(channel, replicas)
        count = len(await requests.producer.partitions_for(f"{stack.topic_prefix}routing.request"))
        partition = partition_for(tenant.id.encode(), count)
        async with asyncio.timeout(45):
            while (victim := owner(partition, count, a, b)) is None:
                await asyncio.sleep(0.2)
        survivor = b if victim is a else a

        desk = Desk(tenant, replicas, decisions, requests)
        desk_task = asyncio.create_task(desk.run())
        requested: list[str] = []

        async def arrive() -> None:
            for _ in range(CONTACTS):
                requested.append(await requests.route(tenant.id))
                await asyncio.sleep(ARRIVAL_SECONDS / CONTACTS)

        started = asyncio.get_running_loop().time()
        arrivals = asyncio.create_task(arrive())

        # Mid-routing: chats assigned, an offer its agent has not answered yet, and contacts
        # that wait for an agent with room.
        def offered() -> set[str]:
            return {d.interaction_id for d in decisions.of(tenant.id, OFFER)}

        async with asyncio.timeout(30):
            while not (
                len(final_decisions(decisions, tenant.id)) >= AGENTS * CAPACITY // 2
                and desk.answering
                and len(set(requested) - offered()) >= 3
            ):
                await asyncio.sleep(0.01)
            # The owner may have changed since it was found: kill whoever owns it now.
            victim = owner(partition, count, a, b) or victim
            survivor = b if victim is a else a
            gains_before = len(survivor.assignments())
            pending_at_kill = set(desk.answering)
            open_at_kill = set(requested) - set(final_decisions(decisions, tenant.id))
            waiting_at_kill = set(requested) - offered()
            victim.kill()
        killed_at = datetime.now(UTC)
        print(
            f"killed {victim.name} (owner of partition {partition}) after "
            f"{asyncio.get_running_loop().time() - started:.1f}s: {len(requested)} requested, "
            f"{len(open_at_kill)} not yet routed, {len(waiting_at_kill)} never offered, "
            f"{len(pending_at_kill)} offers unanswered"
        )
        await arrivals

        # Every contact ends assigned or overflowed; none waits for ever.
        left = SETTLE - (asyncio.get_running_loop().time() - started)
        # On a timeout the assertions below say which contacts were left.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(left, 1)):
                while len(final_decisions(decisions, tenant.id)) < CONTACTS:
                    await asyncio.sleep(0.1)
        finals = final_decisions(decisions, tenant.id)
        elapsed = asyncio.get_running_loop().time() - started
        most = most_held(decisions, tenant.id)
        print(
            f"routed {len(finals)}/{CONTACTS} in {elapsed:.1f}s; answers: {dict(desk.outcomes)}; "
            f"most held at once per agent: {sorted(most.values())}"
        )

        assert not desk.unexpected, f"answers refused: {desk.unexpected}"
        lost = [i for i in requested if i not in finals]
        assert not lost, f"{len(lost)} contacts never assigned nor overflowed: {lost}"
        twice = {i: [t for t, _ in f] for i, f in finals.items() if len(f) > 1}
        assert not twice, f"interactions assigned (or overflowed) more than once: {twice}"
        over = {aid: n for aid, n in most.items() if n > CAPACITY}
        assert not over, f"agents holding more than {CAPACITY} chats at once: {over}"

        # The survivor took the partition over and routed what the dead owner left behind.
        assert victim.process.returncode == -signal.SIGKILL
        assert any(partition in s for s in survivor.assignments()[gains_before:]), (
            f"{survivor.name} never said it took partition {partition} over"
        )
        # Contacts no agent had been offered yet can only have been routed by the survivor.
        after = {i for i, f in finals.items() if _when(f[0][1]) > killed_at}
        assert waiting_at_kill, "contacts were waiting when the owner died"
        assert waiting_at_kill <= after, "the survivor routed the contacts left waiting"
        assert pending_at_kill, "an offer was pending when the owner died"

        # An answer the platform took (RespondToOffer said OK) is honoured, even when the owner
        # died before applying it: that offer ends in an assignment to that agent.
        assigned = {
            d.assign.offer_id: d.assign.agent_id
            for e in decisions.seen
            if e.tenant_id == tenant.id and e.type == ASSIGN
            for d in [_decision(e)]
        }
        dishonoured = {o: a for o, a in desk.accepted.items() if assigned.get(o) != a}
        assert not dishonoured, f"accepted offers given to someone else or timed out: {dishonoured}"

        figures = await tenant.stats(survivor.stub)
        assert figures.waiting == 0
    finally:
        if desk is not None:
            await desk.stop()
        if desk_task is not None:
            desk_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await desk_task
        await requests.stop()
        await decisions.stop()


async def test_an_offer_accepted_just_before_the_owner_dies_is_honoured(
    stack: Stack, tenants_service: Served, replicas: list[AcdProcess]
) -> None:
    """The accept is taken (OK) while the owner is frozen, late in the offer's life; the owner
    is then killed. The takeover (session timeout, rejoin) ends after the offer would have
    expired: the new owner must apply the accept from the backlog before any timer runs."""
    a, b = replicas
    decisions, requests = Decisions(stack), Requests(stack)
    await decisions.start()
    await requests.start()
    try:
        async with grpc.aio.insecure_channel(tenants_service.address) as channel:
            tenant = await configure(channel, replicas)
        count = len(await requests.producer.partitions_for(f"{stack.topic_prefix}routing.request"))
        partition = partition_for(tenant.id.encode(), count)
        async with asyncio.timeout(45):
            while owner(partition, count, a, b) is None:
                await asyncio.sleep(0.2)
        interaction = await requests.route(tenant.id)
        async with asyncio.timeout(30):
            while not (offers := decisions.of(tenant.id, OFFER)):
                await asyncio.sleep(0.05)
        offer = offers[0].offer.offer
        expires = offer.expire_time.ToDatetime(tzinfo=UTC)
        # Late in the offer's life (the default timeout is 20 s): seven seconds before it expires.
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds() - 7))
        victim = owner(partition, count, a, b)
        assert victim is not None
        survivor = b if victim is a else a
        os.kill(victim.process.pid, signal.SIGSTOP)  # it cannot apply the accept any more
        try:
            # A backlog ahead of the accept on agent.event, as on a busy cell: the new owner
            # needs a while to read up to the accept after it takes the partition over.
            for i in range(BACKLOG):
                await survivor.stub.SetPresence(
                    acd.SetPresenceRequest(
                        tenant_id=tenant.id,
                        agent_id=tenant.agents[i % AGENTS].id,
                        presence=acd.PRESENCE_AVAILABLE,
                        reason=f"backlog {i}",
                    ),
                    metadata=tenant.md,
                    timeout=CALL,
                )
            await survivor.stub.RespondToOffer(
                acd.RespondToOfferRequest(
                    tenant_id=tenant.id, offer_id=offer.id, agent_id=offer.agent_id, accept=True
                ),
                metadata=tenant.md,
                timeout=CALL,
            )
        finally:
            victim.kill()

        def timed_out() -> bool:
            return any(d.offer_timed_out.offer_id == offer.id for d in decisions.of(tenant.id))

        async with asyncio.timeout(60):
            while not (final_decisions(decisions, tenant.id).get(interaction) or timed_out()):
                await asyncio.sleep(0.1)
        assert not timed_out(), "the accepted offer timed out during the takeover"
        final = final_decisions(decisions, tenant.id)[interaction]
        assert [t for t, _ in final] == [ASSIGN], f"final decisions: {final}"
        assert _decision(final[0][1]).assign.offer_id == offer.id, "the accepted offer stands"
    finally:
        await requests.stop()
        await decisions.stop()
