"""A tenant moves between two cells during a conversation.

The tenant is drained in the first cell (suspended: its keys and people are refused, and what
its services had to publish is published), its rows are copied to the second cell's database
(lianluo.runtime.tenant_copy), its configuration is published there and it is resumed. The
customer and the agent then connect to the second cell with the same credentials and go on
with the same conversation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from cell_support import AgentAtWork, retrying, tenant_with_queue
from conftest import ADMIN, ADMIN_KEY, Stack, running_cell
from factories import Client, agent, onboard, user

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack import infra
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, StreamClient
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.runtime.tenant_copy import CopyRefused, copy_tenant, tenant_tables
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def cells(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cell, Cell]]:
    run = uuid.uuid4().hex[:8]
    first, second = (Path(tmp_path_factory.mktemp(name)) for name in ("cell_a", "cell_b"))
    with (
        running_cell(stack, first, f"move_a_{run}") as a,
        running_cell(stack, second, f"move_b_{run}") as b,
    ):
        yield a, b


async def _rows(conn: asyncpg.Connection, tenant_id: str) -> dict[str, list[str]]:
    """Every row of the tenant, by table, as JSON text, sorted."""
    found = {}
    for table in await tenant_tables(conn):
        rows = await conn.fetch(
            f"select to_jsonb(t)::text from {table.qualified} t where {table.of_tenant}",
            tenant_id,
        )
        found[table.key] = sorted(r[0] for r in rows)
    return found


async def _published(cell: Cell) -> None:
    """Until the cell's outboxes are empty: everything its services had to say is said."""
    conn = await asyncpg.connect(cell.env["LIANLUO_DATABASE_URL"])
    try:
        schemas = [r[0] for r in await conn.fetch(
            "select table_schema from information_schema.tables where table_name = 'outbox'"
        )]  # fmt: skip
        count = " + ".join(f'(select count(*) from "{s}".outbox)' for s in schemas)
        async with asyncio.timeout(30):
            while await conn.fetchval(f"select {count}"):
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def test_a_tenant_moves_to_another_cell_during_a_conversation_which_goes_on(
    cells: tuple[Cell, Cell], stack: Stack
) -> None:
    a, b = cells
    tch_a = grpc.aio.insecure_channel(a.address("tenants"))
    tch_b = grpc.aio.insecure_channel(b.address("tenants"))
    tenant, client = await tenant_with_queue(tch_a)
    # Another tenant of the first cell, which stays where it is.
    other, _ = await onboard(Client(tch_a, ADMIN_KEY))
    await client.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=tenant.id, agent=agent("li.wei")), metadata=client.md
    )
    await client.users.CreateUser(
        pb.CreateUserRequest(
            tenant_id=tenant.id, user=user("li", pb.ROLE_AGENT, agent="li.wei"), password=PASSWORD
        ),
        metadata=client.md,
    )
    session = await Session.login(tch_a, tenant.name, "li", PASSWORD)
    li = await retrying(lambda: AgentAtWork(a, session, tenant.id).start())

    # A customer writes in the first cell, and Li answers there.
    media_a = grpc.aio.insecure_channel(a.address("media"))
    started = await retrying(
        lambda: media_rpc.MediaServiceStub(media_a).StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=tenant.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                queue="cards",
                customer=mpb.Customer(id="cust-1"),
                request_id="move-1",
            ),
            metadata=client.md,
        )
    )
    interaction_id = started.interaction.id
    customer_join = mpb.Join(
        tenant_id=tenant.id,
        interaction_id=interaction_id,
        role=mpb.PARTICIPANT_ROLE_CUSTOMER,
        subject_id="cust-1",
    )
    customer = await StreamClient.connect(media_a, client.key, customer_join)
    customer.send_text("My card was swallowed by the machine.", "c1")
    talk = await li.answer(interaction_id)
    await talk.wait_for(lambda f: f.message.content.text.startswith("My card was swallowed"))
    talk.send_text("I am sorry. Which machine was it?", "a1")
    said = await customer.wait_for(lambda f: f.message.content.text.startswith("I am sorry"))

    # Drain: the tenant is suspended in the first cell, and what it had to publish is out.
    admin_a = rpc.TenantServiceStub(tch_a)
    await admin_a.SuspendTenant(
        pb.SuspendTenantRequest(tenant_id=tenant.id, reason="moving to another cell"),
        metadata=ADMIN,
    )
    await _published(a)
    for stream in (customer, talk):
        await stream.close()
    await li.stop()

    # Copy: every row of the tenant, and nothing of the other tenant.
    source = await asyncpg.connect(a.env["LIANLUO_DATABASE_URL"])
    target = await asyncpg.connect(b.env["LIANLUO_DATABASE_URL"])
    try:
        copied = await copy_tenant(source, target, tenant.id)
        assert copied["media.interactions"] == 1 and copied["tenants.resources"] >= 4, copied
        assert await _rows(target, tenant.id) == await _rows(source, tenant.id)
        assert not any((await _rows(target, other.id)).values())
        # Copied once: a second copy would double the tenant, and is refused.
        with pytest.raises(CopyRefused, match="already has"):
            await copy_tenant(source, target, tenant.id)
        # A database at other migrations is refused before anything is written.
        empty = f"move_empty_{uuid.uuid4().hex[:8]}"
        infra.create_database(stack.config.database_url, empty)
        blank = await asyncpg.connect(stack.database_url.rsplit("/", 1)[0] + f"/{empty}")
        with pytest.raises(CopyRefused, match="migrations"):
            await copy_tenant(source, blank, tenant.id)
        await blank.close()
    finally:
        await source.close()
        await target.close()

    # The second cell serves the tenant: it is resumed there, and its configuration published.
    admin_b = rpc.TenantServiceStub(tch_b)
    await admin_b.ResumeTenant(pb.ResumeTenantRequest(tenant_id=tenant.id), metadata=ADMIN)
    published = await admin_b.PublishTenantConfig(
        pb.PublishTenantConfigRequest(tenant_id=tenant.id), metadata=ADMIN
    )
    assert published.published >= 6  # the tenant, its queue, agent and person, key, signing key

    # The same people, with the same key and the same sign-in, go on in the second cell.
    media_b = grpc.aio.insecure_channel(b.address("media"))
    customer = await StreamClient.connect(
        media_b,
        client.key,
        mpb.Join(
            tenant_id=tenant.id,
            interaction_id=interaction_id,
            role=mpb.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="cust-1",
            last_seen_sequence=said.sequence,
        ),
    )
    talk = await StreamClient.connect(
        media_b,
        await session.token(),
        mpb.Join(
            tenant_id=tenant.id,
            interaction_id=interaction_id,
            role=mpb.PARTICIPANT_ROLE_AGENT,
            subject_id=session.user.agent_id,
        ),
    )
    # Li's desk shows the conversation so far, from the second cell.
    await talk.wait_for(lambda f: f.message.content.text.startswith("I am sorry"))
    customer.send_text("The one at the station.", "c2")
    heard = await talk.wait_for(lambda f: f.message.content.text == "The one at the station.")
    assert heard.sequence > said.sequence, "the timeline goes on where it was"
    talk.send_text("I have blocked it; a new card is on its way.", "a2")
    await customer.wait_for(lambda f: f.message.content.text.startswith("I have blocked it"))
    it = await media_rpc.MediaServiceStub(media_b).GetInteraction(
        mpb.GetInteractionRequest(tenant_id=tenant.id, interaction_id=interaction_id),
        metadata=client.md,
    )
    assert it.state == mpb.INTERACTION_STATE_CONNECTED
    assert [p.subject_id for p in it.participants if p.role == mpb.PARTICIPANT_ROLE_AGENT] == [
        session.user.agent_id
    ]
    for stream in (customer, talk):
        await stream.close()
    for channel in (tch_a, tch_b, media_a, media_b):
        await channel.close()
