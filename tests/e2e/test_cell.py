"""End to end: every service of a cell as its own process (two replicas of media and of acd),
over the real broker and Postgres. The demo's journey, and 200 concurrent contacts."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cell_support import assigns_per_interaction, most_held, retrying, tenant_with_queue
from conftest import ADMIN_KEY, Stack, running_cell

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import StreamClient
from lianluo.devstack.demo import play_demo
from lianluo.events.v1 import interaction_pb2, ivr_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
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


async def test_a_card_number_typed_in_chat_is_masked_in_the_record_and_search_finds_words_not_it(
    cell: Cell,
) -> None:
    async with (
        grpc.aio.insecure_channel(cell.address("tenants")) as tch,
        grpc.aio.insecure_channel(cell.address("media")) as mch,
        grpc.aio.insecure_channel(cell.address("recording")) as rch,
    ):
        tenant, client = await tenant_with_queue(tch)
        media = media_rpc.MediaServiceStub(mch)
        records = recording_rpc.RecordingServiceStub(rch)

        async def contact(*texts: str, resolution: str) -> str:
            started = await retrying(
                lambda: media.StartInteraction(
                    mpb.StartInteractionRequest(
                        tenant_id=tenant.id,
                        channel=common.CHANNEL_WEB,
                        media=common.MEDIA_TYPE_CHAT,
                        customer=mpb.Customer(id=f"c-{uuid.uuid4().hex[:6]}"),
                        queue="cards",
                    ),
                    metadata=client.md,
                )
            )
            iid, me = started.interaction.id, started.customer_participant_id
            for text in texts:
                await media.Send(
                    mpb.SendRequest(
                        tenant_id=tenant.id,
                        interaction_id=iid,
                        participant_id=me,
                        content=mpb.MessageContent(text=text),
                    ),
                    metadata=client.md,
                )
            await media.End(
                mpb.EndRequest(
                    tenant_id=tenant.id,
                    interaction_id=iid,
                    participant_id=me,
                    resolution=mpb.Resolution(code=resolution),
                ),
                metadata=client.md,
            )
            return str(iid)

        stolen = await contact(
            "My card 4111 1111 1111 1111 was stolen", "我的信用卡被盗了", resolution="resolved"
        )
        question = await contact("How do refunds work?", resolution="unresolved")

        async def found(**search: Any) -> list[str]:
            answer = await records.ListRecordings(
                rpb.ListRecordingsRequest(tenant_id=tenant.id, **search), metadata=client.md
            )
            return [r.interaction_id for r in answer.recordings]

        # Until both records hold their last events: the recording may still be working through
        # the 200 contacts of the test before (a bound, not a speed).
        async with asyncio.timeout(240):
            while await found(resolution="unresolved") != [question] or await found(
                resolution="resolved"
            ) != [stolen]:
                await asyncio.sleep(0.3)
        assert await found(text="信用卡") == [stolen], "Chinese is cut into words"
        assert await found(text="stolen card") == [stolen]
        assert await found(text="refunded") == [question], "English words match their ending"
        assert await found(text="4111 1111 1111 1111") == [], "the number is masked in search"
        assert await found(text="4111111111111111") == []
        assert await found(resolution="unresolved") == [question]
        assert await found(queue="cards", channel=common.CHANNEL_WEB) == [question, stolen]
        first = await records.ListRecordings(
            rpb.ListRecordingsRequest(tenant_id=tenant.id, page=common.PageRequest(page_size=1)),
            metadata=client.md,
        )
        after = await records.ListRecordings(
            rpb.ListRecordingsRequest(
                tenant_id=tenant.id,
                page=common.PageRequest(page_size=1, page_token=first.page.next_page_token),
            ),
            metadata=client.md,
        )
        assert [r.interaction_id for r in (*first.recordings, *after.recordings)] == [
            question,
            stolen,
        ]
        record = await records.GetRecording(
            rpb.GetRecordingRequest(tenant_id=tenant.id, interaction_id=stolen),
            metadata=client.md,
        )
        stored = [
            e.event.payload.value for e in record.entries if e.event.type == "interaction.message"
        ]
        assert stored and not any(b"4111 1111" in raw for raw in stored), "masked in storage"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await found(text="the of and")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_secret_asked_by_the_ivr_steers_the_flow_and_is_kept_nowhere(cell: Cell) -> None:
    secret = "731"
    async with (
        grpc.aio.insecure_channel(cell.address("tenants")) as tch,
        grpc.aio.insecure_channel(cell.address("media")) as mch,
        grpc.aio.insecure_channel(cell.address("recording")) as rch,
    ):
        tenant, client = await tenant_with_queue(tch)
        await client.flows.PutFlow(
            pb.PutFlowRequest(
                tenant_id=tenant.id,
                flow=pb.Flow(
                    name="verify",
                    entry_node="cvv",
                    nodes=[
                        pb.FlowNode(
                            id="cvv",
                            collect=pb.CollectNode(
                                prompt="The three digits on the back of your card, please.",
                                variable="cvv",
                                pattern=r"\d{3}",
                                max_retries=1,
                                sensitive=True,
                                next="route",
                                failure_next="bye",
                            ),
                        ),
                        pb.FlowNode(id="route", route_to_queue=pb.RouteToQueueNode(queue="cards")),
                        pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye")),
                    ],
                ),
            ),
            metadata=client.md,
        )
        media = media_rpc.MediaServiceStub(mch)
        started = await retrying(
            lambda: media.StartInteraction(
                mpb.StartInteractionRequest(
                    tenant_id=tenant.id,
                    channel=common.CHANNEL_WEB,
                    media=common.MEDIA_TYPE_CHAT,
                    customer=mpb.Customer(id="c-secret"),
                    flow="verify",
                ),
                metadata=client.md,
            )
        )
        iid, me = started.interaction.id, started.customer_participant_id
        get = mpb.GetInteractionRequest(tenant_id=tenant.id, interaction_id=iid)
        join = mpb.Join(
            tenant_id=tenant.id,
            interaction_id=iid,
            role=mpb.ParticipantRole.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="c-secret",
        )
        customer = StreamClient(mch, client.key, join)
        try:  # until the IVR has asked
            await customer.wait_for(lambda f: "three digits" in f.prompt.text, 30)
        finally:
            await customer.close()
        sent = await media.Send(
            mpb.SendRequest(
                tenant_id=tenant.id,
                interaction_id=iid,
                participant_id=me,
                content=mpb.MessageContent(text=secret),
            ),
            metadata=client.md,
        )
        assert (sent.content.text, list(sent.redacted)) == ("••••••", ["ivr_secret"])
        routed = {S.INTERACTION_STATE_QUEUED, S.INTERACTION_STATE_OVERFLOWED}
        async with asyncio.timeout(30):  # the IVR took the answer and routed: it matched \d{3}
            while (await media.GetInteraction(get, metadata=client.md)).state not in routed:
                await asyncio.sleep(0.2)

        records = recording_rpc.RecordingServiceStub(rch)
        async with asyncio.timeout(240):  # the recording may still be behind on earlier tests
            while True:
                record = await retrying(
                    lambda: records.GetRecording(
                        rpb.GetRecordingRequest(tenant_id=tenant.id, interaction_id=iid),
                        metadata=client.md,
                    ),
                    240,
                )
                kinds = [e.event.type for e in record.entries]
                if "routing.requested" in kinds:
                    break
                await asyncio.sleep(0.3)
        texts = []
        for entry in record.entries:
            if entry.event.type == "interaction.message":
                event = interaction_pb2.InteractionEvent()
                entry.event.payload.Unpack(event)
                texts.append(event.message.content.text)
            if entry.event.type == "routing.requested":
                request = ivr_pb2.RoutingRequest()
                entry.event.payload.Unpack(request)
                assert "cvv" not in request.requirements.collected_data
        assert "••••••" in texts and secret not in texts, "the record keeps the answer masked"
