"""A tenant cannot break its cell: every RPC of every service, found by reflection, with hostile
values in every field, answers with a clean status, and the cell still serves everyone after.

The cell runs with one partition per topic, so every tenant shares the fuzzing tenant's
partitions: an event the fuzz left stuck would hold up the canary below. Nothing the services
accepted may end in the dead letters either: what passes validation must be storable and
publishable.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, queue
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hostile import variants

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.demo import configure, demo_flow, play_demo
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.runtime import dead_letters
from lianluo.services import LOCAL_SERVICES
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
# Statuses that mean the service failed rather than the request: a crash, a stall, a lost replica.
BROKEN = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.DATA_LOSS,
}
INFRASTRUCTURE = ("grpc.health.", "grpc.reflection.")
CALL_SECONDS = 30.0
STREAM_READ_SECONDS = 2.0
CONCURRENCY = 8


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cell, str]]:
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    folder = Path(tmp_path_factory.mktemp("fuzz-cell"))
    with running_cell(stack, folder, name, LIANLUO_TOPIC_PARTITIONS="1") as running:
        yield running, f"{name}."


@dataclass(frozen=True)
class Method:
    service: str
    path: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool


def discover(address: str) -> list[Method]:
    """Every method the server lists through reflection, with its request class."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        found = []
        for name in database.get_services():
            if name.startswith(INFRASTRUCTURE):
                continue
            service = pool.FindServiceByName(name)
            for m in service.methods:
                found.append(
                    Method(
                        name,
                        f"/{name}/{m.name}",
                        message_factory.GetMessageClass(m.input_type),
                        m.client_streaming,
                        m.server_streaming,
                    )
                )
        return found


@dataclass
class Outcome:
    broken: list[str]
    codes: collections.Counter[str]
    calls: int = 0


async def _call(
    channel: grpc.aio.Channel, method: Method, body: bytes, md: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    """Send one request body; the status it ends with (OK for a stream still open)."""
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(method.path)(body, metadata=md, timeout=CALL_SECONDS)
            return grpc.StatusCode.OK
        if method.client_streaming:
            call = channel.stream_stream(method.path)(metadata=md, timeout=CALL_SECONDS)
            await call.write(body)
        else:
            call = channel.unary_stream(method.path)(body, metadata=md, timeout=CALL_SECONDS)
        try:
            async with asyncio.timeout(STREAM_READ_SECONDS):
                await call.read()
        except TimeoutError:
            pass  # a live stream waiting for more: not an error
        finally:
            call.cancel()
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()


async def fuzz(
    addresses: dict[str, str], base: Callable[[type[Message]], Message], md: Any
) -> Outcome:
    outcome = Outcome([], collections.Counter())
    limit = asyncio.Semaphore(CONCURRENCY)
    channels = {s: grpc.aio.insecure_channel(a) for s, a in addresses.items()}

    async def one(service: str, method: Method, label: str, body: bytes) -> None:
        async with limit:
            code = await _call(channels[service], method, body, md)
        outcome.calls += 1
        outcome.codes[code.name] += 1
        if code in BROKEN:
            outcome.broken.append(f"{method.path} {label}: {code.name}")

    try:
        jobs = []
        for service, address in addresses.items():
            for method in await asyncio.to_thread(discover, address):
                jobs.append(one(service, method, "undecodable body", b"\xff\xff\xff\xff"))
                for variant in variants(method.request, lambda m=method: base(m.request)):
                    try:
                        body = variant.build().SerializeToString()
                    except (ValueError, TypeError, OverflowError):
                        continue  # protobuf itself refuses to build it: no client can send it
                    jobs.append(one(service, method, f"{variant.path}={variant.value}", body))
        await asyncio.gather(*jobs)
    finally:
        for channel in channels.values():
            await channel.close()
    return outcome


async def test_hostile_requests_get_clean_statuses_and_the_cell_still_serves_everyone(
    cell: tuple[Cell, str], stack: Stack
) -> None:
    running, prefix = cell
    async with grpc.aio.insecure_channel(running.address("tenants")) as tch:
        tenant, client = await onboard(Client(tch, ADMIN_KEY))
    key = client.key

    # Every service with a gRPC API; the console's API is HTTP, for its pages, and is tested
    # with them (tests/e2e/test_console.py).
    addresses = {s: running.address(s) for s in LOCAL_SERVICES if s != "console"}
    # The tenant's own key: what any tenant can send. Every service must know it first.
    md = (("authorization", f"Bearer {key}"),)
    await _until_known(addresses, md)
    seeds = await _seeds(running, tenant.id, md)

    def base(request_class: type[Message]) -> Message:
        """A valid request where one is known, so the hostile field is the only fault."""
        seed = seeds.get(request_class.DESCRIPTOR.full_name)
        if seed is not None:
            return request_class.FromString(seed.SerializeToString())
        request = request_class()
        if "tenant_id" in request.DESCRIPTOR.fields_by_name:
            request.tenant_id = tenant.id  # type: ignore[attr-defined]
        return request

    outcome = await fuzz(addresses, base, md)
    print(f"\nfuzz: {outcome.calls} calls, statuses {dict(outcome.codes)}")
    assert outcome.calls > 2_000, "reflection found the cell's methods"
    assert not outcome.broken, "\n".join(outcome.broken[:40])
    assert not running.failed(), f"replicas exited: {[r.service for r in running.failed()]}"

    # The canary: another tenant, created after the fuzz, with a new key used on every
    # service, takes the whole journey through the shared partitions.
    result = await asyncio.wait_for(play_demo(running, ADMIN_KEY), 240)
    assert result.routed_to in {"li.wei", "ana.silva"}
    assert "interaction.ended" in result.recording_types and result.signature_valid
    await _until_known(addresses, (("authorization", f"Bearer {result.tenant_key}"),))
    letters = await dead_letters.read_all(stack.kafka, f"{prefix}{dead_letters.TOPIC}")
    assert not letters, [(d.source_topic, d.error[:200]) for d in letters[:5]]


async def _seeds(running: Cell, tenant_id: str, md: Any) -> dict[str, Message]:
    """Valid requests of the tenant, by request type: its own flow, agent and interaction."""
    async with (
        grpc.aio.insecure_channel(running.address("tenants")) as tch,
        grpc.aio.insecure_channel(running.address("media")) as mch,
    ):
        await configure(tch, tenant_id, md)
        agents = await rpc.AgentServiceStub(tch).ListAgents(
            pb.ListAgentsRequest(tenant_id=tenant_id), metadata=md
        )
        agent_id = next(a.id for a in agents.agents if a.name == "li.wei")
        start = mpb.StartInteractionRequest(
            tenant_id=tenant_id,
            channel=common.CHANNEL_WEB,
            media=common.MEDIA_TYPE_CHAT,
            customer=mpb.Customer(id="fuzz-customer", language="en", attributes={"value": "high"}),
            flow="card-services",
        )
        # Media learns the new flow from tenant.config a moment after it is stored.
        async with asyncio.timeout(30):
            while True:
                try:
                    started = await media_rpc.MediaServiceStub(mch).StartInteraction(
                        start, metadata=md
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    await asyncio.sleep(0.2)
    send = mpb.SendRequest(
        tenant_id=tenant_id,
        interaction_id=started.interaction.id,
        participant_id=started.customer_participant_id,
        client_message_id="fuzz",
        content=mpb.MessageContent(text="hello"),
    )
    seeds: list[Message] = [
        start,
        send,
        acd_pb2.SetPresenceRequest(
            tenant_id=tenant_id, agent_id=agent_id, presence=acd_pb2.PRESENCE_AWAY, reason="lunch"
        ),
        npb.PublishBusinessEventRequest(
            tenant_id=tenant_id,
            type="card_spend",
            customer_id="fuzz-customer",
            metrics={"amount": 12_000.0},
            attributes={"card_expiry": "2027-01-31"},
        ),
        pb.PutFlowRequest(tenant_id=tenant_id, flow=demo_flow()),
        pb.CreateAgentRequest(tenant_id=tenant_id, agent=agent("fuzz.agent")),
        pb.CreateQueueRequest(tenant_id=tenant_id, queue=queue("fuzz-queue")),
    ]
    # The ACD learns the agents from tenant.config too: seeds reach its logic only after that.
    async with grpc.aio.insecure_channel(running.address("acd")) as ach, asyncio.timeout(30):
        while True:
            try:
                await acd_rpc.AcdServiceStub(ach).SetPresence(seeds[2], metadata=md)
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.2)
    return {seed.DESCRIPTOR.full_name: seed for seed in seeds}


async def _until_known(addresses: dict[str, str], md: Any) -> None:
    """Wait until every service knows the new key (it travels on tenant.config).

    Authentication comes before anything else, so any call answers UNAUTHENTICATED until the
    key is known there.
    """
    async with asyncio.timeout(60):
        for address in addresses.values():
            method = next(m for m in await asyncio.to_thread(discover, address))
            async with grpc.aio.insecure_channel(address) as channel:
                while await _call(channel, method, b"\xff", md) == grpc.StatusCode.UNAUTHENTICATED:
                    await asyncio.sleep(0.2)
