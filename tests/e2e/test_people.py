"""People and permissions across a whole cell: every attack is refused where it lands.

Two tenants, A and B, each with agents, supervisors and an admin who sign in with passwords;
A has an interaction assigned to its agent Li. Every service of the cell runs as its own
process and checks tokens against its own copy of `tenant.config`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from aiohttp import web
from conftest import ADMIN_KEY, Stack, running_cell
from cryptography.hazmat.primitives.asymmetric import rsa
from factories import Client, agent, onboard, queue, user
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jwt.algorithms import RSAAlgorithm

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import StreamClient
from lianluo.edge.v1 import edge_pb2 as epb
from lianluo.edge.v1 import edge_pb2_grpc as edge_rpc
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.ivr.v1 import ivr_pb2 as ipb
from lianluo.ivr.v1 import ivr_pb2_grpc as ivr_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.notification.v1 import notification_pb2 as npb
from lianluo.notification.v1 import notification_pb2_grpc as notification_rpc
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
from lianluo.runtime import tokens
from lianluo.services import LOCAL_SERVICES
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
DENIED = grpc.StatusCode.PERMISSION_DENIED
MISSING = grpc.StatusCode.NOT_FOUND
REFUSED = grpc.StatusCode.UNAUTHENTICATED
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PASSWORD = "correct horse battery staple"
P = mpb.ParticipantRole


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


@dataclass
class Side:
    """One tenant: its key, agents and people, and each person's tokens."""

    tenant: pb.Tenant
    key: str
    agents: dict[str, pb.Agent] = field(default_factory=dict)
    users: dict[str, pb.User] = field(default_factory=dict)
    access: dict[str, str] = field(default_factory=dict)
    refresh: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    a: Side
    b: Side
    # A's interaction, assigned to Li, and the offer Li accepted.
    interaction: mpb.Interaction
    offer: apb.Offer
    # A's second interaction, started for another customer.
    other: mpb.Interaction
    customer: str  # a customer's session token bound to `interaction`
    channels: dict[str, grpc.aio.Channel]

    def stub(self, service: str, make: Callable[[grpc.aio.Channel], Any]) -> Any:
        return make(self.channels[service])


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("people"))
    name = f"people_{uuid.uuid4().hex[:10]}"
    with running_cell(stack, folder, name, services=[*LOCAL_SERVICES, "edge"]) as running:
        yield running


async def until(call: Callable[[], Awaitable[Any]], seconds: float = 30) -> Any:
    """The call's answer once the services have learnt the credentials and configuration it
    uses from tenant.config (until then: UNAUTHENTICATED, NOT_FOUND or INVALID_ARGUMENT)."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if error.code() not in (REFUSED, MISSING, grpc.StatusCode.INVALID_ARGUMENT):
                    raise
                await asyncio.sleep(0.2)


async def refused_eventually(call: Callable[[], Awaitable[Any]], code: grpc.StatusCode) -> None:
    """Wait (bounded) until a change that travels on tenant.config makes the call fail."""
    failed: grpc.aio.AioRpcError | None = None
    async with asyncio.timeout(30):
        while failed is None:
            try:
                await call()
                await asyncio.sleep(0.2)
            except grpc.aio.AioRpcError as error:
                failed = error
    assert failed.code() == code, failed.details()


async def accepted(call: Callable[[], Awaitable[Any]]) -> None:
    """Wait until the service knows the credential: the call answers, or fails for another
    reason than the credential (NOT_FOUND for an id that does not exist)."""
    answer: grpc.StatusCode | None = None
    async with asyncio.timeout(30):
        while answer in (None, REFUSED):
            if answer is not None:
                await asyncio.sleep(0.2)
            try:
                await call()
                answer = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                answer = error.code()
    assert answer in (grpc.StatusCode.OK, MISSING), answer


async def refused(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def login(c: Client, side: Side, name: str) -> None:
    tokens_ = await c.auth.Login(
        pb.LoginRequest(tenant=side.tenant.name, name=name, password=PASSWORD)
    )
    side.access[name], side.refresh[name] = tokens_.access_token, tokens_.refresh_token


async def populate(admin: Client) -> Side:
    """A tenant with queues cards and other, agents Li and Ana, and one person per role."""
    t, c = await onboard(admin)
    side = Side(t, c.key)
    for q in ("cards", "other"):
        await c.queues.CreateQueue(
            pb.CreateQueueRequest(tenant_id=t.id, queue=queue(q)), metadata=c.md
        )
    for name in ("li.wei", "ana.silva"):
        side.agents[name] = await c.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=agent(name)), metadata=c.md
        )
    people = [
        user("li", pb.ROLE_AGENT, agent="li.wei"),
        user("ana", pb.ROLE_AGENT, agent="ana.silva"),
        user("sup-cards", pb.ROLE_SUPERVISOR, queues=["cards"]),
        user("sup-other", pb.ROLE_SUPERVISOR, queues=["other"]),
        user("boss", pb.ROLE_TENANT_ADMIN),
    ]
    for person in people:
        side.users[person.name] = await c.users.CreateUser(
            pb.CreateUserRequest(tenant_id=t.id, user=person, password=PASSWORD), metadata=c.md
        )
        await login(c, side, person.name)
    return side


@pytest.fixture(scope="module")
async def world(cell: Cell) -> AsyncIterator[World]:
    channels = {
        name: grpc.aio.insecure_channel(cell.address(name)) for name in [*LOCAL_SERVICES, "edge"]
    }
    admin = Client(channels["tenants"], ADMIN_KEY)
    a, b = await populate(admin), await populate(admin)
    media = media_rpc.MediaServiceStub(channels["media"])
    acd = acd_rpc.AcdServiceStub(channels["acd"])
    li = a.agents["li.wei"]
    await until(
        lambda: acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=a.tenant.id, agent_id=li.id, presence=apb.PRESENCE_AVAILABLE
            ),
            metadata=bearer(a.access["li"]),
        )
    )
    desk = await StreamClient.connect(
        channels["media"],
        a.access["li"],
        mpb.Join(tenant_id=a.tenant.id, role=P.PARTICIPANT_ROLE_AGENT, subject_id=li.id),
    )

    def start(customer: str) -> Awaitable[mpb.StartInteractionResponse]:
        return media.StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=a.tenant.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                customer=mpb.Customer(id=customer, display_name="Mei"),
                queue="cards",
            ),
            metadata=bearer(a.key),
        )

    started = await until(lambda: start("mei"))
    offer = (await desk.wait_for(lambda f: f.WhichOneof("frame") == "offer", 30)).offer
    await acd.RespondToOffer(
        apb.RespondToOfferRequest(
            tenant_id=a.tenant.id, offer_id=offer.id, agent_id=li.id, accept=True
        ),
        metadata=bearer(a.access["li"]),
    )
    await desk.close()
    interaction = started.interaction
    async with asyncio.timeout(30):
        while not any(p.subject_id == li.id for p in interaction.participants):
            await asyncio.sleep(0.1)
            interaction = await media.GetInteraction(
                mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=interaction.id),
                metadata=bearer(a.key),
            )
    other = (await start("someone-else")).interaction
    session = await admin.auth.CreateCustomerSession(
        pb.CreateCustomerSessionRequest(tenant_id=a.tenant.id, interaction_id=interaction.id),
        metadata=bearer(a.key),
    )
    yield World(a, b, interaction, offer, other, session.token, channels)
    for ch in channels.values():
        await ch.close()


def _participant(it: mpb.Interaction, role: int) -> mpb.Participant:
    return next(p for p in it.participants if p.role == role)


# ---------------------------------------------------------------------- agents


async def test_an_agent_cannot_answer_another_agents_offer(world: World) -> None:
    a, acd = world.a, world.stub("acd", acd_rpc.AcdServiceStub)
    ana = bearer(a.access["ana"])
    li_id, ana_id = a.agents["li.wei"].id, a.agents["ana.silva"].id
    await refused(
        acd.RespondToOffer(
            apb.RespondToOfferRequest(
                tenant_id=a.tenant.id, offer_id=world.offer.id, agent_id=li_id, accept=False
            ),
            metadata=ana,
        ),
        DENIED,
    )
    # Naming herself does not make Li's offer hers.
    await refused(
        acd.RespondToOffer(
            apb.RespondToOfferRequest(
                tenant_id=a.tenant.id, offer_id=world.offer.id, agent_id=ana_id, accept=True
            ),
            metadata=ana,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_an_agent_sets_only_their_own_presence(world: World) -> None:
    a, acd = world.a, world.stub("acd", acd_rpc.AcdServiceStub)
    ana = bearer(a.access["ana"])
    await refused(
        acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=a.tenant.id,
                agent_id=a.agents["li.wei"].id,
                presence=apb.PRESENCE_OFFLINE,
            ),
            metadata=ana,
        ),
        DENIED,
    )
    mine = await until(
        lambda: acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=a.tenant.id,
                agent_id=a.agents["ana.silva"].id,
                presence=apb.PRESENCE_AWAY,
                reason="lunch",
            ),
            metadata=ana,
        )
    )
    assert mine.presence == apb.PRESENCE_AWAY


async def test_an_agent_joins_only_the_interactions_offered_or_assigned_to_them(
    world: World,
) -> None:
    a, media = world.a, world.stub("media", media_rpc.MediaServiceStub)
    it = world.interaction
    li, ana = a.agents["li.wei"], a.agents["ana.silva"]
    read = mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=it.id)
    assert (await media.GetInteraction(read, metadata=bearer(a.access["li"]))).id == it.id
    await refused(media.GetInteraction(read, metadata=bearer(a.access["ana"])), DENIED)
    for subject in (li.id, ana.id):  # as Li, or as herself
        join = mpb.Join(
            tenant_id=a.tenant.id,
            interaction_id=it.id,
            role=P.PARTICIPANT_ROLE_AGENT,
            subject_id=subject,
        )
        stream = StreamClient(world.channels["media"], a.access["ana"], join)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.wait_for(lambda f: f.WhichOneof("frame") == "joined", 15)
        await stream.close()
        assert caught.value.code() == DENIED, subject
    li_participant = next(p for p in it.participants if p.subject_id == li.id)
    await refused(
        media.Send(
            mpb.SendRequest(
                tenant_id=a.tenant.id,
                interaction_id=it.id,
                participant_id=li_participant.id,
                content=mpb.MessageContent(text="not Li"),
            ),
            metadata=bearer(a.access["ana"]),
        ),
        DENIED,
    )
    # An agent's desk is their own.
    desk = StreamClient(
        world.channels["media"],
        a.access["ana"],
        mpb.Join(tenant_id=a.tenant.id, role=P.PARTICIPANT_ROLE_AGENT, subject_id=li.id),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await desk.wait_for(lambda f: f.WhichOneof("frame") == "joined", 15)
    await desk.close()
    assert caught.value.code() == DENIED


# ---------------------------------------------------------------------- customers


async def test_a_customer_token_reaches_only_its_own_interaction(world: World) -> None:
    a, media = world.a, world.stub("media", media_rpc.MediaServiceStub)
    me = bearer(world.customer)
    mine, other = world.interaction, world.other
    got = await media.GetInteraction(
        mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=mine.id), metadata=me
    )
    assert got.id == mine.id
    await refused(
        media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=other.id), metadata=me
        ),
        DENIED,
    )
    customer = _participant(mine, P.PARTICIPANT_ROLE_CUSTOMER)
    sent = await media.Send(
        mpb.SendRequest(
            tenant_id=a.tenant.id,
            interaction_id=mine.id,
            participant_id=customer.id,
            content=mpb.MessageContent(text="my card is lost"),
        ),
        metadata=me,
    )
    assert sent.sequence > 0
    agent_participant = _participant(got, P.PARTICIPANT_ROLE_AGENT)
    await refused(
        media.Send(
            mpb.SendRequest(
                tenant_id=a.tenant.id,
                interaction_id=mine.id,
                participant_id=agent_participant.id,
                content=mpb.MessageContent(text="posing as the agent"),
            ),
            metadata=me,
        ),
        DENIED,
    )
    await refused(
        media.StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=a.tenant.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                queue="cards",
            ),
            metadata=me,
        ),
        DENIED,
    )
    # Nothing but its interaction: no figures, no recordings, no configuration.
    await refused(
        world.stub("acd", acd_rpc.AcdServiceStub).QueueStats(
            apb.QueueStatsRequest(tenant_id=a.tenant.id), metadata=me
        ),
        DENIED,
    )
    await refused(
        world.stub("recording", recording_rpc.RecordingServiceStub).GetRecording(
            rpb.GetRecordingRequest(tenant_id=a.tenant.id, interaction_id=mine.id), metadata=me
        ),
        DENIED,
    )
    await refused(
        Client(world.channels["tenants"], world.customer).agents.ListAgents(
            pb.ListAgentsRequest(tenant_id=a.tenant.id), metadata=me
        ),
        DENIED,
    )


# ---------------------------------------------------------------------- supervisors


async def test_a_supervisor_watches_only_their_queues(world: World) -> None:
    a = world.a
    acd = world.stub("acd", acd_rpc.AcdServiceStub)
    media = world.stub("media", media_rpc.MediaServiceStub)
    theirs, not_theirs = bearer(a.access["sup-cards"]), bearer(a.access["sup-other"])
    figures = await until(
        lambda: acd.QueueStats(
            apb.QueueStatsRequest(tenant_id=a.tenant.id, queues=["cards"]), metadata=theirs
        )
    )
    assert [q.queue for q in figures.queues] == ["cards"]
    await refused(
        acd.QueueStats(
            apb.QueueStatsRequest(tenant_id=a.tenant.id, queues=["cards"]), metadata=not_theirs
        ),
        DENIED,
    )
    everything = await acd.QueueStats(
        apb.QueueStatsRequest(tenant_id=a.tenant.id), metadata=not_theirs
    )
    assert [q.queue for q in everything.queues] == ["other"], "only the queues they watch"
    read = mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=world.interaction.id)
    assert (await media.GetInteraction(read, metadata=theirs)).queue == "cards"
    await refused(media.GetInteraction(read, metadata=not_theirs), DENIED)
    watch = mpb.Join(
        tenant_id=a.tenant.id,
        interaction_id=world.interaction.id,
        role=P.PARTICIPANT_ROLE_SUPERVISOR,
        subject_id=a.users["sup-other"].id,
    )
    stream = StreamClient(world.channels["media"], a.access["sup-other"], watch)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.wait_for(lambda f: f.WhichOneof("frame") == "joined", 15)
    await stream.close()
    assert caught.value.code() == DENIED
    await refused(
        acd.Recommend(
            apb.RecommendRequest(
                tenant_id=a.tenant.id, requirements=common.RoutingRequirements(queue="cards")
            ),
            metadata=not_theirs,
        ),
        DENIED,
    )
    # The live conversations: a supervisor lists those of their queues only; an agent none.
    live = mpb.ListInteractionsRequest(tenant_id=a.tenant.id)
    mine = await media.ListInteractions(live, metadata=theirs)
    assert world.interaction.id in {it.id for it in mine.interactions}
    others = await media.ListInteractions(live, metadata=not_theirs)
    assert world.interaction.id not in {it.id for it in others.interactions}
    await refused(
        media.ListInteractions(
            mpb.ListInteractionsRequest(tenant_id=a.tenant.id, queue="cards"), metadata=not_theirs
        ),
        DENIED,
    )
    await refused(media.ListInteractions(live, metadata=bearer(a.access["li"])), DENIED)


# ---------------------------------------------------------------------- across tenants


async def test_no_token_or_person_of_one_tenant_reaches_another(world: World) -> None:
    a, b = world.a, world.b
    media = world.stub("media", media_rpc.MediaServiceStub)
    acd = world.stub("acd", acd_rpc.AcdServiceStub)
    tenants = Client(world.channels["tenants"], "")
    for credential in (b.access["boss"], b.access["li"], b.access["sup-cards"]):
        await refused(
            media.GetInteraction(
                mpb.GetInteractionRequest(
                    tenant_id=a.tenant.id, interaction_id=world.interaction.id
                ),
                metadata=bearer(credential),
            ),
            DENIED,
        )
    await refused(
        tenants.tenants.GetTenant(
            pb.GetTenantRequest(tenant_id=a.tenant.id), metadata=bearer(b.access["boss"])
        ),
        DENIED,
    )
    await refused(
        acd.SetPresence(
            apb.SetPresenceRequest(
                tenant_id=a.tenant.id,
                agent_id=a.agents["li.wei"].id,
                presence=apb.PRESENCE_OFFLINE,
            ),
            metadata=bearer(b.access["li"]),
        ),
        DENIED,
    )
    # A customer's session of A names no interaction of B.
    await refused(
        media.GetInteraction(
            mpb.GetInteractionRequest(tenant_id=b.tenant.id, interaction_id=world.interaction.id),
            metadata=bearer(world.customer),
        ),
        DENIED,
    )
    # B's person cannot sign in to A, even with the right password of B.
    await refused(
        tenants.auth.Login(pb.LoginRequest(tenant=a.tenant.name, name="x", password=PASSWORD)),
        REFUSED,
    )


async def test_a_scoped_key_is_refused_outside_its_scope(world: World) -> None:
    a = world.a
    admin = Client(world.channels["tenants"], a.key)
    widget = await admin.keys.CreateApiKey(
        pb.CreateApiKeyRequest(
            tenant_id=a.tenant.id,
            scope=pb.API_KEY_SCOPE_TENANT,
            display_name="chat widget",
            permissions=["interaction:read"],
        ),
        metadata=admin.md,
    )
    md = bearer(widget.secret)
    read = mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=world.interaction.id)
    assert (
        await until(
            lambda: world.stub("media", media_rpc.MediaServiceStub).GetInteraction(
                read, metadata=md
            )
        )
    ).id == world.interaction.id
    for call in (
        world.stub("acd", acd_rpc.AcdServiceStub).QueueStats(
            apb.QueueStatsRequest(tenant_id=a.tenant.id), metadata=md
        ),
        world.stub("recording", recording_rpc.RecordingServiceStub).ListRecordings(
            rpb.ListRecordingsRequest(tenant_id=a.tenant.id), metadata=md
        ),
        world.stub("notification", notification_rpc.NotificationServiceStub).ListDeliveries(
            npb.ListDeliveriesRequest(tenant_id=a.tenant.id), metadata=md
        ),
        admin.users.ListUsers(pb.ListUsersRequest(tenant_id=a.tenant.id), metadata=md),
    ):
        error = await refused(call, DENIED)
        assert "permission" in (error.details() or "")


async def test_a_person_gets_no_role_stronger_than_the_caller(world: World) -> None:
    a = world.a
    c = Client(world.channels["tenants"], a.key)
    hr = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(
            tenant_id=a.tenant.id,
            scope=pb.API_KEY_SCOPE_TENANT,
            permissions=["people:write", "people:read"],
        ),
        metadata=c.md,
    )
    await refused(
        c.users.CreateUser(
            pb.CreateUserRequest(tenant_id=a.tenant.id, user=user("root2")),
            metadata=bearer(hr.secret),
        ),
        DENIED,
    )


# ---------------------------------------------------------------------- tokens


async def _private_key(cell: Cell, tenant_id: str) -> tokens.SigningKey:
    """A tenant's current signing key, read from the cell's database as only the tenants
    service can (a test's way to make tokens that have expired)."""
    conn = await asyncpg.connect(cell.env["LIANLUO_DATABASE_URL"])
    try:
        row = await conn.fetchrow(
            "select kid, jwk, private_pem from tenants.signing_keys where tenant_id = $1 "
            "and retire_at is null order by created_at desc limit 1",
            uuid.UUID(tenant_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return tokens.SigningKey(row["kid"], row["jwk"], None, bytes(row["private_pem"]))


async def test_expired_forged_and_cross_signed_tokens_are_refused(world: World, cell: Cell) -> None:
    a, b = world.a, world.b
    media = world.stub("media", media_rpc.MediaServiceStub)
    read = mpb.GetInteractionRequest(tenant_id=a.tenant.id, interaction_id=world.interaction.id)
    real = await _private_key(cell, a.tenant.id)
    li = a.users["li"].id
    now = datetime.now(UTC)
    expired, _ = tokens.mint(
        real, a.tenant.id, tokens.PERSON, li, timedelta(minutes=5), now - timedelta(minutes=30)
    )
    forged_key = tokens.new_signing_key()
    forged = tokens.SigningKey(real.kid, real.jwk, None, forged_key.private_pem)
    wrong_key, _ = tokens.mint(forged, a.tenant.id, tokens.PERSON, li, timedelta(minutes=5), now)
    b_key = await _private_key(cell, b.tenant.id)
    cross, _ = tokens.mint(b_key, a.tenant.id, tokens.PERSON, li, timedelta(minutes=5), now)
    tampered = a.access["li"][:-4] + ("AAAA" if not a.access["li"].endswith("AAAA") else "BBBB")
    for name, token in [
        ("expired", expired),
        ("signed with a wrong key", wrong_key),
        ("signed with another tenant's key", cross),
        ("tampered", tampered),
    ]:
        for call in (
            media.GetInteraction(read, metadata=bearer(token)),
            world.stub("acd", acd_rpc.AcdServiceStub).SetPresence(
                apb.SetPresenceRequest(
                    tenant_id=a.tenant.id,
                    agent_id=a.agents["li.wei"].id,
                    presence=apb.PRESENCE_OFFLINE,
                ),
                metadata=bearer(token),
            ),
            Client(world.channels["tenants"], "").tenants.GetTenant(
                pb.GetTenantRequest(tenant_id=a.tenant.id), metadata=bearer(token)
            ),
        ):
            error = await refused(call, REFUSED)
            assert error.details(), name


async def test_ended_sessions_and_rotated_out_keys_are_refused_in_every_service(
    world: World, cell: Cell
) -> None:
    b = world.b
    c = Client(world.channels["tenants"], b.key)
    media = world.stub("media", media_rpc.MediaServiceStub)
    acd = world.stub("acd", acd_rpc.AcdServiceStub)

    def calls(token: str) -> list[Callable[[], Awaitable[Any]]]:
        md = bearer(token)
        return [
            lambda: acd.QueueStats(apb.QueueStatsRequest(tenant_id=b.tenant.id), metadata=md),
            lambda: media.GetInteraction(
                mpb.GetInteractionRequest(tenant_id=b.tenant.id, interaction_id=str(uuid.uuid4())),
                metadata=md,
            ),
            lambda: c.tenants.GetTenant(pb.GetTenantRequest(tenant_id=b.tenant.id), metadata=md),
        ]

    old = b.access["boss"]
    for call in calls(old):
        await accepted(call)
    await c.users.EndSessions(
        pb.EndSessionsRequest(tenant_id=b.tenant.id, user_id=b.users["boss"].id), metadata=c.md
    )
    for call in calls(old):
        await refused_eventually(call, REFUSED)
    await refused(c.auth.Refresh(pb.RefreshRequest(refresh_token=b.refresh["boss"])), REFUSED)
    await login(c, b, "boss")
    for call in calls(b.access["boss"]):
        await accepted(call)

    # Rotation with no overlap: tokens the old key signed stop everywhere.
    signed_before = b.access["boss"]
    await c.auth.RotateSigningKey(
        pb.RotateSigningKeyRequest(tenant_id=b.tenant.id, overlap_seconds=0), metadata=c.md
    )
    for call in calls(signed_before):
        await refused_eventually(call, REFUSED)
    await login(c, b, "boss")
    for call in calls(b.access["boss"]):
        await accepted(call)
    published = json.loads((await c.auth.GetJwks(pb.GetJwksRequest(tenant_id=b.tenant.id))).json)
    assert [k["kid"] for k in published["keys"]] == [
        jwt.get_unverified_header(b.access["boss"])["kid"]
    ]


async def test_an_open_stream_ends_when_its_session_ends_or_its_key_is_revoked(
    world: World,
) -> None:
    """A desk left open on a lost laptop stops receiving customers' messages the moment an
    admin ends the person's sessions, and a revoked key's stream ends the same way."""
    b = world.b
    c = Client(world.channels["tenants"], b.key)
    li = b.agents["li.wei"]
    desk = mpb.Join(tenant_id=b.tenant.id, role=P.PARTICIPANT_ROLE_AGENT, subject_id=li.id)
    key = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(
            tenant_id=b.tenant.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="wallboard"
        ),
        metadata=c.md,
    )
    await login(c, b, "li")  # fresh: an earlier test rotated B's signing key
    by_person = await StreamClient.connect(world.channels["media"], b.access["li"], desk)
    by_key = await StreamClient.connect(world.channels["media"], key.secret, desk)
    try:
        await c.users.EndSessions(
            pb.EndSessionsRequest(tenant_id=b.tenant.id, user_id=b.users["li"].id), metadata=c.md
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await by_person.wait_for(lambda f: False, 30)
        assert caught.value.code() == REFUSED, caught.value.details()
        # The key's stream was not touched by the person's sessions ending.
        assert not by_key.done
        await c.keys.RevokeApiKey(
            pb.RevokeApiKeyRequest(tenant_id=b.tenant.id, api_key_id=key.api_key.id),
            metadata=c.md,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await by_key.wait_for(lambda f: False, 30)
        assert caught.value.code() == REFUSED, caught.value.details()
    finally:
        await by_person.close()
        await by_key.close()
    await login(c, b, "li")
    again = await StreamClient.connect(world.channels["media"], b.access["li"], desk)
    await again.close()


async def test_a_refresh_token_works_once_and_its_reuse_ends_every_session(world: World) -> None:
    b = world.b
    c = Client(world.channels["tenants"], b.key)
    await login(c, b, "sup-other")
    first = b.refresh["sup-other"]
    renewed = await c.auth.Refresh(pb.RefreshRequest(refresh_token=first))
    assert renewed.refresh_token != first and renewed.access_token
    await refused(c.auth.Refresh(pb.RefreshRequest(refresh_token=first)), REFUSED)
    # The copy was used: the thief's and the owner's sessions end alike.
    await refused(c.auth.Refresh(pb.RefreshRequest(refresh_token=renewed.refresh_token)), REFUSED)
    await refused_eventually(
        lambda: world.stub("acd", acd_rpc.AcdServiceStub).QueueStats(
            apb.QueueStatsRequest(tenant_id=b.tenant.id), metadata=bearer(renewed.access_token)
        ),
        REFUSED,
    )


async def test_wrong_passwords_lock_the_person_out_with_a_retry_time(world: World) -> None:
    b = world.b
    c = Client(world.channels["tenants"], b.key)
    for _ in range(5):
        await refused(
            c.auth.Login(pb.LoginRequest(tenant=b.tenant.name, name="ana", password="guess" * 3)),
            REFUSED,
        )
    error = await refused(
        c.auth.Login(pb.LoginRequest(tenant=b.tenant.name, name="ana", password=PASSWORD)),
        EXHAUSTED,
    )
    assert 0 < _retry_seconds(error) <= 15 * 60
    # Another person of the tenant still signs in.
    await login(c, b, "li")


def _retry_seconds(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


# ---------------------------------------------------------------------- OpenID Connect


@pytest.fixture
async def issuer() -> AsyncIterator[tuple[str, rsa.RSAPrivateKey]]:
    """A local OpenID Connect issuer: its JWKS over http on 127.0.0.1."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    public.update(kid="issuer-1", use="sig", alg="RS256")

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [public]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", private
    await runner.cleanup()


def _id_token(base: str, private: rsa.RSAPrivateKey, sub: str, aud: str = "lianluo-desk") -> str:
    now = datetime.now(UTC)
    claims = {"iss": base, "aud": aud, "sub": sub, "iat": now, "exp": now + timedelta(minutes=5)}
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": "issuer-1"})


async def test_a_person_signs_in_through_the_tenants_openid_connect_issuer(
    world: World, issuer: tuple[str, rsa.RSAPrivateKey]
) -> None:
    base, private = issuer
    a = world.a
    c = Client(world.channels["tenants"], a.key)
    await c.tenants.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=pb.Tenant(
                id=a.tenant.id,
                oidc=pb.OidcIssuer(issuer=base, audience="lianluo-desk", jwks_uri=f"{base}/jwks"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["oidc"]),
        ),
        metadata=c.md,
    )
    await c.users.UpdateUser(
        pb.UpdateUserRequest(
            tenant_id=a.tenant.id,
            user=pb.User(id=a.users["sup-cards"].id, external_subject="idp|4417"),
            update_mask=field_mask_pb2.FieldMask(paths=["external_subject"]),
        ),
        metadata=c.md,
    )
    got = await c.auth.ExchangeToken(
        pb.ExchangeTokenRequest(tenant=a.tenant.name, id_token=_id_token(base, private, "idp|4417"))
    )
    assert got.user.name == "sup-cards"
    figures = await until(
        lambda: world.stub("acd", acd_rpc.AcdServiceStub).QueueStats(
            apb.QueueStatsRequest(tenant_id=a.tenant.id), metadata=bearer(got.access_token)
        )
    )
    assert [q.queue for q in figures.queues] == ["cards"]
    await refused(
        c.auth.ExchangeToken(
            pb.ExchangeTokenRequest(
                tenant=a.tenant.name, id_token=_id_token(base, private, "idp|4417", aud="other")
            )
        ),
        REFUSED,
    )
    await refused(
        c.auth.ExchangeToken(
            pb.ExchangeTokenRequest(
                tenant=a.tenant.name, id_token=_id_token(base, private, "idp|nobody")
            )
        ),
        DENIED,
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await refused(
        c.auth.ExchangeToken(
            pb.ExchangeTokenRequest(
                tenant=a.tenant.name, id_token=_id_token(base, stranger, "idp|4417")
            )
        ),
        REFUSED,
    )


# ---------------------------------------------------------------------- quotas


def _quota_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            return failure.violations[0].quota_id
    raise AssertionError("no QuotaFailure")


async def _set_quotas(admin: Client, tenant_id: str, quotas: pb.Quotas) -> None:
    await admin.tenants.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=pb.Tenant(id=tenant_id, quotas=quotas),
            update_mask=field_mask_pb2.FieldMask(paths=["quotas"]),
        ),
        metadata=admin.md,
    )


async def test_a_burst_over_one_tenants_quota_is_throttled_and_another_tenant_is_served(
    world: World,
) -> None:
    admin = Client(world.channels["tenants"], ADMIN_KEY)
    noisy, noisy_client = await onboard(admin)
    calm, calm_client = await onboard(admin)
    rate = 20
    await _set_quotas(admin, noisy.id, pb.Quotas(api_calls_per_second=rate, events_per_second=5))
    await noisy_client.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=noisy.id, queue=queue()), metadata=noisy_client.md
    )
    acd = world.stub("acd", acd_rpc.AcdServiceStub)

    def stats(t: pb.Tenant, c: Client) -> Awaitable[Any]:
        return acd.QueueStats(apb.QueueStatsRequest(tenant_id=t.id), metadata=c.md)

    # The queue was created after the quota: once the ACD knows it, it knows the quota.
    await until(
        lambda: acd.QueueStats(
            apb.QueueStatsRequest(tenant_id=noisy.id, queues=["cards"]), metadata=noisy_client.md
        )
    )
    await until(lambda: stats(calm, calm_client))
    await asyncio.sleep(1.1)  # a full bucket
    loop = asyncio.get_running_loop()
    started = loop.time()
    burst = [stats(noisy, noisy_client) for _ in range(300)]
    steady = [stats(calm, calm_client) for _ in range(100)]
    results = await asyncio.gather(*burst, *steady, return_exceptions=True)
    elapsed = loop.time() - started
    noisy_results, calm_results = results[:300], results[300:]
    throttled = [r for r in noisy_results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(e.code() == EXHAUSTED for e in throttled), {e.code() for e in throttled}
    served = len(noisy_results) - len(throttled)
    # A bucket of one second's worth, refilled at the rate while the burst lasted.
    assert 0 < served <= rate + rate * elapsed + 1, (served, elapsed)
    assert len(throttled) >= 300 - (rate + rate * elapsed + 1)
    assert 0 < _retry_seconds(throttled[0]) <= 1
    assert _quota_of(throttled[0]) == "api_calls_per_second"
    failures = [r for r in calm_results if isinstance(r, BaseException)]
    assert failures == [], "the calm tenant lost calls to the noisy one's burst"

    # Events: five per second, whatever the calls allow.
    notification = world.stub("notification", notification_rpc.NotificationServiceStub)
    await asyncio.sleep(1.1)
    published = await asyncio.gather(
        *[
            notification.PublishBusinessEvent(
                npb.PublishBusinessEventRequest(
                    tenant_id=noisy.id, type="spend", customer_id="c1", metrics={"amount": 1}
                ),
                metadata=noisy_client.md,
            )
            for _ in range(15)
        ],
        return_exceptions=True,
    )
    over = [r for r in published if isinstance(r, grpc.aio.AioRpcError)]
    assert over and all(e.code() == EXHAUSTED for e in over)
    assert {_quota_of(e) for e in over} == {"events_per_second"}
    assert len(published) - len(over) <= 5 + 5 * 2  # the burst, plus what two seconds refill


async def test_interactions_and_agents_over_the_quota_are_refused(world: World) -> None:
    admin = Client(world.channels["tenants"], ADMIN_KEY)
    t, c = await onboard(admin)
    await _set_quotas(admin, t.id, pb.Quotas(max_concurrent_interactions=2, max_agents=2))
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    for name in ("one", "two"):
        await c.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=agent(name)), metadata=c.md
        )
    error = await refused(
        c.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=agent("three")), metadata=c.md
        ),
        EXHAUSTED,
    )
    assert _quota_of(error) == "max_agents"
    media = world.stub("media", media_rpc.MediaServiceStub)

    def start() -> Awaitable[mpb.StartInteractionResponse]:
        return media.StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=t.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                queue="cards",
            ),
            metadata=c.md,
        )

    first = await until(start)
    await start()
    error = await refused(start(), EXHAUSTED)
    assert _quota_of(error) == "max_concurrent_interactions"
    await media.End(
        mpb.EndRequest(tenant_id=t.id, interaction_id=first.interaction.id), metadata=c.md
    )
    await start()  # one ended, so one more may start


# ---------------------------------------------------------------------- every RPC, every service

Case = tuple[str, Callable[[World], Awaitable[Any]], grpc.StatusCode]


def _b(w: World) -> tuple[tuple[str, str], ...]:
    return bearer(w.b.key)


async def _connect(w: World, tenant_id: str) -> None:
    join = mpb.Join(
        tenant_id=tenant_id,
        interaction_id=w.interaction.id,
        role=P.PARTICIPANT_ROLE_CUSTOMER,
        subject_id="mei",
    )
    stream = StreamClient(w.channels["media"], w.b.key, join)
    try:
        await stream.wait_for(lambda f: f.WhichOneof("frame") == "joined", 15)
    finally:
        await stream.close()


def _media(w: World) -> Any:
    return w.stub("media", media_rpc.MediaServiceStub)


def _acd(w: World) -> Any:
    return w.stub("acd", acd_rpc.AcdServiceStub)


def _recording(w: World) -> Any:
    return w.stub("recording", recording_rpc.RecordingServiceStub)


def _notification(w: World) -> Any:
    return w.stub("notification", notification_rpc.NotificationServiceStub)


def _ivr(w: World) -> Any:
    return w.stub("ivr", ivr_rpc.IvrServiceStub)


def _next_year() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=365))
    return stamp


def _when(days: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return stamp


def _two(rpc_name: str, call: Callable[[World, str], Awaitable[Any]]) -> list[Case]:
    """Naming A's tenant is refused; naming A's resource under B is not found."""
    return [
        (rpc_name, lambda w: call(w, w.a.tenant.id), DENIED),
        (rpc_name, lambda w: call(w, w.b.tenant.id), MISSING),
    ]


CELL_CASES: list[Case] = [
    (
        "StartInteraction",
        lambda w: _media(w).StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=w.a.tenant.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                queue="cards",
            ),
            metadata=_b(w),
        ),
        DENIED,
    ),
    *_two(
        "Send",
        lambda w, t: _media(w).Send(
            mpb.SendRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                participant_id=w.interaction.participants[0].id,
                content=mpb.MessageContent(text="hi"),
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "AddMedia",
        lambda w, t: _media(w).AddMedia(
            mpb.AddMediaRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                participant_id=w.interaction.participants[0].id,
                media=common.MEDIA_TYPE_VIDEO,
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "RemoveMedia",
        lambda w, t: _media(w).RemoveMedia(
            mpb.RemoveMediaRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                media_leg_id=w.interaction.media[0].id,
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "Transfer",
        lambda w, t: _media(w).Transfer(
            mpb.TransferRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                transfer=mpb.Transfer(participant_id="x", queue="cards"),
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "End",
        lambda w, t: _media(w).End(
            mpb.EndRequest(tenant_id=t, interaction_id=w.interaction.id), metadata=_b(w)
        ),
    ),
    *_two(
        "GetInteraction",
        lambda w, t: _media(w).GetInteraction(
            mpb.GetInteractionRequest(tenant_id=t, interaction_id=w.interaction.id),
            metadata=_b(w),
        ),
    ),
    *_two("Connect", _connect),
    (
        "SetPresence",
        lambda w: _acd(w).SetPresence(
            apb.SetPresenceRequest(
                tenant_id=w.a.tenant.id,
                agent_id=w.a.agents["li.wei"].id,
                presence=apb.PRESENCE_OFFLINE,
            ),
            metadata=_b(w),
        ),
        DENIED,
    ),
    *_two(
        "Recommend",
        lambda w, t: _acd(w).Recommend(
            apb.RecommendRequest(tenant_id=t, interaction_id=w.other.id), metadata=_b(w)
        ),
    ),
    *_two(
        "RespondToOffer",
        lambda w, t: _acd(w).RespondToOffer(
            apb.RespondToOfferRequest(
                tenant_id=t,
                offer_id=w.offer.id,
                agent_id=w.b.agents["li.wei"].id if t == w.b.tenant.id else w.offer.agent_id,
                accept=False,
            ),
            metadata=_b(w),
        ),
    ),
    (
        "QueueStats",
        lambda w: _acd(w).QueueStats(
            apb.QueueStatsRequest(tenant_id=w.a.tenant.id), metadata=_b(w)
        ),
        DENIED,
    ),
    (
        "ListAgentPresence",
        lambda w: _acd(w).ListAgentPresence(
            apb.ListAgentPresenceRequest(tenant_id=w.a.tenant.id), metadata=_b(w)
        ),
        DENIED,
    ),
    (
        "Report",
        lambda w: _acd(w).Report(
            apb.ReportRequest(
                tenant_id=w.a.tenant.id,
                start_time=_when(-1),
                end_time=_when(0),
                group_by=apb.REPORT_GROUPING_QUEUE,
            ),
            metadata=_b(w),
        ),
        DENIED,
    ),
    *_two(
        "TakeOver",
        lambda w, t: _media(w).TakeOver(
            mpb.TakeOverRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                participant_id=w.interaction.participants[0].id,
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "ScheduleCallback",
        lambda w, t: _media(w).ScheduleCallback(
            mpb.ScheduleCallbackRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                participant_id=w.interaction.participants[0].id,
                callback_number="+8613800000000",
                due_time=_when(1),
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "Rate",
        lambda w, t: _media(w).Rate(
            mpb.RateRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                participant_id=w.interaction.participants[0].id,
                rating=mpb.Rating(score=5),
            ),
            metadata=_b(w),
        ),
    ),
    (
        "ValidateFlow",
        lambda w: _ivr(w).ValidateFlow(
            ipb.ValidateFlowRequest(tenant_id=w.a.tenant.id, flow=pb.Flow(name="x")),
            metadata=_b(w),
        ),
        DENIED,
    ),
    (
        "SimulateFlow",
        lambda w: _ivr(w).SimulateFlow(
            ipb.SimulateFlowRequest(tenant_id=w.a.tenant.id, flow=pb.Flow(name="x")),
            metadata=_b(w),
        ),
        DENIED,
    ),
    *_two(
        "GetRecording",
        lambda w, t: _recording(w).GetRecording(
            rpb.GetRecordingRequest(tenant_id=t, interaction_id=w.interaction.id),
            metadata=_b(w),
        ),
    ),
    (
        "ListRecordings",
        lambda w: _recording(w).ListRecordings(
            rpb.ListRecordingsRequest(tenant_id=w.a.tenant.id), metadata=_b(w)
        ),
        DENIED,
    ),
    *_two(
        "Export",
        lambda w, t: _recording(w).Export(
            rpb.ExportRequest(tenant_id=t, interaction_id=w.interaction.id), metadata=_b(w)
        ),
    ),
    *_two(
        "VerifyRecording",
        lambda w, t: _recording(w).VerifyRecording(
            rpb.VerifyRecordingRequest(tenant_id=t, interaction_id=w.interaction.id),
            metadata=_b(w),
        ),
    ),
    *_two(
        "SetLegalHold",
        lambda w, t: _recording(w).SetLegalHold(
            rpb.SetLegalHoldRequest(
                tenant_id=t, interaction_id=w.interaction.id, held=True, reason="x"
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "SetRetention",
        lambda w, t: _recording(w).SetRetention(
            rpb.SetRetentionRequest(
                tenant_id=t, interaction_id=w.interaction.id, retain_until=_next_year()
            ),
            metadata=_b(w),
        ),
    ),
    (
        "Notify",
        lambda w: _notification(w).Notify(
            npb.NotifyRequest(tenant_id=w.a.tenant.id, template="x"), metadata=_b(w)
        ),
        DENIED,
    ),
    (
        "PublishBusinessEvent",
        lambda w: _notification(w).PublishBusinessEvent(
            npb.PublishBusinessEventRequest(tenant_id=w.a.tenant.id, type="spend"),
            metadata=_b(w),
        ),
        DENIED,
    ),
    (
        "GetDelivery",
        lambda w: _notification(w).GetDelivery(
            npb.GetDeliveryRequest(tenant_id=w.a.tenant.id, delivery_id=str(uuid.uuid4())),
            metadata=_b(w),
        ),
        DENIED,
    ),
    (
        "ListDeliveries",
        lambda w: _notification(w).ListDeliveries(
            npb.ListDeliveriesRequest(tenant_id=w.a.tenant.id), metadata=_b(w)
        ),
        DENIED,
    ),
    *_two(
        "GetCustomer",
        lambda w, t: w.stub("gateway", gateway_rpc.CustomerServiceStub).GetCustomer(
            gpb.GetCustomerRequest(tenant_id=t, customer_id=str(uuid.uuid4())), metadata=_b(w)
        ),
    ),
    *_two(
        "LinkIdentity",
        lambda w, t: w.stub("gateway", gateway_rpc.CustomerServiceStub).LinkIdentity(
            gpb.LinkIdentityRequest(
                tenant_id=t,
                customer_id=str(uuid.uuid4()),
                kind=gpb.IDENTITY_KIND_EMAIL,
                value="a@example.com",
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "ListConversations",
        lambda w, t: w.stub("gateway", gateway_rpc.CustomerServiceStub).ListConversations(
            gpb.ListConversationsRequest(tenant_id=t, customer_id=str(uuid.uuid4())),
            metadata=_b(w),
        ),
    ),
    (
        "ResolveCustomer",
        lambda w: w.stub("gateway", gateway_rpc.CustomerServiceStub).ResolveCustomer(
            gpb.ResolveCustomerRequest(
                tenant_id=w.a.tenant.id, kind=gpb.IDENTITY_KIND_PHONE, value="+8613900009999"
            ),
            metadata=_b(w),
        ),
        DENIED,
    ),
    *_two(
        "FindCustomer",
        lambda w, t: w.stub("gateway", gateway_rpc.CustomerServiceStub).FindCustomer(
            gpb.FindCustomerRequest(
                tenant_id=t, kind=gpb.IDENTITY_KIND_WEB_VISITOR, value="v-" + "0" * 32
            ),
            metadata=_b(w),
        ),
    ),
    (
        "ListInteractions",
        lambda w: _media(w).ListInteractions(
            mpb.ListInteractionsRequest(tenant_id=w.a.tenant.id), metadata=_b(w)
        ),
        DENIED,
    ),
    *_two(
        "UploadAttachment",
        lambda w, t: w.stub("gateway", gateway_rpc.AttachmentServiceStub).UploadAttachment(
            gpb.UploadAttachmentRequest(
                tenant_id=t,
                interaction_id=w.interaction.id,
                name="a.txt",
                content_type="text/plain",
                content=b"hello",
            ),
            metadata=_b(w),
        ),
    ),
    *_two(
        "GetDownloadLink",
        lambda w, t: w.stub("gateway", gateway_rpc.AttachmentServiceStub).GetDownloadLink(
            gpb.GetDownloadLinkRequest(tenant_id=t, attachment_id=str(uuid.uuid4())),
            metadata=_b(w),
        ),
    ),
    (
        "SendNotice",
        lambda w: w.stub("gateway", gateway_rpc.NoticeServiceStub).SendNotice(
            gpb.SendNoticeRequest(
                tenant_id=w.a.tenant.id,
                delivery_id=str(uuid.uuid4()),
                phone_number="+8613900009999",
                body="Your card expires soon.",
            ),
            metadata=_b(w),
        ),
        DENIED,
    ),
    (
        "PostToInbox",
        lambda w: w.stub("gateway", gateway_rpc.NoticeServiceStub).PostToInbox(
            gpb.PostToInboxRequest(
                tenant_id=w.a.tenant.id,
                delivery_id=str(uuid.uuid4()),
                customer_id="mei",
                body="Your statement is ready.",
            ),
            metadata=_b(w),
        ),
        DENIED,
    ),
    (
        "ListInbox",
        lambda w: w.stub("gateway", gateway_rpc.NoticeServiceStub).ListInbox(
            gpb.ListInboxRequest(tenant_id=w.a.tenant.id, customer_id="mei"), metadata=_b(w)
        ),
        DENIED,
    ),
    *_two(
        "MarkInboxRead",
        lambda w, t: w.stub("gateway", gateway_rpc.NoticeServiceStub).MarkInboxRead(
            gpb.MarkInboxReadRequest(tenant_id=t, customer_id="mei", notice_id=str(uuid.uuid4())),
            metadata=_b(w),
        ),
    ),
    (
        "LocateTenant",
        lambda w: w.stub("edge", edge_rpc.EdgeServiceStub).LocateTenant(
            epb.LocateTenantRequest(tenant_id=w.a.tenant.id), metadata=_b(w)
        ),
        DENIED,
    ),
]


def test_every_rpc_of_every_service_has_an_isolation_case() -> None:
    from integration.test_isolation import CASES as TENANTS_CASES

    protos = [pb, mpb, apb, ipb, rpb, npb, epb, gpb]
    every = {
        f"{s.name}/{m.name}"
        for p in protos
        for s in p.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    by_name = {m.split("/")[1]: m for m in every}
    assert len(by_name) == len(every), "two services share an RPC name"
    covered = {name for name, _, _ in CELL_CASES} | {name for name, _, _ in TENANTS_CASES}
    assert covered == set(by_name), sorted(set(by_name) ^ covered)


@pytest.mark.parametrize(
    ("rpc", "call", "code"), CELL_CASES, ids=[f"{n}-{c.name}" for n, _, c in CELL_CASES]
)
async def test_b_reaches_nothing_of_a_in_any_service(
    world: World, rpc: str, call: Callable[[World], Awaitable[Any]], code: grpc.StatusCode
) -> None:
    async with asyncio.timeout(30):
        while True:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(world)
            if caught.value.code() != REFUSED:  # B's key not yet known to this service
                break
            await asyncio.sleep(0.2)
    assert caught.value.code() == code, f"{rpc}: {caught.value.code()} {caught.value.details()}"


# ---------------------------------------------------------------------- terminal clients


def _state(tmp_path: Path, cell: Cell, side: Side) -> Path:
    (tmp_path / "cell.json").write_text(
        json.dumps({name: cell.address(name) for name in LOCAL_SERVICES})
    )
    demo = {"tenant_id": side.tenant.id, "tenant": side.tenant.name, "key": side.key}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    return tmp_path


async def test_the_agent_terminal_signs_in_as_a_person(
    world: World, cell: Cell, tmp_path: Path
) -> None:
    state = _state(tmp_path, cell, world.b)
    env = {**os.environ, "LIANLUO_STATE_DIR": str(state), "LIANLUO_PASSWORD": "wrong" * 3}
    wrong = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lianluo.cli",
        "agent",
        "sup-cards",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(wrong.communicate(), 60)
    assert wrong.returncode == 1
    assert "UNAUTHENTICATED: wrong tenant, name or password" in err.decode()
    env["LIANLUO_PASSWORD"] = PASSWORD
    right = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lianluo.cli",
        "agent",
        "li",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert right.stdout is not None
        line = await asyncio.wait_for(right.stdout.readline(), 60)
        # Printed once Li's presence is set and his desk is open, both with his own token.
        assert b"is available; waiting for offers" in line, line
    finally:
        right.terminate()
        await asyncio.wait_for(right.wait(), 30)


async def test_a_persons_changes_are_in_the_audit_log_and_it_exports(
    world: World, cell: Cell
) -> None:
    a = world.a
    boss = Client(world.channels["tenants"], a.access["boss"])
    made = await boss.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=a.tenant.id, agent=agent("zhao.min")), metadata=boss.md
    )
    exported = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lianluo.cli",
        "audit",
        cell.address("tenants"),
        "--tenant",
        a.tenant.id,
        env={**os.environ, "LIANLUO_KEY": a.key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(exported.communicate(), 60)
    assert exported.returncode == 0, err.decode()
    entries = [json.loads(line) for line in out.decode().splitlines()]
    mine = [e for e in entries if e.get("resourceId") == made.id]
    assert len(mine) == 1
    assert mine[0]["userId"] == a.users["boss"].id and "apiKeyId" not in mine[0]
    assert mine[0]["method"] == "/lianluo.tenants.v1.AgentService/CreateAgent"
    assert mine[0]["peer"].startswith("ipv4:127.0.0.1:")
    people = [e for e in entries if e["kind"] == "user"]
    assert len(people) >= len(a.users), "adding people is audited too"
    # A person without audit:read cannot export it.
    refused_export = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lianluo.cli",
        "audit",
        cell.address("tenants"),
        "--tenant",
        a.tenant.id,
        env={**os.environ, "LIANLUO_KEY": a.access["li"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(refused_export.communicate(), 60)
    assert refused_export.returncode == 1 and "PERMISSION_DENIED" in err.decode()


async def test_an_agent_finds_colleagues_in_the_directory_and_no_more(world: World) -> None:
    a, b = world.a, world.b
    agents = Client(world.channels["tenants"], "").agents
    li = bearer(a.access["li"])

    async def names(query: str, credential: tuple[tuple[str, str], ...] = li) -> list[str]:
        found = await agents.SearchDirectory(
            pb.SearchDirectoryRequest(tenant_id=a.tenant.id, query=query), metadata=credential
        )
        return [e.name for e in found.entries]

    # By name, by skill, by expertise; case does not matter, and a wildcard is a character.
    # (Other tests of the module add agents of their own, with the factory's skills.)
    assert await names("ANA") == ["ana.silva"]
    by_expertise, by_skill = await names("card_lost"), await names("CARDS")
    assert {"ana.silva", "li.wei"} <= set(by_expertise) and by_expertise == sorted(by_expertise)
    assert {"ana.silva", "li.wei"} <= set(by_skill)
    assert await names("%") == []
    assert await names("li.w", bearer(a.access["sup-cards"])) == ["li.wei"]
    # The directory shows who people are, not how they are configured.
    found = await agents.SearchDirectory(
        pb.SearchDirectoryRequest(tenant_id=a.tenant.id, query="ana"), metadata=li
    )
    assert list(found.entries[0].expertise) == ["card_lost"]
    assert list(found.entries[0].skills) == ["cards"]
    # An agent still may not read the agents' configuration.
    await refused(
        agents.ListAgents(pb.ListAgentsRequest(tenant_id=a.tenant.id), metadata=li), DENIED
    )
    await refused(
        agents.SearchDirectory(
            pb.SearchDirectoryRequest(tenant_id=a.tenant.id, query=" "), metadata=li
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # Another tenant's person sees only their own colleagues.
    await refused(
        agents.SearchDirectory(
            pb.SearchDirectoryRequest(tenant_id=a.tenant.id, query="li"),
            metadata=bearer(b.access["li"]),
        ),
        DENIED,
    )
    own = await agents.SearchDirectory(
        pb.SearchDirectoryRequest(tenant_id=b.tenant.id, query="li.w"),
        metadata=bearer(b.access["li"]),
    )
    assert [e.agent_id for e in own.entries] == [b.agents["li.wei"].id]
    await refused(
        agents.SearchDirectory(
            pb.SearchDirectoryRequest(tenant_id=a.tenant.id, query="li"),
            metadata=bearer(world.customer),
        ),
        DENIED,
    )
