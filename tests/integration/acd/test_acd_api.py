"""The ACD's gRPC API: tenant isolation, clear errors, and Recommend, which ranks and explains
without offering anything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from acd_support import Acd, Decisions, Requests, running_acd
from conftest import Served, Stack
from grpc_errors import bad_fields, fails

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
NOVICE = {"skills": [common.SkillLevel(skill="cards", level=1)]}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
async def acd_stack(
    stack: Stack, tenants_service: Served
) -> AsyncIterator[tuple[Acd, Decisions, Requests]]:
    async with running_acd(stack, tenants_service.address) as running:
        yield running


async def test_a_tenant_key_cannot_touch_another_tenant(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, _, _ = acd_stack
    mine = await acd_.tenant({"agent": {}})
    other = await acd_.tenant({"agent": {}})
    stub, md, tid = other.acd, other.md, mine.id
    agent_id = mine.agents["agent"].id
    denied = grpc.StatusCode.PERMISSION_DENIED
    await fails(
        stub.SetPresence(
            acd.SetPresenceRequest(
                tenant_id=tid, agent_id=agent_id, presence=acd.PRESENCE_AVAILABLE
            ),
            metadata=md,
        ),
        denied,
    )
    await fails(
        stub.RespondToOffer(
            acd.RespondToOfferRequest(
                tenant_id=tid, offer_id=UNKNOWN_ID, agent_id=agent_id, accept=True
            ),
            metadata=md,
        ),
        denied,
    )
    await fails(
        stub.Recommend(
            acd.RecommendRequest(
                tenant_id=tid, requirements=common.RoutingRequirements(queue="cards")
            ),
            metadata=md,
        ),
        denied,
    )
    await fails(stub.QueueStats(acd.QueueStatsRequest(tenant_id=tid), metadata=md), denied)
    # The owner's own key is served, and nothing of the foreign calls took effect.
    assert (await mine.stats()).agents_available == 0


async def test_bad_requests_name_the_field_and_unknown_ids_are_not_found(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, _, _ = acd_stack
    t = await acd_.tenant({"agent": {}})
    agent_id = t.agents["agent"].id
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND

    error = await fails(
        t.acd.SetPresence(acd.SetPresenceRequest(tenant_id=t.id, agent_id=agent_id), metadata=t.md),
        invalid,
    )
    assert bad_fields(error) == {"presence"}
    too_many = pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=9)
    untaken = pb.MediaCapacity(media=common.MEDIA_TYPE_VIDEO, max_concurrent=1)
    error = await fails(
        t.acd.SetPresence(
            acd.SetPresenceRequest(
                tenant_id=t.id,
                agent_id=agent_id,
                presence=acd.PRESENCE_AVAILABLE,
                capacity=[too_many, untaken],
            ),
            metadata=t.md,
        ),
        invalid,
    )
    assert bad_fields(error) == {"capacity[0].max_concurrent", "capacity[1].media"}
    await fails(
        t.acd.SetPresence(
            acd.SetPresenceRequest(
                tenant_id=t.id, agent_id=UNKNOWN_ID, presence=acd.PRESENCE_AVAILABLE
            ),
            metadata=t.md,
        ),
        missing,
    )
    error = await fails(
        t.acd.RespondToOffer(acd.RespondToOfferRequest(tenant_id=t.id), metadata=t.md), invalid
    )
    assert bad_fields(error) == {"offer_id", "agent_id"}
    await fails(
        t.acd.RespondToOffer(
            acd.RespondToOfferRequest(
                tenant_id=t.id, offer_id=UNKNOWN_ID, agent_id=agent_id, accept=True
            ),
            metadata=t.md,
        ),
        missing,
    )
    error = await fails(
        t.acd.QueueStats(acd.QueueStatsRequest(tenant_id=t.id, window_seconds=-1), metadata=t.md),
        invalid,
    )
    assert bad_fields(error) == {"window_seconds"}
    await fails(
        t.acd.QueueStats(acd.QueueStatsRequest(tenant_id=t.id, queues=["nope"]), metadata=t.md),
        missing,
    )
    error = await fails(
        t.acd.Recommend(acd.RecommendRequest(tenant_id=t.id, max_candidates=101), metadata=t.md),
        invalid,
    )
    assert bad_fields(error) == {"max_candidates", "requirements.queue"}
    await fails(
        t.acd.Recommend(
            acd.RecommendRequest(tenant_id=t.id, interaction_id="not-waiting"), metadata=t.md
        ),
        missing,
    )


async def test_recommend_ranks_and_explains_without_offering(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, _ = acd_stack
    t = await acd_.tenant({"first": {}, "second": {}, "novice": NOVICE})
    for i, name in enumerate(("first", "second")):
        await t.set_presence(name)
        await t.until_stats(lambda f, n=i + 1: f.agents_available >= n)

    response = await t.acd.Recommend(
        acd.RecommendRequest(
            tenant_id=t.id,
            requirements=common.RoutingRequirements(queue="cards", language="zh-CN"),
            max_candidates=1,
        ),
        metadata=t.md,
    )
    explanation = response.explanation
    assert explanation.queue == "cards"
    assert [t.agent_name(c.agent_id) for c in explanation.candidates] == ["first"]
    assert explanation.candidates[0].rank == 1
    assert "longest_idle" in [f.name for f in explanation.candidates[0].features]
    assert {t.agent_name(e.agent_id): e.filter for e in explanation.excluded} == {
        "novice": acd.HARD_FILTER_PRESENCE
    }

    french = await t.acd.Recommend(
        acd.RecommendRequest(
            tenant_id=t.id, requirements=common.RoutingRequirements(queue="cards", language="fr")
        ),
        metadata=t.md,
    )
    assert list(french.explanation.candidates) == []
    assert {e.filter for e in french.explanation.excluded} == {
        acd.HARD_FILTER_LANGUAGE,
        acd.HARD_FILTER_PRESENCE,
    }
    await asyncio.sleep(0.5)
    assert decisions.of(t.id, "routing.offer") == []


async def test_recommend_explains_a_waiting_contact_by_its_id(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, _, requests = acd_stack
    # The skilled agent is signed out: the contact waits for them (had nobody been able to
    # take it ever, it would have overflowed at once).
    t = await acd_.tenant({"novice": NOVICE, "skilled": {}})
    await t.set_presence("novice")
    # SetPresence answers once the command is stored; the owner applies it a moment later, and
    # the routing request below goes straight to the broker, so it could come first. Wait until
    # the novice is held back by skill rather than by presence.
    probe = acd.RecommendRequest(
        tenant_id=t.id, requirements=common.RoutingRequirements(queue="cards")
    )
    async with asyncio.timeout(30):
        while True:
            excluded = (await t.acd.Recommend(probe, metadata=t.md)).explanation.excluded
            if any(e.filter == acd.HARD_FILTER_SKILL for e in excluded):
                break
            await asyncio.sleep(0.1)
    interaction = await requests.route(t.id)
    await t.until_stats(lambda f: f.waiting == 1)
    response = await t.acd.Recommend(
        acd.RecommendRequest(tenant_id=t.id, interaction_id=interaction), metadata=t.md
    )
    assert list(response.explanation.candidates) == []
    why = {t.agent_name(e.agent_id): (e.filter, e.detail) for e in response.explanation.excluded}
    assert why == {
        "novice": (acd.HARD_FILTER_SKILL, "skill cards level 1 below 3"),
        "skilled": (acd.HARD_FILTER_PRESENCE, "presence offline"),
    }
