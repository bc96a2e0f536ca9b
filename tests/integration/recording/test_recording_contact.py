"""One realistic contact, published on the real topics, comes back as one complete, ordered
record: GetRecording, ListRecordings, Export, and `recording.stored`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from conftest import ADMIN_KEY, Served, Stack
from factories import Client, onboard
from google.protobuf import timestamp_pb2
from recording_support import (
    Contact,
    Publisher,
    RecordingEvents,
    eventually,
    media_participant,
    now,
    running_recording,
    stub,
)

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import recording_pb2 as events_pb
from lianluo.events.v1 import routing_pb2
from lianluo.events.v1.envelope_pb2 import Envelope
from lianluo.events.v1.ivr_pb2 import IvrRouted
from lianluo.media.v1 import media_pb2 as media
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime.service import Service
from lianluo.tenants.v1 import tenants_pb2 as tenants_pb

pytestmark = pytest.mark.integration
CUSTOMER, AGENT, BOT = (
    media.PARTICIPANT_ROLE_CUSTOMER,
    media.PARTICIPANT_ROLE_AGENT,
    media.PARTICIPANT_ROLE_BOT,
)
S = media.InteractionState
PROMPT = "Welcome to Acme. Press 1 for cards."


@dataclass
class World:
    tenant: tenants_pb.Tenant
    key: str
    other: tenants_pb.Tenant
    other_key: str
    contact: Contact
    later: Contact
    redelivered: Envelope
    events: RecordingEvents
    channel: grpc.aio.Channel

    def md(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key or self.key}"),)


def _explanation(agent_id: str) -> acd.RoutingExplanation:
    return acd.RoutingExplanation(
        queue="cards",
        wait_seconds=4,
        ring=acd.Ring(index=0, name="skilled"),
        candidates=[
            acd.Candidate(
                agent_id=agent_id,
                rank=1,
                score=0.82,
                features=[acd.FeatureScore(name="skill_fit", value=0.9, weight=0.5)],
            )
        ],
    )


def _contact(c: Contact) -> None:
    """The whole contact of docs/contact-flow.md, as media, the IVR and the ACD publish it."""
    start = media.Interaction(
        id=c.interaction_id,
        tenant_id=c.tenant_id,
        channel=common.CHANNEL_WEB,
        state=S.INTERACTION_STATE_CREATED,
        customer=media.Customer(id="cust-1", display_name="Wang Fang"),
        participants=[media_participant("p-cust", CUSTOMER, "cust-1", "Wang Fang")],
        entry_flow="main",
    )
    c.interaction("created", start)
    c.state(S.INTERACTION_STATE_CREATED, S.INTERACTION_STATE_IN_IVR, "flow_entry")
    c.ivr(
        "prompt",
        common.Prompt(
            id="pr-1",
            text=PROMPT,
            choices=[common.PromptChoice(digit="1", label="cards")],
            expects_answer=True,
        ),
    )
    c.message("p-bot", BOT, text=f"{PROMPT}\n1. cards")  # media's echo on the timeline
    c.message("p-cust", CUSTOMER, text="1")
    c.ivr("routed", IvrRouted(queue="cards"))
    c.routing_request(
        common.RoutingRequirements(
            queue="cards", intent="card_lost", intent_confidence=1.0, customer_id="cust-1"
        )
    )
    c.state(S.INTERACTION_STATE_IN_IVR, S.INTERACTION_STATE_QUEUED, "ivr_routed")
    offer = acd.Offer(id="of-1", interaction_id=c.interaction_id, agent_id="agent-7")
    c.decision("offer", routing_pb2.RoutingOffer(offer=offer), _explanation("agent-7"))
    c.state(S.INTERACTION_STATE_QUEUED, S.INTERACTION_STATE_OFFERED, "offer")
    assign = routing_pb2.RoutingAssign(offer_id="of-1", agent_id="agent-7")
    c.decision("assign", assign, _explanation("agent-7"))
    c.interaction("participant_joined", media_participant("p-agent", AGENT, "agent-7", "Li Wei"))
    c.state(S.INTERACTION_STATE_OFFERED, S.INTERACTION_STATE_CONNECTED, "offer_accepted")
    c.message("p-agent", AGENT, text="Hi, this is Li Wei. Your card is lost?")
    image = media.Attachment(
        uri="s3://acme/photos/card.jpg", name="card.jpg", content_type="image/jpeg", size_bytes=2048
    )
    c.message("p-cust", CUSTOMER, image=image)
    place = media.Location(latitude=31.23, longitude=121.47, label="Branch, 100 Nanjing Road")
    c.message("p-cust", CUSTOMER, location=place)
    field = media.FormField(name="street", label="Street", type=media.FORM_FIELD_TYPE_TEXT)
    c.message("p-agent", AGENT, form=media.Form(form_id="f1", title="Address", fields=[field]))
    field.value = "100 Nanjing Road"
    filled = media.Form(form_id="f1", title="Address", fields=[field], submitted=True)
    c.message("p-cust", CUSTOMER, form=filled)
    c.message("p-agent", AGENT, text="Your new card is on its way.")
    end = media.InteractionEnd(
        final_state=S.INTERACTION_STATE_CLOSED,
        resolution=media.Resolution(code="resolved", note="card reissued"),
        ended_by_participant_id="p-agent",
    )
    c.interaction("ended", end)


async def _record(w: World, interaction_id: str, key: str | None = None) -> pb.Recording:
    request = pb.GetRecordingRequest(tenant_id=w.tenant.id, interaction_id=interaction_id)
    recording: pb.Recording = await stub(w.channel).GetRecording(request, metadata=w.md(key))
    return recording


async def wait_authenticated(channel: grpc.aio.Channel, tenant_id: str, key: str) -> None:
    """Wait until the recording service's configuration view knows the key."""

    async def accepted() -> bool | None:
        try:
            await stub(channel).ListRecordings(
                pb.ListRecordingsRequest(tenant_id=tenant_id),
                metadata=(("authorization", f"Bearer {key}"),),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            return None
        return True

    await eventually(accepted)


@pytest.fixture(scope="module")
async def recording(stack: Stack) -> AsyncIterator[Service]:
    async with running_recording(stack) as service:
        yield service


@pytest.fixture(scope="module")
async def world(stack: Stack, tenants_service: Served, recording: Service) -> AsyncIterator[World]:
    async with (
        grpc.aio.insecure_channel(tenants_service.address) as tenants_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{recording.grpc.port}") as channel,
    ):
        admin = Client(tenants_channel, ADMIN_KEY)
        (tenant, a), (other, b) = await onboard(admin), await onboard(admin)
        for t, client in ((tenant, a), (other, b)):
            await wait_authenticated(channel, t.id, client.key)
        publisher, events = Publisher(stack), RecordingEvents(stack)
        await publisher.start()
        await events.start()
        contact = Contact(tenant.id, now() - timedelta(minutes=10))
        _contact(contact)
        # A second contact of the same tenant, by another customer, that is still going on.
        later = Contact(tenant.id, now() - timedelta(minutes=2))
        created = media.Interaction(
            id=later.interaction_id,
            channel=common.CHANNEL_PHONE,
            customer=media.Customer(id="cust-2"),
            entry_queue="cards",
        )
        later.interaction("created", created)
        # The same event id delivered twice, then one more event after the end.
        redelivered = contact.published[4][1]
        left = media_participant("p-agent", AGENT, "agent-7", "Li Wei")
        left.leave_reason = "wrap_up_done"
        contact.interaction("participant_left", left)
        try:
            # Topics are not ordered with each other: the ACD's and the IVR's events go first
            # here, so only the record's own ordering can put the contact back in order.
            happened = [*contact.published[:-1], *later.published]
            for topic, envelope in sorted(happened, key=lambda p: p[0] != "routing.decision"):
                await publisher.publish(topic, envelope)
            await publisher.publish("interaction.event", redelivered)
            await publisher.publish(*contact.published[-1])
            w = World(tenant, a.key, other, b.key, contact, later, redelivered, events, channel)

            async def all_stored() -> pb.Recording | None:
                try:
                    found = await _record(w, contact.interaction_id)
                except grpc.aio.AioRpcError:
                    return None
                return found if found.summary.entry_count >= len(contact.published) else None

            await eventually(all_stored)
            await eventually(lambda: _record_or_none(w, later.interaction_id))
            yield w
        finally:
            await publisher.stop()
            await events.stop()


async def _record_or_none(w: World, interaction_id: str) -> pb.Recording | None:
    try:
        return await _record(w, interaction_id)
    except grpc.aio.AioRpcError:
        return None


async def test_the_record_holds_every_event_once_in_the_order_it_happened(world: World) -> None:
    w = world
    recording = await _record(w, w.contact.interaction_id)

    assert [e.event.event_id for e in recording.entries] == [
        env.event_id for _, env in w.contact.published
    ]
    assert [e.index for e in recording.entries] == list(range(1, len(w.contact.published) + 1))
    assert [e.topic for e in recording.entries] == [t for t, _ in w.contact.published]
    # Exactly as published: the payload, with the routing explanation, is all there.
    offer = next(e for e in recording.entries if e.event.type == "routing.offer")
    assert offer.event == next(env for _, env in w.contact.published if env.type == "routing.offer")
    s = recording.summary
    assert (s.customer_id, list(s.agent_ids), s.queue) == ("cust-1", ["agent-7"], "cards")
    assert (s.channel, s.state) == (common.CHANNEL_WEB, S.INTERACTION_STATE_CLOSED)
    assert (s.resolution.code, s.resolution.note) == ("resolved", "card reissued")
    assert s.complete and s.entry_count == len(w.contact.published) and s.media_count == 1
    assert s.start_time.ToDatetime() < s.end_time.ToDatetime() < s.retain_until.ToDatetime()
    [photo] = recording.media
    assert (photo.uri, photo.name, photo.content_type) == (
        "s3://acme/photos/card.jpg",
        "card.jpg",
        "image/jpeg",
    )


async def test_a_redelivered_event_is_stored_once_and_stored_is_announced(world: World) -> None:
    w = world
    recording = await _record(w, w.contact.interaction_id)
    ids = [e.event.event_id for e in recording.entries]
    assert ids.count(w.redelivered.event_id) == 1

    def stored(_: Envelope, e: events_pb.RecordingEvent) -> bool:
        return e.interaction_id == w.contact.interaction_id and e.HasField("stored")

    async with asyncio.timeout(20):
        final = await w.events.wait_for(
            lambda env, e: stored(env, e) and e.stored.entry_count == len(ids)
        )
    assert final.stored.complete and final.stored.resolution.code == "resolved"
    assert list(final.stored.agent_ids) == ["agent-7"]
    announced = [e for env, e in w.events.seen if stored(env, e)]
    # Announced at the end, and again when the agent's later leave was added.
    assert len(announced) >= 2
    assert all(e.stored.complete for e in announced)
    assert announced[0].stored.entry_count < announced[-1].stored.entry_count


async def test_list_finds_the_contact_by_customer_agent_and_time(world: World) -> None:
    w = world
    api = stub(w.channel)
    start = w.contact.start

    async def listed(**filters: Any) -> list[str]:
        request = pb.ListRecordingsRequest(tenant_id=w.tenant.id, **filters)
        found = await api.ListRecordings(request, metadata=w.md())
        return [r.interaction_id for r in found.recordings]

    def stamp(moment: object) -> timestamp_pb2.Timestamp:
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(moment)  # type: ignore[arg-type]
        return out

    first, second = w.contact.interaction_id, w.later.interaction_id
    assert await listed() == [second, first]  # newest first
    assert await listed(customer_id="cust-1") == [first]
    assert await listed(customer_id="cust-2") == [second]
    assert await listed(agent_id="agent-7") == [first]
    assert await listed(agent_id="agent-8") == []
    before = stamp(start - timedelta(minutes=1))
    assert await listed(start_time=before, end_time=stamp(start)) == []  # the end is exclusive
    assert await listed(start_time=before, end_time=stamp(start + timedelta(seconds=1))) == [first]
    assert await listed(start_time=stamp(start + timedelta(minutes=1))) == [second]

    page = await api.ListRecordings(
        pb.ListRecordingsRequest(tenant_id=w.tenant.id, page=common.PageRequest(page_size=1)),
        metadata=w.md(),
    )
    rest = await api.ListRecordings(
        pb.ListRecordingsRequest(
            tenant_id=w.tenant.id,
            page=common.PageRequest(page_size=1, page_token=page.page.next_page_token),
        ),
        metadata=w.md(),
    )
    assert [r.interaction_id for r in [*page.recordings, *rest.recordings]] == [second, first]

    # The other tenant, even for the same customer and agent, sees none of it.
    theirs = await api.ListRecordings(
        pb.ListRecordingsRequest(tenant_id=w.other.id, customer_id="cust-1"),
        metadata=w.md(w.other_key),
    )
    assert list(theirs.recordings) == []


async def test_export_reads_as_the_conversation(world: World) -> None:
    w = world
    exported = await stub(w.channel).Export(
        pb.ExportRequest(tenant_id=w.tenant.id, interaction_id=w.contact.interaction_id),
        metadata=w.md(),
    )
    document = json.loads(exported.transcript_json)
    lines = document["transcript"]
    said = [
        (line["who"]["role"], line["text"])
        for line in lines
        if line["type"] in ("interaction.message", "ivr.prompt")
    ]
    assert said == [
        ("bot", PROMPT),  # said once, though media echoes it on the timeline
        ("customer", "1"),
        ("agent", "Hi, this is Li Wei. Your card is lost?"),
        ("customer", "[image: card.jpg]"),
        ("customer", "[location: Branch, 100 Nanjing Road]"),
        ("agent", "[form sent: Address]"),
        ("customer", "[form submitted: Address]"),
        ("agent", "Your new card is on its way."),
    ]
    agent_line = next(line for line in lines if line["text"].startswith("Hi, this is"))
    assert agent_line["who"] == {
        "role": "agent",
        "participant_id": "p-agent",
        "id": "agent-7",
        "name": "Li Wei",
    }
    offer = next(line for line in lines if line["type"] == "routing.offer")
    assert offer["agent_id"] == "agent-7"
    assert offer["explanation"]["candidates"][0]["features"][0]["name"] == "skill_fit"
    request = next(line for line in lines if line["type"] == "routing.requested")
    assert request["requirements"]["intent"] == "card_lost"
    ended = next(line for line in lines if line["type"] == "interaction.ended")
    assert ended["resolution"] == {"code": "resolved", "note": "card reissued"}
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    photo = next(line for line in lines if line["text"] == "[image: card.jpg]")
    [reference] = exported.media
    assert photo["media_item_id"] == reference.media_item_id
    assert (reference.url, reference.name) == ("s3://acme/photos/card.jpg", "card.jpg")
    assert document["summary"]["customer_id"] == "cust-1"
