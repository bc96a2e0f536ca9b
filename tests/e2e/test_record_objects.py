"""A record's files end to end: a file a customer sends is kept in the cell's object store with
its sha256, exported through a link that expires and is checked on the way out (alone, and in
the export's zip with the transcript), and deleted
from the store when retention purges its record, unless the record is on legal hold. The
tenants, media, gateway and recording services run as their own processes, over one object
store directory."""

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

import aiohttp
import grpc
import pytest
from cell_support import retrying, tenant_with_queue
from conftest import Stack, running_cell
from factories import Client
from google.protobuf import timestamp_pb2

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack.cell import Cell
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


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("objects"))
    with running_cell(
        stack,
        folder,
        f"objects_{uuid.uuid4().hex[:10]}",
        services=["tenants", "media", "gateway", "recording"],
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
