"""The media service: interactions, the IVR and routing hand-offs, and the relay between
participants on two replicas, against the real Postgres and broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from conftest import ADMIN_KEY, Stack
from factories import Client, agent, flow, onboard, queue
from google.protobuf import field_mask_pb2
from media_support import media_replica, publish

from lianluo.acd.v1 import acd_pb2
from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.clients import StreamClient
from lianluo.events.v1 import envelope_pb2, ivr_pb2, routing_pb2
from lianluo.media.v1 import media_pb2 as pb
from lianluo.media.v1 import media_pb2_grpc as rpc
from lianluo.tenants.v1 import tenants_pb2 as tpb

pytestmark = pytest.mark.integration
S = pb.InteractionState
R = pb.ParticipantRole


@pytest.fixture(scope="module")
async def world(stack: Stack, tenants_service: Any) -> AsyncIterator[dict[str, Any]]:
    async with grpc.aio.insecure_channel(tenants_service.address) as channel:
        admin = Client(channel, ADMIN_KEY)
        t, c = await onboard(admin)
        await c.queues.CreateQueue(
            tpb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md
        )
        await c.flows.PutFlow(tpb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md)
        a, b = [
            await c.agents.CreateAgent(
                tpb.CreateAgentRequest(tenant_id=t.id, agent=agent(name)), metadata=c.md
            )
            for name in ("li.wei", "wang.fang")
        ]
        async with media_replica(stack) as (one, s1), media_replica(stack) as (two, s2):
            for s in (s1, s2):
                view = s.config
                assert view is not None
                async with asyncio.timeout(20):
                    await view.wait_until(
                        lambda v=view: all(v.get(t.id, "agent", x.id) for x in (a, b))
                    )
            async with grpc.aio.insecure_channel(one) as ch1, grpc.aio.insecure_channel(two) as ch2:
                yield {
                    "tenant": t,
                    "tenants": c,
                    "views": [s.config for s in (s1, s2)],
                    "key": c.key,
                    "agent": a,
                    "other_agent": b,
                    "ch1": ch1,
                    "ch2": ch2,
                }


def md(world: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {world['key']}"),)


async def start(world: dict[str, Any], **entry: str) -> pb.StartInteractionResponse:
    return await rpc.MediaServiceStub(world["ch1"]).StartInteraction(
        pb.StartInteractionRequest(
            tenant_id=world["tenant"].id,
            channel=common.CHANNEL_WEB,
            media=common.MEDIA_TYPE_CHAT,
            customer=pb.Customer(id="cust-1", display_name="Mei", address="mei@example.test"),
            **entry,
        ),
        metadata=md(world),
    )


async def test_a_contact_travels_from_ivr_to_an_agent_across_replicas(
    world: dict[str, Any], stack: Stack
) -> None:
    t, a = world["tenant"], world["agent"]
    started = await start(world, flow="main")
    it = started.interaction
    assert it.state == S.INTERACTION_STATE_IN_IVR
    customer = StreamClient(
        world["ch1"],
        world["key"],
        pb.Join(
            tenant_id=t.id,
            interaction_id=it.id,
            role=R.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="cust-1",
        ),
    )
    desk = StreamClient(
        world["ch2"],
        world["key"],
        pb.Join(tenant_id=t.id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=a.id),
    )
    await customer.wait_for(lambda f: f.WhichOneof("frame") == "joined")
    await desk.wait_for(lambda f: f.WhichOneof("frame") == "joined")

    prompt = ivr_pb2.IvrOutput(
        interaction_id=it.id,
        prompt=common.Prompt(
            id="p1",
            text="1 for cards",
            expects_answer=True,
            choices=[common.PromptChoice(digit="1", label="Cards")],
        ),
    )
    await publish(stack, "ivr.output", "ivr.prompt", t.id, prompt)
    got = await customer.wait_for(lambda f: f.WhichOneof("frame") == "prompt")
    assert got.prompt.text == "1 for cards"

    customer.send_text("1", "m1")
    await customer.wait_for(lambda f: f.message.content.text == "1")
    await publish(
        stack,
        "ivr.output",
        "ivr.routed",
        t.id,
        ivr_pb2.IvrOutput(interaction_id=it.id, routed=ivr_pb2.IvrRouted(queue="cards")),
    )
    await customer.wait_for(lambda f: f.state_changed.to_state == S.INTERACTION_STATE_QUEUED)

    offer = acd_pb2.Offer(
        id="o1",
        tenant_id=t.id,
        interaction_id=it.id,
        agent_id=a.id,
        state=acd_pb2.OFFER_STATE_PENDING,
    )
    await publish(
        stack,
        "routing.decision",
        "routing.offer",
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id, offer=routing_pb2.RoutingOffer(offer=offer)
        ),
    )
    shown = await desk.wait_for(lambda f: f.WhichOneof("frame") == "offer")
    assert shown.offer.id == "o1"
    await publish(
        stack,
        "routing.decision",
        "routing.assign",
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id, assign=routing_pb2.RoutingAssign(offer_id="o1", agent_id=a.id)
        ),
    )
    await desk.wait_for(lambda f: f.offer_closed.offer_id == "o1")
    await customer.wait_for(lambda f: f.state_changed.to_state == S.INTERACTION_STATE_CONNECTED)

    # The agent joins on the other replica and first sees the conversation so far.
    agent_stream = StreamClient(
        world["ch2"],
        world["key"],
        pb.Join(
            tenant_id=t.id, interaction_id=it.id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=a.id
        ),
    )
    await agent_stream.wait_for(lambda f: f.message.content.text == "1")
    agent_stream.send_text("Hello Mei, how can I help?", "a1")
    customer.send_text("My card is lost", "m2")
    await customer.wait_for(lambda f: f.message.content.text == "Hello Mei, how can I help?")
    await agent_stream.wait_for(lambda f: f.message.content.text == "My card is lost")
    for stream in (customer, agent_stream):
        sequences = [f.sequence for f in stream.frames if f.sequence]
        assert sequences == sorted(set(sequences)), "frames arrive once each, in order"

    # The customer leaves first: the agent wraps up, and their disposition closes it.
    left = await rpc.MediaServiceStub(world["ch1"]).End(
        pb.EndRequest(
            tenant_id=t.id,
            interaction_id=it.id,
            participant_id=started.customer_participant_id,
            resolution=pb.Resolution(code="customer_left"),
        ),
        metadata=md(world),
    )
    assert left.state == S.INTERACTION_STATE_WRAP_UP
    await agent_stream.wait_for(lambda f: f.state_changed.to_state == S.INTERACTION_STATE_WRAP_UP)
    me = (await agent_stream.wait_for(lambda f: f.WhichOneof("frame") == "joined")).joined
    ended = await rpc.MediaServiceStub(world["ch2"]).End(
        pb.EndRequest(
            tenant_id=t.id,
            interaction_id=it.id,
            participant_id=me.participant_id,
            resolution=pb.Resolution(code="resolved", note="card blocked"),
        ),
        metadata=md(world),
    )
    assert ended.state == S.INTERACTION_STATE_CLOSED
    assert ended.resolution.code == "resolved"
    end = await agent_stream.wait_for(lambda f: f.WhichOneof("frame") == "ended")
    assert end.ended.resolution.note == "card blocked"
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await rpc.MediaServiceStub(world["ch2"]).Send(
            pb.SendRequest(
                tenant_id=t.id,
                interaction_id=it.id,
                participant_id=me.participant_id,
                content=pb.MessageContent(text="hello?"),
            ),
            metadata=md(world),
        )
    assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for stream in (customer, desk, agent_stream):
        await stream.close()


async def test_a_customer_who_reconnects_gets_what_they_missed(world: dict[str, Any]) -> None:
    t = world["tenant"]
    started = await start(world, queue="cards")
    it = started.interaction
    assert it.state == S.INTERACTION_STATE_QUEUED
    stub = rpc.MediaServiceStub(world["ch2"])
    for i, text in enumerate(["one", "two", "three"]):
        await stub.Send(
            pb.SendRequest(
                tenant_id=t.id,
                interaction_id=it.id,
                participant_id=started.customer_participant_id,
                client_message_id=f"c{i}",
                content=pb.MessageContent(text=text),
            ),
            metadata=md(world),
        )
    again = await stub.Send(
        pb.SendRequest(
            tenant_id=t.id,
            interaction_id=it.id,
            participant_id=started.customer_participant_id,
            client_message_id="c1",
            content=pb.MessageContent(text="two"),
        ),
        metadata=md(world),
    )
    first_two = await rpc.MediaServiceStub(world["ch1"]).GetInteraction(
        pb.GetInteractionRequest(tenant_id=t.id, interaction_id=it.id), metadata=md(world)
    )
    resumed = StreamClient(
        world["ch1"],
        world["key"],
        pb.Join(
            tenant_id=t.id,
            interaction_id=it.id,
            role=R.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="cust-1",
            last_seen_sequence=again.sequence - 1,
        ),
    )
    await resumed.wait_for(lambda f: f.message.content.text == "three")
    assert resumed.texts() == ["two", "three"], "a resend is stored once; only missed items replay"
    assert first_two.last_sequence == again.sequence + 1
    await resumed.close()


async def test_bad_input_gets_a_clear_error_and_writes_nothing(world: dict[str, Any]) -> None:
    t = world["tenant"]
    stub = rpc.MediaServiceStub(world["ch1"])
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await start(world, queue="no-such-queue")
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "queue" in (unknown.value.details() or "")
    started = await start(world, queue="cards")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.Send(
            pb.SendRequest(
                tenant_id=t.id,
                interaction_id=started.interaction.id,
                participant_id=started.customer_participant_id,
                content=pb.MessageContent(location=pb.Location(latitude=91)),
            ),
            metadata=md(world),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "content.location.latitude" in (bad.value.details() or "")
    after = await stub.GetInteraction(
        pb.GetInteractionRequest(tenant_id=t.id, interaction_id=started.interaction.id),
        metadata=md(world),
    )
    assert after.last_sequence == started.interaction.last_sequence


async def test_another_tenant_cannot_see_or_touch_an_interaction(
    world: dict[str, Any], tenants_service: Any
) -> None:
    started = await start(world, queue="cards")
    async with grpc.aio.insecure_channel(tenants_service.address) as channel:
        other, other_client = await onboard(Client(channel, ADMIN_KEY))
    stub = rpc.MediaServiceStub(world["ch1"])
    foreign = (("authorization", f"Bearer {other_client.key}"),)
    # The media replicas learn the new tenant's key from tenant.config, moments later.
    await asyncio.sleep(2)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.GetInteraction(
            pb.GetInteractionRequest(
                tenant_id=world["tenant"].id, interaction_id=started.interaction.id
            ),
            metadata=foreign,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.End(
            pb.EndRequest(tenant_id=other.id, interaction_id=started.interaction.id),
            metadata=foreign,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_ivrs_routed_output_queues_the_contact_and_media_asks_the_acd(
    world: dict[str, Any], stack: Stack
) -> None:
    """Media alone asks the ACD, in the transaction that queues the contact, with what
    self-service learnt: no offer can come before the contact is queued."""
    t = world["tenant"]
    it = (await start(world, flow="main")).interaction
    learnt = common.RoutingRequirements(
        queue="cards",
        intent="lost_card",
        intent_confidence=0.7,
        priority=7,
        required_skills=[common.SkillLevel(skill="cards", level=5)],
        collected_data={"card_last4": "1234"},
    )
    routed = ivr_pb2.IvrOutput(
        interaction_id=it.id, routed=ivr_pb2.IvrRouted(queue="cards", requirements=learnt)
    )
    asked = await routing_request(
        stack, it.id, publish(stack, "ivr.output", "ivr.routed", t.id, routed)
    )
    got = await until(world, it.id, lambda i: i.state == S.INTERACTION_STATE_QUEUED)
    assert got.queue == "cards"
    r = asked.requirements
    assert (r.queue, r.intent, r.priority) == ("cards", "lost_card", 7)
    assert dict(r.collected_data) == {"card_last4": "1234"}
    assert [(s.skill, s.level) for s in r.required_skills] == [("cards", 5)]
    # And what the media service knows of the interaction itself.
    assert (r.channel, r.customer_id) == (it.channel, it.customer.id)


async def routing_request(
    stack: Stack, interaction_id: str, cause: Awaitable[None]
) -> ivr_pb2.RoutingRequest:
    """The routing request of the interaction that `cause` makes media publish."""
    requests = AIOKafkaConsumer(bootstrap_servers=stack.kafka, group_id=None)
    await requests.start()
    try:
        topic = f"{stack.topic_prefix}routing.request"
        parts = [TopicPartition(topic, p) for p in requests.partitions_for_topic(topic) or []]
        requests.assign(parts)
        await requests.seek_to_end(*parts)
        for tp in parts:
            await requests.position(tp)
        await cause
        async with asyncio.timeout(10):
            while True:
                for records in (await requests.getmany(timeout_ms=200)).values():
                    for record in records:
                        envelope = envelope_pb2.Envelope.FromString(record.value)
                        request = ivr_pb2.RoutingRequest()
                        envelope.payload.Unpack(request)
                        if request.interaction_id == interaction_id:
                            assert envelope.producer == "media"
                            return request
    finally:
        await requests.stop()


def mpb_get(tenant_id: str, interaction_id: str) -> pb.GetInteractionRequest:
    return pb.GetInteractionRequest(tenant_id=tenant_id, interaction_id=interaction_id)


async def decide(stack: Stack, tenant_id: str, decision: routing_pb2.RoutingDecision) -> None:
    kind = decision.WhichOneof("decision")
    await publish(stack, "routing.decision", f"routing.{kind}", tenant_id, decision)


async def until(
    world: dict[str, Any], interaction_id: str, check: Callable[[pb.Interaction], bool]
) -> pb.Interaction:
    stub = rpc.MediaServiceStub(world["ch2"])
    request = mpb_get(world["tenant"].id, interaction_id)
    async with asyncio.timeout(10):
        while not check(got := await stub.GetInteraction(request, metadata=md(world))):
            await asyncio.sleep(0.05)
    return got


async def connected(world: dict[str, Any], stack: Stack, agent_id: str) -> pb.Interaction:
    """A contact that entered the queue and that `agent_id` accepted."""
    t = world["tenant"]
    it = (await start(world, queue="cards")).interaction
    offer = acd_pb2.Offer(id=f"o-{it.id[:8]}", tenant_id=t.id, interaction_id=it.id)
    offer.agent_id = agent_id
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id, offer=routing_pb2.RoutingOffer(offer=offer)
        ),
    )
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id,
            assign=routing_pb2.RoutingAssign(offer_id=offer.id, agent_id=agent_id),
        ),
    )
    return await until(world, it.id, lambda i: i.state == S.INTERACTION_STATE_CONNECTED)


async def test_a_transfer_to_a_named_agent_asks_the_acd_and_the_transferrer_leaves_on_accept(
    world: dict[str, Any], stack: Stack
) -> None:
    t, a, b = world["tenant"], world["agent"], world["other_agent"]
    it = await connected(world, stack, a.id)
    by = next(p for p in it.participants if p.subject_id == a.id)
    customer = next(p for p in it.participants if p.role == R.PARTICIPANT_ROLE_CUSTOMER)
    stub = rpc.MediaServiceStub(world["ch1"])

    async def transfer(**fields: Any) -> pb.Interaction:
        fields.setdefault("participant_id", by.id)
        request = pb.TransferRequest(
            tenant_id=t.id, interaction_id=it.id, transfer=pb.Transfer(**fields)
        )
        return await stub.Transfer(request, metadata=md(world))

    bad = [
        ({"agent_id": "no-such-agent"}, grpc.StatusCode.INVALID_ARGUMENT, "transfer.agent_id"),
        ({"agent_id": a.id}, grpc.StatusCode.INVALID_ARGUMENT, "transfer.agent_id"),
        (
            {"agent_id": b.id, "participant_id": customer.id},
            grpc.StatusCode.INVALID_ARGUMENT,
            "transfer.participant_id",
        ),
        ({"expert": pb.ExpertTarget()}, grpc.StatusCode.INVALID_ARGUMENT, "transfer.expert"),
    ]
    for fields, code, named in bad:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await transfer(**fields)
        assert (refused.value.code(), named in (refused.value.details() or "")) == (code, True)

    async def moved() -> None:
        moved = await transfer(agent_id=b.id, note="wants a refund of the annual fee")
        assert moved.state == S.INTERACTION_STATE_QUEUED

    asked = await routing_request(stack, it.id, moved())
    assert (asked.transferred_by, asked.stay) == (a.id, False)
    assert asked.requirements.target.agent_id == b.id
    assert asked.requirements.note == "wants a refund of the annual fee"
    assert asked.requirements.queue == "cards"

    # Only a connected interaction is transferred: it is queued now.
    with pytest.raises(grpc.aio.AioRpcError) as queued:
        await transfer(agent_id=b.id)
    assert queued.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    offer = acd_pb2.Offer(id="o-transfer", tenant_id=t.id, interaction_id=it.id, agent_id=b.id)
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id, offer=routing_pb2.RoutingOffer(offer=offer)
        ),
    )
    assign = routing_pb2.RoutingAssign(offer_id=offer.id, agent_id=b.id, released_agent_id=a.id)
    await decide(stack, t.id, routing_pb2.RoutingDecision(interaction_id=it.id, assign=assign))
    done = await until(world, it.id, lambda i: i.state == S.INTERACTION_STATE_CONNECTED)
    people = {p.subject_id: p for p in done.participants}
    assert people[a.id].leave_reason == "transferred" and people[a.id].HasField("leave_time")
    assert not people[b.id].HasField("leave_time")


async def test_overflows_tell_the_customer_where_they_go(
    world: dict[str, Any], stack: Stack
) -> None:
    t = world["tenant"]
    callback = (await start(world, queue="cards")).interaction
    moved = (await start(world, queue="cards")).interaction
    overflows = {
        callback.id: routing_pb2.RoutingOverflow(
            overflow=tpb.Overflow(kind=tpb.OVERFLOW_KIND_CALLBACK), callback_number="+8613800000000"
        ),
        moved.id: routing_pb2.RoutingOverflow(
            overflow=tpb.Overflow(kind=tpb.OVERFLOW_KIND_QUEUE, target_queue="general")
        ),
    }
    for iid, overflow in overflows.items():
        await decide(
            stack, t.id, routing_pb2.RoutingDecision(interaction_id=iid, overflow=overflow)
        )
    waits = await until(world, callback.id, lambda i: i.state == S.INTERACTION_STATE_CALLBACK)
    assert waits.end_time.seconds == 0, "a callback is not the end of the contact"
    passed = await until(world, moved.id, lambda i: i.queue == "general")
    assert passed.state == S.INTERACTION_STATE_QUEUED
    customer = await StreamClient.connect(
        world["ch1"],
        world["key"],
        pb.Join(
            tenant_id=t.id,
            interaction_id=callback.id,
            role=R.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="cust-1",
        ),
    )
    told = await customer.wait_for(lambda f: "call you back" in f.message.content.text)
    assert "+8613800000000" in told.message.content.text
    await customer.close()


async def test_an_agent_who_joins_before_the_assignment_arrives_is_let_in(
    world: dict[str, Any], stack: Stack
) -> None:
    """The agent accepts and joins at once; the ACD's assignment reaches media a moment later.
    The join waits for it instead of answering PERMISSION_DENIED."""
    t, a = world["tenant"], world["agent"]
    it = (await start(world, queue="cards")).interaction
    offer = acd_pb2.Offer(id=f"o-{it.id[:8]}", tenant_id=t.id, interaction_id=it.id, agent_id=a.id)
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id, offer=routing_pb2.RoutingOffer(offer=offer)
        ),
    )
    await until(world, it.id, lambda i: i.state == S.INTERACTION_STATE_OFFERED)
    join = pb.Join(
        tenant_id=t.id, interaction_id=it.id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=a.id
    )
    joining = asyncio.create_task(StreamClient.connect(world["ch1"], world["key"], join))
    await asyncio.sleep(0.5)  # the join is waiting now
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id,
            assign=routing_pb2.RoutingAssign(offer_id=offer.id, agent_id=a.id),
        ),
    )
    stream = await joining
    joined = await stream.wait_for(lambda f: f.WhichOneof("frame") == "joined")
    assert joined.joined.participant_id, "the agent joined as a participant"
    await stream.close()
    # Someone who is never assigned is still refused, after the wait.
    stranger = pb.Join(
        tenant_id=t.id,
        interaction_id=it.id,
        role=R.PARTICIPANT_ROLE_AGENT,
        subject_id=world["other_agent"].id,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await StreamClient.connect(world["ch1"], world["key"], stranger, retry_seconds=15)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_withdrawn_offer_is_taken_off_the_agents_desk(
    world: dict[str, Any], stack: Stack
) -> None:
    t, a = world["tenant"], world["agent"]
    desk = await StreamClient.connect(
        world["ch2"],
        world["key"],
        pb.Join(tenant_id=t.id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=a.id),
    )
    it = (await start(world, queue="cards")).interaction
    offer = acd_pb2.Offer(id=f"w-{it.id[:8]}", tenant_id=t.id, interaction_id=it.id, agent_id=a.id)
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id, offer=routing_pb2.RoutingOffer(offer=offer)
        ),
    )
    await desk.wait_for(lambda f: f.offer.id == offer.id)
    await decide(
        stack,
        t.id,
        routing_pb2.RoutingDecision(
            interaction_id=it.id,
            offer_withdrawn=routing_pb2.RoutingOfferEnded(offer_id=offer.id, agent_id=a.id),
        ),
    )
    closed = await desk.wait_for(lambda f: f.offer_closed.offer_id == offer.id)
    assert closed.offer_closed.state == acd_pb2.OFFER_STATE_WITHDRAWN
    await desk.close()
    # A desk that joins later is not offered it again.
    again = await StreamClient.connect(
        world["ch1"],
        world["key"],
        pb.Join(tenant_id=t.id, role=R.PARTICIPANT_ROLE_AGENT, subject_id=a.id),
    )
    await asyncio.sleep(0.5)
    assert all(f.offer.id != offer.id for f in again.frames)
    await again.close()


async def test_card_numbers_and_national_ids_are_masked_before_anyone_sees_them(
    world: dict[str, Any],
) -> None:
    t = world["tenant"]
    started = await start(world, queue="cards")
    stub = rpc.MediaServiceStub(world["ch2"])
    typed = "card 4111 1111 1111 1111, id 11010519491231002X, order 1234567890123"

    async def send(cmid: str) -> pb.Message:
        sent: pb.Message = await stub.Send(
            pb.SendRequest(
                tenant_id=t.id,
                interaction_id=started.interaction.id,
                participant_id=started.customer_participant_id,
                client_message_id=cmid,
                content=pb.MessageContent(text=typed),
            ),
            metadata=md(world),
        )
        return sent

    masked = await send("r1")
    expected = "card **** **** **** 1111, id **************002X, order 1234567890123"
    assert (masked.content.text, list(masked.redacted)) == (
        expected,
        ["national_id", "card_number"],
    )
    # Stored so: whoever joins later (on the other replica) gets the masked text, and why.
    later = StreamClient(
        world["ch1"],
        world["key"],
        pb.Join(
            tenant_id=t.id,
            interaction_id=started.interaction.id,
            role=R.PARTICIPANT_ROLE_CUSTOMER,
            subject_id="cust-1",
            last_seen_sequence=masked.sequence - 1,
        ),
    )
    replayed = await later.wait_for(lambda f: f.message.id == masked.id)
    await later.close()
    assert (replayed.message.content.text, list(replayed.message.redacted)) == (
        expected,
        ["national_id", "card_number"],
    )

    # A tenant whose policy keeps card numbers keeps them; ids are still masked.
    tenants = world["tenants"]

    async def policy(keep_cards: bool) -> None:
        await tenants.tenants.UpdateTenant(
            tpb.UpdateTenantRequest(
                tenant=tpb.Tenant(
                    id=t.id, redaction=tpb.RedactionPolicy(keep_card_numbers=keep_cards)
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["redaction"]),
            ),
            metadata=tenants.md,
        )
        for view in world["views"]:
            async with asyncio.timeout(20):
                await view.wait_until(
                    lambda v=view: v.tenant(t.id).redaction.keep_card_numbers == keep_cards
                )

    await policy(keep_cards=True)
    try:
        kept = await send("r2")
    finally:
        await policy(keep_cards=False)
    assert kept.content.text == (
        "card 4111 1111 1111 1111, id **************002X, order 1234567890123"
    )
    assert list(kept.redacted) == ["national_id"]
