"""The IVR in one process against the real topics and tenants API: a customer's contact through
self-service (interaction events in, prompts and the routing request out), and the gRPC calls a
tenant admin uses to check and try a flow. One module, so the service joins its consumer group
once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from conftest import Stack
from factories import Client, onboard, queue
from google.protobuf import field_mask_pb2
from ivr_support import (
    WAIT,
    Publisher,
    Tap,
    Tenant,
    admin,
    card_flow,
    configured_tenant,
    created,
    ended,
    ivr,
    message,
    prompts,
)

from lianluo.common.v1 import common_pb2 as common
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.ivr.v1 import ivr_pb2_grpc as rpc
from lianluo.media.v1 import media_pb2 as media
from lianluo.runtime.service import Service
from lianluo.services.ivr.domain import BROKEN_TEXT
from lianluo.services.ivr.service import latest_flow
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
__all__ = ["admin", "ivr"]  # module fixtures


@pytest.fixture(scope="module")
async def tap(stack: Stack, ivr: Service) -> AsyncIterator[Tap]:
    found = Tap(stack)
    await found.start()
    yield found
    await found.stop()


@pytest.fixture(scope="module")
async def publisher(stack: Stack) -> AsyncIterator[Publisher]:
    sender = Publisher(stack)
    await sender.start()
    yield sender
    await sender.stop()


@pytest.fixture(scope="module")
async def tenant(admin: Client, ivr: Service) -> Tenant:
    return await configured_tenant(admin, ivr, menu_timeout=1)


def new_id() -> str:
    return f"int-{uuid.uuid4().hex[:10]}"


async def test_menu_by_keyword_then_collect_routes_with_what_was_learnt(
    tenant: Tenant, publisher: Publisher, tap: Tap
) -> None:
    iid = new_id()
    await publisher.send(tenant.id, created(iid))
    found = await tap.wait_count(iid, 2)
    assert prompts(found) == ["Welcome to Acme.", "Lost card, or a payment?"]
    menu = found[1].ivr
    assert menu is not None and found[1].type == "ivr.prompt"
    assert [(c.digit, c.label) for c in menu.prompt.choices] == [
        ("1", "Lost card"),
        ("2", "Payments"),
    ]
    assert menu.prompt.expects_answer and menu.node_id == "menu"

    answer = await publisher.send(tenant.id, message(iid, "My card was stolen", 4))
    found = await tap.wait_count(iid, 3)
    assert prompts(found)[2] == "The last four digits of your card, please."

    # The same event delivered again must not count as a second (wrong) answer to the collect.
    await publisher.resend(answer)
    await publisher.send(tenant.id, message(iid, "12", 6))
    await tap.wait_count(iid, 4)
    await publisher.send(tenant.id, message(iid, "1234", 8))
    found = await tap.wait_for(iid, lambda f: any(o.type == "ivr.routed" for o in f))
    assert prompts(found) == [
        "Welcome to Acme.",
        "Lost card, or a payment?",
        "The last four digits of your card, please.",
        "Sorry, I did not understand that. The last four digits of your card, please.",
    ]
    ids = [o.ivr.prompt.id for o in found if o.ivr is not None and o.ivr.HasField("prompt")]
    assert ids == [f"{iid}-p{n}" for n in range(1, 5)]

    [routed] = [o for o in found if o.type == "ivr.routed"]
    assert routed.ivr is not None and routed.ivr.routed.queue == "cards"
    # What the flow learnt travels with it; the media service asks the ACD with it.
    r = routed.ivr.routed.requirements
    assert (r.queue, r.priority) == ("cards", 7)
    assert [(s.skill, s.level) for s in r.required_skills] == [("cards", 5)]
    assert (r.intent, r.intent_confidence) == ("lost_card", pytest.approx(0.7))
    assert dict(r.collected_data) == {"intent": "lost_card", "card_last4": "1234"}
    assert (r.customer_id, dict(r.customer_attributes)) == ("cust-42", {"value": "high"})
    assert (r.channel, r.media, r.language) == (common.CHANNEL_WEB, common.MEDIA_TYPE_CHAT, "zh-CN")
    assert all(o.tenant_id == tenant.id for o in found)


def hours_flow() -> pb.Flow:
    """Closed on holidays with a message of its own; otherwise to the cards queue."""
    return pb.Flow(
        name="hours",
        entry_node="check",
        nodes=[
            pb.FlowNode(
                id="check",
                condition=pb.ConditionNode(
                    branches=[
                        pb.ConditionBranch(
                            variable="business_hours",
                            operator=pb.CONDITION_OPERATOR_EQUALS,
                            value="holiday",
                            next="holiday",
                        )
                    ],
                    default_next="route",
                ),
            ),
            pb.FlowNode(id="holiday", end=pb.EndNode(text="We are closed for the holiday.")),
            pb.FlowNode(id="route", route_to_queue=pb.RouteToQueueNode(queue="cards")),
        ],
    )


async def test_a_flow_branches_on_the_tenants_business_hours(
    tenant: Tenant, ivr: Service, publisher: Publisher, tap: Tap
) -> None:
    client = tenant.client
    await client.flows.PutFlow(
        pb.PutFlowRequest(tenant_id=tenant.id, flow=hours_flow()), metadata=client.md
    )
    view = ivr.config
    assert view is not None
    async with asyncio.timeout(WAIT):
        await view.wait_until(lambda: latest_flow(view, tenant.id, "hours") is not None)
    iid = new_id()
    await publisher.send(tenant.id, created(iid, flow="hours"))
    [routed] = await tap.wait_count(iid, 1)
    assert routed.type == "ivr.routed" and routed.ivr is not None
    # The platform's variable is for the flow; the agent sees only what the customer gave.
    assert "business_hours" not in routed.ivr.routed.requirements.collected_data

    holiday = pb.Tenant(id=tenant.id)
    holiday.business_hours.time_zone = "Asia/Shanghai"
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    holiday.business_hours.holidays.add(date=today)
    updated = await client.tenants.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=holiday, update_mask=field_mask_pb2.FieldMask(paths=["business_hours"])
        ),
        metadata=client.md,
    )
    async with asyncio.timeout(WAIT):
        await view.wait_until(
            lambda: (t := view.tenant(tenant.id)) is not None and t.revision == updated.revision
        )
    later = new_id()
    await publisher.send(tenant.id, created(later, flow="hours"))
    [closed] = await tap.wait_count(later, 1)
    assert closed.type == "ivr.ended"
    assert closed.ivr is not None and closed.ivr.ended.text == "We are closed for the holiday."
    # The tenant shared by the other tests opens again.
    await client.tenants.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=pb.Tenant(id=tenant.id),
            update_mask=field_mask_pb2.FieldMask(paths=["business_hours"]),
        ),
        metadata=client.md,
    )


async def test_silence_is_asked_again_then_the_flow_gives_up(
    tenant: Tenant, publisher: Publisher, tap: Tap
) -> None:
    iid = new_id()
    await publisher.send(tenant.id, created(iid))
    await tap.wait_count(iid, 2)
    asked = time.monotonic()
    found = await tap.wait_for(iid, lambda f: any(o.type == "ivr.ended" for o in f), seconds=10)
    # One retry of a one-second menu, then no_match_next: about two seconds, never at once.
    assert time.monotonic() - asked >= 1.5
    assert prompts(found)[2] == "Sorry, I did not hear an answer. Lost card, or a payment?"
    assert found[-1].ivr is not None and found[-1].ivr.ended.text == "Goodbye."


async def test_unknown_flow_ends_the_interaction_with_a_clear_text(
    tenant: Tenant, publisher: Publisher, tap: Tap
) -> None:
    iid = new_id()
    await publisher.send(tenant.id, created(iid, flow="no-such-flow"))
    [only] = await tap.wait_count(iid, 1)
    assert only.type == "ivr.ended"
    assert only.ivr is not None and only.ivr.ended.text == BROKEN_TEXT


async def test_only_the_customer_answers_and_queue_entries_and_ended_interactions_are_left_alone(
    tenant: Tenant, publisher: Publisher, tap: Tap
) -> None:
    iid = new_id()
    await publisher.send(tenant.id, created(iid))
    await tap.wait_count(iid, 2)
    await publisher.send(tenant.id, message(iid, "1", 4, role=media.PARTICIPANT_ROLE_BOT))
    await publisher.send(tenant.id, ended(iid, 5))
    await publisher.send(tenant.id, message(iid, "1", 6))
    # A queue entry skips self-service; the media service asks the ACD itself.
    queued = new_id()
    await publisher.send(tenant.id, created(queued, queue_name="cards"))
    # A later event of the same tenant (same partition) proves the ones before were applied.
    marker = new_id()
    await publisher.send(tenant.id, created(marker, flow="no-such-flow"))
    await tap.wait_count(marker, 1)
    await asyncio.sleep(1.5)  # past the menu's timeout: a closed run must not time out either
    assert prompts(tap.of(iid)) == ["Welcome to Acme.", "Lost card, or a payment?"]
    assert len(tap.of(iid)) == 2
    assert tap.of(queued) == []


# ---------------------------------------------------------------------- IvrService


@pytest.fixture(scope="module")
async def stub(ivr: Service) -> AsyncIterator[rpc.IvrServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ivr.grpc.port}") as channel:
        yield rpc.IvrServiceStub(channel)


async def test_validate_flow_names_the_broken_node_and_why(
    tenant: Tenant, stub: rpc.IvrServiceStub
) -> None:
    good = await stub.ValidateFlow(
        api.ValidateFlowRequest(tenant_id=tenant.id, flow=card_flow()), metadata=tenant.client.md
    )
    assert good.valid and list(good.problems) == []

    flow = card_flow()
    flow.nodes[1].menu.choices[1].next = "billing"
    flow.nodes[3].route_to_queue.queue = "mortgages"
    bad = await stub.ValidateFlow(
        api.ValidateFlowRequest(tenant_id=tenant.id, flow=flow), metadata=tenant.client.md
    )
    assert not bad.valid
    by_kind = {p.kind: p for p in bad.problems}
    target = by_kind[api.FLOW_PROBLEM_KIND_MISSING_TARGET]
    assert (target.node_id, target.field) == ("menu", "menu.choices[1].next")
    assert "'billing'" in target.reason and target.severity == api.SEVERITY_ERROR
    unknown = by_kind[api.FLOW_PROBLEM_KIND_UNKNOWN_QUEUE]
    assert unknown.node_id == "to-queue" and "'mortgages'" in unknown.reason


async def test_simulate_flow_returns_the_transcript_and_the_routing(
    tenant: Tenant, stub: rpc.IvrServiceStub
) -> None:
    response = await stub.SimulateFlow(
        api.SimulateFlowRequest(
            tenant_id=tenant.id,
            flow=card_flow(),
            inputs=[
                api.SimulatedInput(timeout=True),
                api.SimulatedInput(text="1"),
                api.SimulatedInput(text="9876"),
            ],
            channel=common.CHANNEL_PHONE,
            customer_id="cust-9",
        ),
        metadata=tenant.client.md,
    )
    said = [s.prompt.text for s in response.steps if s.HasField("prompt")]
    assert said == [
        "Welcome to Acme.",
        "Lost card, or a payment?",
        "Sorry, I did not hear an answer. Lost card, or a payment?",
        "The last four digits of your card, please.",
    ]
    assert [s.index for s in response.steps] == list(range(1, len(response.steps) + 1))
    assert response.WhichOneof("outcome") == "routed"
    r = response.routed.requirements
    assert (r.queue, r.intent, r.intent_confidence, r.customer_id) == (
        "cards",
        "lost_card",
        1.0,
        "cust-9",
    )
    # A simulation is open unless its variables say otherwise.
    assert dict(response.variables) == {
        "intent": "lost_card",
        "card_last4": "9876",
        "business_hours": "open",
    }
    assert response.final_node_id == "to-queue" and response.unused_inputs == 0


async def test_bad_requests_name_the_field(tenant: Tenant, stub: rpc.IvrServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SimulateFlow(
            api.SimulateFlowRequest(tenant_id=tenant.id, flow=card_flow(), max_steps=20_000),
            metadata=tenant.client.md,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_steps" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ValidateFlow(
            api.ValidateFlowRequest(flow=card_flow()), metadata=tenant.client.md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant_id" in (caught.value.details() or "")


async def test_a_key_of_another_tenant_is_refused(
    admin: Client, ivr: Service, tenant: Tenant, stub: rpc.IvrServiceStub
) -> None:
    other, client = await onboard(admin)
    # The key is announced before this queue, so once the IVR has the queue it knows the key.
    await client.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=other.id, queue=queue("other")), metadata=client.md
    )
    view = ivr.config
    assert view is not None
    async with asyncio.timeout(WAIT):
        await view.wait_until(lambda: view.by_name(other.id, "queue", "other") is not None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ValidateFlow(
            api.ValidateFlowRequest(tenant_id=tenant.id, flow=card_flow()), metadata=client.md
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SimulateFlow(
            api.SimulateFlowRequest(tenant_id=tenant.id, flow=card_flow()), metadata=client.md
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Its own tenant has no "cards" queue, so the same flow is not valid there.
    own = await stub.ValidateFlow(
        api.ValidateFlowRequest(tenant_id=other.id, flow=card_flow()), metadata=client.md
    )
    assert [p.kind for p in own.problems] == [api.FLOW_PROBLEM_KIND_UNKNOWN_QUEUE]
