"""End to end: every service of a cell as its own process (two replicas of media and of acd),
over the real broker and Postgres. The demo's journey, and 200 concurrent contacts."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cell_support import assigns_per_interaction, most_held, retrying
from conftest import ADMIN_KEY, Stack, running_cell

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import StreamClient
from lianluo.devstack.demo import play_demo
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = pytest.mark.integration
S = mpb.InteractionState
CONTACTS = 200
AGENTS = 20
CAPACITY = 3


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("cell"))
    replicas = {"media": 2, "acd": 2}
    with running_cell(stack, folder, f"e2e_{uuid.uuid4().hex[:10]}", replicas) as running:
        yield running


async def test_one_contact_travels_through_every_service(cell: Cell) -> None:
    result = await asyncio.wait_for(play_demo(cell, ADMIN_KEY), 180)
    assert result.prompts[:2] == [
        "Welcome to Demo Bank.",
        "How can we help? A lost card, or a payment question?",
    ]
    assert "Please type the last four digits of your card." in result.prompts
    assert result.routed_to in {"li.wei", "ana.silva"}, "only qualified staff agents are offered"
    assert "4417" in result.agent_heard, "the agent sees what was said before they joined"
    assert any("blocked the card ending 4417" in t for t in result.customer_heard)
    for kind in ("interaction.created", "routing.offer", "routing.assign", "interaction.ended"):
        assert kind in result.recording_types, f"the recording misses {kind}"
    assert "Mei Chen" in result.notice["body"] and "resolved" in result.notice["body"]
    assert result.signature_valid


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def test_200_concurrent_contacts_on_two_replicas_each_end_once_and_no_agent_is_overbooked(
    cell: Cell,
) -> None:
    tch = grpc.aio.insecure_channel(cell.address("tenants"))
    mchs = [grpc.aio.insecure_channel(a) for a in cell.addresses("media")]
    achs = [grpc.aio.insecure_channel(a) for a in cell.addresses("acd")]
    admin = _md(ADMIN_KEY)
    tenant = await rpc.TenantServiceStub(tch).CreateTenant(
        pb.CreateTenantRequest(
            tenant=pb.Tenant(
                name=f"load-{uuid.uuid4().hex[:6]}",
                plan=pb.PLAN_ENTERPRISE,
                expected_concurrent_sessions=CONTACTS,
                channels=[common.CHANNEL_WEB],
            )
        ),
        metadata=admin,
    )
    key = (
        await rpc.ApiKeyServiceStub(tch).CreateApiKey(
            pb.CreateApiKeyRequest(tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT),
            metadata=admin,
        )
    ).secret
    md = _md(key)
    await rpc.QueueServiceStub(tch).CreateQueue(
        pb.CreateQueueRequest(
            tenant_id=tenant.id,
            queue=pb.Queue(
                name="load",
                priority=5,
                max_wait_seconds=40,
                media=common.MEDIA_TYPE_CHAT,
                service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
                overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
            ),
        ),
        metadata=md,
    )
    agents = [
        await rpc.AgentServiceStub(tch).CreateAgent(
            pb.CreateAgentRequest(
                tenant_id=tenant.id,
                agent=pb.Agent(
                    name=f"agent{i}",
                    kind=pb.AGENT_KIND_STAFF,
                    capacity=[
                        pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=CAPACITY)
                    ],
                ),
            ),
            metadata=md,
        )
        for i in range(AGENTS)
    ]

    media = [media_rpc.MediaServiceStub(ch) for ch in mchs]
    acd = [acd_rpc.AcdServiceStub(ch) for ch in achs]
    handled: list[asyncio.Task[None]] = []

    async def work(agent: pb.Agent, offer: acd_pb2.Offer, n: int) -> None:
        await acd[n % 2].RespondToOffer(
            acd_pb2.RespondToOfferRequest(
                tenant_id=tenant.id, offer_id=offer.id, agent_id=agent.id, accept=True
            ),
            metadata=md,
        )
        stub = media[n % 2]
        async with asyncio.timeout(30):
            while (
                await stub.GetInteraction(
                    mpb.GetInteractionRequest(
                        tenant_id=tenant.id, interaction_id=offer.interaction_id
                    ),
                    metadata=md,
                )
            ).state != S.INTERACTION_STATE_CONNECTED:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the conversation
        await stub.End(
            mpb.EndRequest(
                tenant_id=tenant.id,
                interaction_id=offer.interaction_id,
                resolution=mpb.Resolution(code="resolved"),
            ),
            metadata=md,
        )

    counter = itertools.count()
    desks = []
    for i, agent in enumerate(agents):
        await retrying(
            lambda a=agent: acd[0].SetPresence(
                acd_pb2.SetPresenceRequest(
                    tenant_id=tenant.id, agent_id=a.id, presence=acd_pb2.PRESENCE_AVAILABLE
                ),
                metadata=md,
            )
        )

        def on_frame(frame: mpb.ServerFrame, a: pb.Agent = agent) -> None:
            if frame.WhichOneof("frame") == "offer":
                handled.append(asyncio.create_task(work(a, frame.offer, next(counter))))

        join = mpb.Join(tenant_id=tenant.id, role=mpb.PARTICIPANT_ROLE_AGENT, subject_id=agent.id)
        desks.append(await StreamClient.connect(mchs[i % 2], key, join, on_frame))

    gate = asyncio.Semaphore(50)

    async def contact(n: int) -> str:
        async with gate:
            started = await retrying(
                lambda: media[n % 2].StartInteraction(
                    mpb.StartInteractionRequest(
                        tenant_id=tenant.id,
                        channel=common.CHANNEL_WEB,
                        media=common.MEDIA_TYPE_CHAT,
                        queue="load",
                        request_id=f"c{n}",
                        customer=mpb.Customer(id=f"cust{n}"),
                    ),
                    metadata=md,
                )
            )
            return str(started.interaction.id)

    ids = await asyncio.gather(*(contact(n) for n in range(CONTACTS)))
    assert len(set(ids)) == CONTACTS

    final: dict[str, mpb.Interaction] = {}
    async with asyncio.timeout(150):
        while len(final) < CONTACTS:
            for iid in ids:
                if iid not in final:
                    it = await media[0].GetInteraction(
                        mpb.GetInteractionRequest(tenant_id=tenant.id, interaction_id=iid),
                        metadata=md,
                    )
                    if it.state in (
                        S.INTERACTION_STATE_CLOSED,
                        S.INTERACTION_STATE_OVERFLOWED,
                        S.INTERACTION_STATE_ABANDONED,
                    ):
                        final[iid] = it
            await asyncio.sleep(0.5)
    await asyncio.gather(*handled, return_exceptions=True)

    states = {S.Name(it.state) for it in final.values()}
    assert states <= {"INTERACTION_STATE_CLOSED", "INTERACTION_STATE_OVERFLOWED"}, states
    served = 0
    for it in final.values():
        people = [p for p in it.participants if p.role == mpb.PARTICIPANT_ROLE_AGENT]
        if it.state == S.INTERACTION_STATE_CLOSED:
            assert len(people) == 1, f"{it.id} was assigned {len(people)} times"
            served += 1
        else:
            assert not people, "an overflowed contact was never connected"
    assert served >= CONTACTS // 2, "most contacts were served"
    for agent_id, peak in most_held(list(final.values())).items():
        assert peak <= CAPACITY, f"agent {agent_id} held {peak} chats at once"
    assigns = await assigns_per_interaction(cell, tenant.id)
    assert assigns, "routing.decision carried the assignments"
    assert max(assigns.values()) == 1, "an interaction was assigned more than once"
    assert set(assigns) == {i for i, it in final.items() if it.state == S.INTERACTION_STATE_CLOSED}
    for desk in desks:
        await desk.close()
    for ch in (tch, *mchs, *achs):
        await ch.close()
