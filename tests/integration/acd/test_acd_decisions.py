"""The ACD in-process against the real Postgres and broker, configured through the tenants API:
routing requests in, offers, assignments, time-outs and overflows out on routing.decision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from acd_support import OFFER_TIMEOUT_SECONDS, Acd, Decisions, Requests, Tenant, running_acd
from conftest import Served, Stack
from google.protobuf import field_mask_pb2

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import routing_pb2
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
NOVICE = {"skills": [common.SkillLevel(skill="cards", level=1)]}
ONE_CHAT = {"capacity": [pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=1)]}


@pytest.fixture(scope="module")
async def acd_stack(
    stack: Stack, tenants_service: Served
) -> AsyncIterator[tuple[Acd, Decisions, Requests]]:
    async with running_acd(stack, tenants_service.address) as running:
        yield running


async def available(t: Tenant, *names: str) -> None:
    """Make agents available one after another, so the first named is the longest idle."""
    for i, name in enumerate(names):
        await t.set_presence(name)
        await t.until_stats(lambda f, n=i + 1: f.agents_available >= n)


async def test_the_longest_idle_qualified_agent_gets_the_offer_and_accepting_assigns(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"first": {}, "second": {}, "novice": NOVICE})
    await t.set_presence("novice")
    await available(t, "first", "second")

    interaction = await requests.route(t.id)
    offered = await decisions.wait(t.id, "routing.offer", interaction)
    offer = offered.offer.offer
    assert t.agent_name(offer.agent_id) == "first"
    assert offer.state == acd.OFFER_STATE_PENDING
    expires = offer.expire_time.ToDatetime() - offer.offer_time.ToDatetime()
    assert expires.total_seconds() == pytest.approx(OFFER_TIMEOUT_SECONDS)
    explanation = offered.explanation
    assert [t.agent_name(c.agent_id) for c in explanation.candidates] == ["first", "second"]
    names = [f.name for f in explanation.candidates[0].features]
    assert names == ["skill_fit", "longest_idle", "affinity", "profile_fit", "handle_time"]
    # Equal in everything else, the two differ by idle time alone.
    idle = [c.features[1].value for c in explanation.candidates]
    assert idle[0] == pytest.approx(1.0)
    assert idle[1] < 1.0
    assert {(t.agent_name(e.agent_id), e.filter) for e in explanation.excluded} == {
        ("novice", acd.HARD_FILTER_SKILL)
    }

    answered = await t.respond(offer, accept=True)
    assert answered.state == acd.OFFER_STATE_ACCEPTED
    assigned = await decisions.wait(t.id, "routing.assign", interaction)
    assert t.agent_name(assigned.assign.agent_id) == "first"
    assert assigned.assign.offer_id == offer.id
    # Answering the same way again returns the same offer; the other way is refused.
    assert (await t.respond(offer, accept=True)).state == acd.OFFER_STATE_ACCEPTED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await t.respond(offer, accept=False)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    figures = await t.stats()
    assert figures.waiting == 0


async def test_a_decline_offers_the_contact_to_another_agent(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"first": {}, "second": {}})
    await available(t, "first", "second")

    interaction = await requests.route(t.id)
    first = (await decisions.wait(t.id, "routing.offer", interaction)).offer.offer
    declined = await t.respond(first, accept=False, reason="on a call")
    assert declined.state == acd.OFFER_STATE_DECLINED

    ended = await decisions.wait(t.id, "routing.offer_declined", interaction)
    assert ended.offer_declined.reason == "on a call"
    second = (await decisions.wait(t.id, "routing.offer", interaction, nth=2)).offer.offer
    assert t.agent_name(second.agent_id) == "second"
    assert second.id != first.id


async def test_an_unanswered_offer_times_out_and_the_next_agent_is_offered(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"first": {}, "second": {}})
    await available(t, "first", "second")

    interaction = await requests.route(t.id)
    first = (await decisions.wait(t.id, "routing.offer", interaction)).offer.offer
    timed_out = await decisions.wait(t.id, "routing.offer_timed_out", interaction)
    assert timed_out.offer_timed_out.offer_id == first.id
    second = (await decisions.wait(t.id, "routing.offer", interaction, nth=2)).offer.offer
    assert t.agent_name(second.agent_id) == "second"
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await t.respond(first, accept=True)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert decisions.types(t.id, interaction) == [
        "routing.offer",
        "routing.offer_timed_out",
        "routing.offer",
    ]


async def test_a_contact_past_the_queues_max_wait_overflows_to_a_callback(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    # Only the signed-out agent could take it, so the contact waits out the max wait.
    t = await acd_.tenant(
        {"novice": NOVICE, "skilled": {}},
        max_wait_seconds=2,
        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_CALLBACK),
    )
    await t.set_presence("novice")

    interaction = await requests.route(t.id, callback_number="+8613800000000")
    waiting = await t.until_stats(lambda f: f.waiting == 1)
    assert waiting.agents_available == 0
    overflow = await decisions.wait(t.id, "routing.overflow", interaction)
    assert overflow.overflow.cause == routing_pb2.OVERFLOW_CAUSE_MAX_WAIT
    assert overflow.overflow.overflow.kind == pb.OVERFLOW_KIND_CALLBACK
    assert overflow.overflow.callback_number == "+8613800000000"
    why = {t.agent_name(e.agent_id): e.filter for e in overflow.explanation.excluded}
    assert why == {"novice": acd.HARD_FILTER_SKILL, "skilled": acd.HARD_FILTER_PRESENCE}
    # Waiting for its callback, out of line; the queue's history counts the overflow.
    figures = await t.until_stats(lambda f: f.overflowed == 1)
    assert (figures.waiting, figures.callbacks_scheduled, figures.entered) == (0, 1, 1)
    assert decisions.types(t.id, interaction) == ["routing.overflow"]


async def test_a_contact_nobody_could_ever_take_overflows_at_once(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"novice": NOVICE}, max_wait_seconds=600)
    interaction = await requests.route(t.id)
    overflow = await decisions.wait(t.id, "routing.overflow", interaction)
    assert overflow.overflow.cause == routing_pb2.OVERFLOW_CAUSE_NO_ELIGIBLE_AGENT
    assert overflow.overflow.overflow.kind == pb.OVERFLOW_KIND_MESSAGE
    assert (await t.stats()).waiting == 0


async def test_an_agent_at_capacity_gets_no_second_contact_until_the_first_ends(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"solo": {}})
    # Configured for 3 chats; this session takes one at a time.
    presence = await t.set_presence(
        "solo", capacity=[pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=1)]
    )
    chat = next(m for m in presence.load if m.media == common.MEDIA_TYPE_CHAT)
    assert chat.max_concurrent == 1
    await t.until_stats(lambda f: f.agents_available == 1)

    first = await requests.route(t.id)
    offer = (await decisions.wait(t.id, "routing.offer", first)).offer.offer
    await t.respond(offer, accept=True)
    await decisions.wait(t.id, "routing.assign", first)
    second = await requests.route(t.id)
    busy = await t.until_stats(lambda f: f.waiting == 1)
    assert (busy.agents_available, busy.agents_busy) == (0, 1)
    await asyncio.sleep(1)
    assert decisions.types(t.id, second) == []

    await requests.end(t.id, first)
    offered = (await decisions.wait(t.id, "routing.offer", second)).offer.offer
    assert offered.agent_id == offer.agent_id
    wrap_ups = decisions.agent_events(t.id, "agent.wrap_up_done")
    assert len(wrap_ups) == 1


async def test_an_abandoned_contact_leaves_the_queue(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"skilled": {}})
    interaction = await requests.route(t.id)
    await t.until_stats(lambda f: f.waiting == 1)
    await requests.end(t.id, interaction)
    figures = await t.until_stats(lambda f: f.waiting == 0)
    assert decisions.types(t.id, interaction) == []
    assert (figures.entered, figures.abandoned, figures.abandonment_percent) == (1, 1, 100.0)


async def set_tenant(t: Tenant, acd_: Acd, tenant: pb.Tenant, *paths: str) -> None:
    """The tenant changes its own configuration; wait until the ACD has read the change."""
    tenant.id = t.id
    updated = await t.client.tenants.UpdateTenant(
        pb.UpdateTenantRequest(tenant=tenant, update_mask=field_mask_pb2.FieldMask(paths=paths)),
        metadata=t.client.md,
    )
    view = acd_.service.config
    assert view is not None
    async with asyncio.timeout(10):
        await view.wait_until(
            lambda: (seen := view.tenant(t.id)) is not None and seen.revision == updated.revision
        )


async def test_a_routing_policy_set_through_the_tenants_api_changes_who_is_offered(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    master = {"skills": [common.SkillLevel(skill="cards", level=10)]}
    t = await acd_.tenant({"first": {}, "master": master})
    await available(t, "first", "master")
    before = await requests.route(t.id)
    offered = await decisions.wait(t.id, "routing.offer", before)
    # The platform's defaults: the longest idle of two qualified agents.
    assert t.agent_name(offered.offer.offer.agent_id) == "first"
    await requests.end(t.id, before)
    await t.until_stats(lambda f: f.waiting == 0 and f.agents_available == 2)

    skill_first = pb.Tenant()
    skill_first.routing_policy.defaults.weights.fairness = 0.0
    skill_first.routing_policy.defaults.weights.skill_fit = 1.0
    await set_tenant(t, acd_, skill_first, "routing_policy")
    after = await requests.route(t.id)
    offered = await decisions.wait(t.id, "routing.offer", after)
    assert t.agent_name(offered.offer.offer.agent_id) == "master"


async def test_a_policy_the_acd_could_not_read_is_refused_with_the_field_named(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, _, _ = acd_stack
    t = await acd_.tenant({"first": {}})
    bad = pb.Tenant(id=t.id)
    bad.routing_policy.defaults.fairness = "random"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await t.client.tenants.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=bad, update_mask=field_mask_pb2.FieldMask(paths=["routing_policy"])
            ),
            metadata=t.client.md,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant.routing_policy" in (refused.value.details() or "")
    stored = await t.client.tenants.GetTenant(
        pb.GetTenantRequest(tenant_id=t.id), metadata=t.client.md
    )
    assert not stored.HasField("routing_policy")


async def test_outside_business_hours_a_new_contact_overflows_at_once_and_a_transfer_waits(
    acd_stack: tuple[Acd, Decisions, Requests],
) -> None:
    acd_, decisions, requests = acd_stack
    t = await acd_.tenant({"first": {}}, max_wait_seconds=600)
    await available(t, "first")
    closed = pb.Tenant()
    # Closed all day today wherever the tenant is: today is a holiday.
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
    closed.business_hours.time_zone = "Asia/Shanghai"
    closed.business_hours.holidays.add(date=today.isoformat(), name="test holiday")
    await set_tenant(t, acd_, closed, "business_hours")

    interaction = await requests.route(t.id)
    overflow = await decisions.wait(t.id, "routing.overflow", interaction)
    assert overflow.overflow.cause == routing_pb2.OVERFLOW_CAUSE_CLOSED
    assert decisions.types(t.id, interaction) == ["routing.overflow"]
    # An agent working late hands a contact over: it is still offered.
    handed = await requests.route(t.id, transferred_by="someone")
    offered = await decisions.wait(t.id, "routing.offer", handed)
    assert t.agent_name(offered.offer.offer.agent_id) == "first"
