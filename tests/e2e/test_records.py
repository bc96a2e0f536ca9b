"""A record's content end to end, the tenants, media, ivr, gateway and recording services each
a process over one object store directory. Search finds a record by its words, never by a
masked card number; an IVR's secret is kept by nobody but the IVR. A file a customer sends is
kept in the store with its sha256, exported through a link that expires and is checked on the
way out (alone, and in the export's zip with the transcript), and deleted from the store when
retention purges its record, unless the record is on legal hold."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import urllib.parse
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cell_support import retrying, tenant_with_queue
from conftest import Stack, running_cell
from factories import Client
from google.protobuf import timestamp_pb2

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import StreamClient
from lianluo.events.v1 import interaction_pb2, ivr_pb2
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
from lianluo.runtime.objects import Objects, attachment_key
from lianluo.runtime.settings import ObjectStoreSettings
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
S = mpb.InteractionState


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("objects"))
    with running_cell(
        stack,
        folder,
        f"objects_{uuid.uuid4().hex[:10]}",
        services=["tenants", "media", "ivr", "gateway", "recording"],
        LIANLUO_RECORDING_PURGE_INTERVAL_SECONDS="0.5",
    ) as running:
        yield running


@dataclass
class World:
    tenant: pb.Tenant
    client: Client
    media: media_rpc.MediaServiceStub
    files: gateway_rpc.AttachmentServiceStub
    records: recording_rpc.RecordingServiceStub
    store: Objects


@pytest.fixture(scope="module")
async def world(cell: Cell) -> AsyncIterator[World]:
    async with (
        grpc.aio.insecure_channel(cell.address("tenants")) as tch,
        grpc.aio.insecure_channel(cell.address("media")) as mch,
        grpc.aio.insecure_channel(cell.address("gateway")) as gch,
        grpc.aio.insecure_channel(cell.address("recording")) as rch,
    ):
        tenant, client = await tenant_with_queue(tch)
        store = Objects(ObjectStoreSettings(object_store_path=str(cell.log_dir.parent / "objects")))
        yield World(
            tenant,
            client,
            media_rpc.MediaServiceStub(mch),
            gateway_rpc.AttachmentServiceStub(gch),
            recording_rpc.RecordingServiceStub(rch),
            store,
        )


async def a_file_sent(w: World, data: bytes) -> tuple[str, str]:
    """A chat in which the customer sends `data` as a file, then ends it; (interaction id,
    attachment id)."""
    started = await retrying(
        lambda: w.media.StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=w.tenant.id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                customer=mpb.Customer(id="c-1"),
                queue="cards",
            ),
            metadata=w.client.md,
        )
    )
    assert isinstance(started, mpb.StartInteractionResponse)
    iid, me = started.interaction.id, started.customer_participant_id
    uploaded = await retrying(
        lambda: w.files.UploadAttachment(
            gpb.UploadAttachmentRequest(
                tenant_id=w.tenant.id,
                interaction_id=iid,
                name="statement.txt",
                content_type="text/plain",
                content=data,
            ),
            metadata=w.client.md,
        )
    )
    assert isinstance(uploaded, gpb.UploadedAttachment)
    await w.media.Send(
        mpb.SendRequest(
            tenant_id=w.tenant.id, interaction_id=iid, participant_id=me, content=uploaded.content
        ),
        metadata=w.client.md,
    )
    await w.media.End(
        mpb.EndRequest(
            tenant_id=w.tenant.id,
            interaction_id=iid,
            participant_id=me,
            resolution=mpb.Resolution(code="resolved"),
        ),
        metadata=w.client.md,
    )
    return iid, uploaded.attachment_id


async def recorded_file(w: World, iid: str) -> rpb.MediaItem:
    """The record's file, once the record holds it and has ended."""
    request = rpb.GetRecordingRequest(tenant_id=w.tenant.id, interaction_id=iid)
    async with asyncio.timeout(30):
        while True:
            try:
                record = await w.records.GetRecording(request, metadata=w.client.md)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                if record.summary.complete and record.media:
                    return record.media[0]
            await asyncio.sleep(0.2)


async def export_link(w: World, iid: str) -> rpb.MediaReference:
    exported = await w.records.Export(
        rpb.ExportRequest(tenant_id=w.tenant.id, interaction_id=iid, link_ttl_seconds=600),
        metadata=w.client.md,
    )
    (reference,) = exported.media
    return reference


async def opened(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.read()


def past() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    return stamp


async def test_a_file_is_stored_hashed_exported_by_a_signed_link_and_purged_unless_held(
    world: World,
) -> None:
    w = world
    purged_data, held_data = b"statement for purge " * 50, b"statement under hold " * 50
    (purged, purged_file), (held, held_file) = (
        await a_file_sent(w, purged_data),
        await a_file_sent(w, held_data),
    )

    item = await recorded_file(w, purged)
    assert item.sha256 == hashlib.sha256(purged_data).hexdigest(), "stored with its sha256"
    key = attachment_key(w.tenant.id, purged_file)
    assert await w.store.get(key, item.sha256) == purged_data

    exported = await w.records.Export(
        rpb.ExportRequest(tenant_id=w.tenant.id, interaction_id=purged, link_ttl_seconds=600),
        metadata=w.client.md,
    )
    (reference,) = exported.media
    assert reference.sha256 == item.sha256 and reference.expire_time.seconds > 0
    assert await opened(reference.url) == (200, purged_data)
    status, zipped = await opened(exported.bundle_url)
    assert status == 200 and hashlib.sha256(zipped).hexdigest() == exported.bundle_sha256
    with zipfile.ZipFile(io.BytesIO(zipped)) as bundle:
        assert json.loads(bundle.read("transcript.json")) == json.loads(exported.transcript_json)
        [inside] = [n for n in bundle.namelist() if n.startswith("media/")]
        assert inside.endswith("/statement.txt") and bundle.read(inside) == purged_data
    # A bundle lives as long as its link: one for a second is deleted once it has expired.
    brief = await w.records.Export(
        rpb.ExportRequest(tenant_id=w.tenant.id, interaction_id=purged, link_ttl_seconds=1),
        metadata=w.client.md,
    )
    path = urllib.parse.urlsplit(brief.bundle_url).path
    bundle_key = path.removeprefix(f"/v1/objects/{brief.bundle_sha256}/")
    assert bundle_key.startswith(f"tenants/{w.tenant.id}/exports/")
    assert not await w.store.absent(bundle_key)
    async with asyncio.timeout(30):
        while not await w.store.absent(bundle_key):
            await asyncio.sleep(0.2)
    status, _ = await opened(reference.url.replace("signature=", "signature=0"))
    assert status == 403, "a link is opened only with its own signature"
    await recorded_file(w, held)
    kept_link = (await export_link(w, held)).url

    await w.records.SetLegalHold(
        rpb.SetLegalHoldRequest(
            tenant_id=w.tenant.id, interaction_id=held, held=True, reason="dispute 7"
        ),
        metadata=w.client.md,
    )
    for iid in (purged, held):
        await w.records.SetRetention(
            rpb.SetRetentionRequest(tenant_id=w.tenant.id, interaction_id=iid, retain_until=past()),
            metadata=w.client.md,
        )

    async with asyncio.timeout(30):
        while not await w.store.absent(key):
            await asyncio.sleep(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await w.records.GetRecording(
            rpb.GetRecordingRequest(tenant_id=w.tenant.id, interaction_id=purged),
            metadata=w.client.md,
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    status, _ = await opened(reference.url)
    assert status == 410, "the link of a purged file finds it deleted"

    # The tenant's audit log says the record was purged and its objects deleted.
    async with asyncio.timeout(30):
        while True:
            entries = await w.client.audit.ListAuditEntries(
                pb.ListAuditEntriesRequest(tenant_id=w.tenant.id), metadata=w.client.md
            )
            logged = {(e.kind, e.method) for e in entries.entries if e.resource_id == purged}
            if logged == {
                ("recording", "recording.purged"),
                ("recording_objects", "recording.objects_deleted"),
            }:
                break
            await asyncio.sleep(0.3)

    # The held record and its file stay whole.
    assert await opened(kept_link) == (200, held_data)
    held_item = await recorded_file(w, held)
    assert await w.store.get(attachment_key(w.tenant.id, held_file), held_item.sha256) == held_data


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

        async with asyncio.timeout(60):  # until both records hold their last events
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
        async with asyncio.timeout(60):
            while True:
                record = await retrying(
                    lambda: records.GetRecording(
                        rpb.GetRecordingRequest(tenant_id=tenant.id, interaction_id=iid),
                        metadata=client.md,
                    ),
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
