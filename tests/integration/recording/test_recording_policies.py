"""Who may read a record, what a bad request is told, and how retention, legal hold and a
tenant's deletion purge records (announced as `recording.purged`)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import ADMIN_KEY, Served, Stack
from factories import Client, onboard
from google.protobuf import timestamp_pb2
from grpc_errors import bad_fields, fails
from recording_support import (
    Contact,
    Publisher,
    RecordingEvents,
    eventually,
    now,
    running_recording,
    stub,
)

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import recording_pb2 as events_pb
from lianluo.media.v1 import media_pb2 as media
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime.service import Service
from lianluo.services.recording.domain import entry_hash
from lianluo.tenants.v1 import tenants_pb2 as tenants_pb

pytestmark = pytest.mark.integration
DENIED, MISSING = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class Env:
    admin: Client
    channel: grpc.aio.Channel
    publisher: Publisher
    events: RecordingEvents

    async def tenant(self) -> tuple[tenants_pb.Tenant, tuple[tuple[str, str], ...]]:
        """A new tenant, and call metadata with its key once the recording service knows it."""
        t, client = await onboard(self.admin)

        async def known() -> bool | None:
            try:
                await stub(self.channel).ListRecordings(
                    pb.ListRecordingsRequest(tenant_id=t.id), metadata=client.md
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
                return None
            return True

        await eventually(known)
        return t, client.md

    async def contact(self, tenant_id: str, md: tuple[tuple[str, str], ...]) -> str:
        """A started contact of the tenant, once it is recorded."""
        c = Contact(tenant_id, now() - timedelta(minutes=1))
        created = media.Interaction(
            id=c.interaction_id, channel=common.CHANNEL_WEB, customer=media.Customer(id="c-9")
        )
        await self.publisher.publish("interaction.event", c.interaction("created", created))
        request = pb.GetRecordingRequest(tenant_id=tenant_id, interaction_id=c.interaction_id)

        async def recorded() -> pb.Recording | None:
            try:
                found: pb.Recording = await stub(self.channel).GetRecording(request, metadata=md)
            except grpc.aio.AioRpcError:
                return None
            return found

        await eventually(recorded)
        return str(c.interaction_id)

    async def purged(self, interaction_id: str) -> events_pb.RecordingEvent:
        async with asyncio.timeout(20):
            found: events_pb.RecordingEvent = await self.events.wait_for(
                lambda _, e: e.interaction_id == interaction_id and e.HasField("purged")
            )
        return found


@pytest.fixture(scope="module")
async def recording(stack: Stack) -> AsyncIterator[Service]:
    async with running_recording(stack, LIANLUO_RECORDING_PURGE_INTERVAL_SECONDS="0.3") as svc:
        yield svc


@pytest.fixture(scope="module")
async def env(stack: Stack, tenants_service: Served, recording: Service) -> AsyncIterator[Env]:
    async with (
        grpc.aio.insecure_channel(tenants_service.address) as tenants_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{recording.grpc.port}") as channel,
    ):
        publisher, events = Publisher(stack), RecordingEvents(stack)
        await publisher.start()
        await events.start()
        try:
            yield Env(Client(tenants_channel, ADMIN_KEY), channel, publisher, events)
        finally:
            await publisher.stop()
            await events.stop()


def _stamp(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(now() + timedelta(seconds=seconds_from_now))
    return out


Call = Callable[[str, str], Awaitable[Any]]


def _calls(api: Any, md: tuple[tuple[str, str], ...]) -> dict[str, Call]:
    """Every RPC, called for (tenant id, interaction id) with one key."""
    return {
        "GetRecording": lambda t, i: api.GetRecording(
            pb.GetRecordingRequest(tenant_id=t, interaction_id=i), metadata=md
        ),
        "ListRecordings": lambda t, _: api.ListRecordings(
            pb.ListRecordingsRequest(tenant_id=t), metadata=md
        ),
        "Export": lambda t, i: api.Export(
            pb.ExportRequest(tenant_id=t, interaction_id=i), metadata=md
        ),
        "SetLegalHold": lambda t, i: api.SetLegalHold(
            pb.SetLegalHoldRequest(tenant_id=t, interaction_id=i, held=True, reason="case 1"),
            metadata=md,
        ),
        "VerifyRecording": lambda t, i: api.VerifyRecording(
            pb.VerifyRecordingRequest(tenant_id=t, interaction_id=i), metadata=md
        ),
        "SetRetention": lambda t, i: api.SetRetention(
            pb.SetRetentionRequest(tenant_id=t, interaction_id=i, retain_until=_stamp(-60)),
            metadata=md,
        ),
    }


async def test_a_key_of_another_tenant_reaches_nothing(env: Env) -> None:
    (a, a_md), (b, b_md) = await env.tenant(), await env.tenant()
    interaction_id = await env.contact(a.id, a_md)
    theirs = _calls(stub(env.channel), b_md)
    assert set(theirs) == set(pb.DESCRIPTOR.services_by_name["RecordingService"].methods_by_name)

    for name, call in theirs.items():
        # Naming A's tenant is refused; naming A's interaction under B is as if it did not exist.
        await fails(call(a.id, interaction_id), DENIED)
        if name != "ListRecordings":
            await fails(call(b.id, interaction_id), MISSING)
    # Nothing B tried changed A's record.
    record = await stub(env.channel).GetRecording(
        pb.GetRecordingRequest(tenant_id=a.id, interaction_id=interaction_id), metadata=a_md
    )
    assert not record.summary.legal_hold.held and not record.summary.HasField("retain_until")


async def test_bad_requests_name_the_field(env: Env) -> None:
    t, md = await env.tenant()
    interaction_id = await env.contact(t.id, md)
    api = stub(env.channel)
    cases: list[tuple[Awaitable[Any], set[str]]] = [
        (
            api.ListRecordings(
                pb.ListRecordingsRequest(
                    tenant_id=t.id, start_time=_stamp(0), end_time=_stamp(-3600)
                ),
                metadata=md,
            ),
            {"end_time"},
        ),
        (
            api.ListRecordings(
                pb.ListRecordingsRequest(
                    tenant_id=t.id, page=common.PageRequest(page_size=-1, page_token="nope")
                ),
                metadata=md,
            ),
            {"page.page_size", "page.page_token"},
        ),
        (api.GetRecording(pb.GetRecordingRequest(tenant_id=t.id), metadata=md), {"interaction_id"}),
        (
            api.Export(
                pb.ExportRequest(
                    tenant_id=t.id, interaction_id=interaction_id, link_ttl_seconds=604_801
                ),
                metadata=md,
            ),
            {"link_ttl_seconds"},
        ),
        (
            api.SetLegalHold(
                pb.SetLegalHoldRequest(tenant_id=t.id, interaction_id=interaction_id, held=True),
                metadata=md,
            ),
            {"reason"},
        ),
        (
            api.SetRetention(
                pb.SetRetentionRequest(tenant_id=t.id, interaction_id=interaction_id),
                metadata=md,
            ),
            {"retain_until"},
        ),
    ]
    for call, fields in cases:
        assert bad_fields(await fails(call, INVALID)) == fields


async def test_retention_purges_records_unless_they_are_held(env: Env) -> None:
    t, md = await env.tenant()
    held, free = await env.contact(t.id, md), await env.contact(t.id, md)
    api = stub(env.channel)
    hold = await api.SetLegalHold(
        pb.SetLegalHoldRequest(tenant_id=t.id, interaction_id=held, held=True, reason="case 42"),
        metadata=md,
    )
    assert hold.legal_hold.held and hold.legal_hold.reason == "case 42"
    for interaction_id in (held, free):
        summary = await api.SetRetention(
            pb.SetRetentionRequest(
                tenant_id=t.id, interaction_id=interaction_id, retain_until=_stamp(-1)
            ),
            metadata=md,
        )
        assert summary.retain_until.seconds > 0

    purged = await env.purged(free)
    assert purged.purged.reason == events_pb.PURGE_REASON_RETENTION_EXPIRED
    assert purged.purged.entry_count == 1
    await fails(
        api.GetRecording(pb.GetRecordingRequest(tenant_id=t.id, interaction_id=free), metadata=md),
        MISSING,
    )
    # The sweep that purged the free record passed over the held one.
    still = await api.GetRecording(
        pb.GetRecordingRequest(tenant_id=t.id, interaction_id=held), metadata=md
    )
    assert still.summary.legal_hold.held

    await api.SetLegalHold(
        pb.SetLegalHoldRequest(tenant_id=t.id, interaction_id=held, held=False), metadata=md
    )
    assert (await env.purged(held)).purged.reason == events_pb.PURGE_REASON_RETENTION_EXPIRED


async def test_deleting_a_tenant_purges_its_records(env: Env) -> None:
    t, md = await env.tenant()
    interaction_id = await env.contact(t.id, md)

    await env.admin.tenants.DeleteTenant(
        tenants_pb.DeleteTenantRequest(tenant_id=t.id), metadata=env.admin.md
    )

    purged = await env.purged(interaction_id)
    assert purged.purged.reason == events_pb.PURGE_REASON_TENANT_DELETED
    listed = await stub(env.channel).ListRecordings(
        pb.ListRecordingsRequest(tenant_id=t.id), metadata=env.admin.md
    )
    assert list(listed.recordings) == []


async def test_a_record_edited_in_the_database_fails_verification_naming_the_entry(
    env: Env, stack: Stack
) -> None:
    """Whoever can write the database can change a record; they cannot do it unseen: an edited
    entry breaks its record's hash chain there, and a removed last entry leaves the head
    behind."""
    t, md = await env.tenant()
    api = stub(env.channel)

    async def record_of(messages: int) -> Contact:
        c = Contact(t.id, now() - timedelta(minutes=1))
        created = media.Interaction(
            id=c.interaction_id, channel=common.CHANNEL_WEB, customer=media.Customer(id="c-7")
        )
        await env.publisher.publish("interaction.event", c.interaction("created", created))
        for n in range(messages):
            text = f"my card is 4111 1111 1111 111{n}"
            await env.publisher.publish(
                "interaction.event", c.message("p-1", media.PARTICIPANT_ROLE_CUSTOMER, text=text)
            )
        request = pb.GetRecordingRequest(tenant_id=t.id, interaction_id=c.interaction_id)

        async def stored() -> bool | None:
            try:
                found = await api.GetRecording(request, metadata=md)
            except grpc.aio.AioRpcError as error:
                if error.code() != MISSING:
                    raise
                return None  # not recorded yet
            return True if len(found.entries) == messages + 1 else None

        await eventually(stored)
        return c

    def verify(c: Contact) -> Awaitable[pb.VerifyRecordingResponse]:
        request = pb.VerifyRecordingRequest(tenant_id=t.id, interaction_id=c.interaction_id)
        return api.VerifyRecording(request, metadata=md)  # type: ignore[no-any-return]

    edited, shortened = await record_of(3), await record_of(3)
    for c in (edited, shortened):
        intact = await verify(c)
        assert (intact.intact, intact.entries_checked, intact.problem) == (True, 4, "")
        recording = await api.GetRecording(
            pb.GetRecordingRequest(tenant_id=t.id, interaction_id=c.interaction_id), metadata=md
        )
        chain = sorted(recording.entries, key=lambda e: e.link)
        assert [e.link for e in chain] == [1, 2, 3, 4]
        assert chain[0].previous_sha256 == ""
        assert all(b.previous_sha256 == a.sha256 for a, b in itertools.pairwise(chain))
        assert intact.head_sha256 == chain[-1].sha256

    conn = await asyncpg.connect(stack.database_url)
    try:
        # Someone rewrites what the customer said in the second message (link 3).
        row = await conn.fetchrow(
            "select event_id, envelope from recording.record_entries "
            "where tenant_id = $1 and interaction_id = $2 and link = 3",
            t.id,
            edited.interaction_id,
        )
        forged = row["envelope"].replace(b"4111 1111 1111 1111", b"nothing to see here!")
        assert forged != row["envelope"]
        await conn.execute(
            "update recording.record_entries set envelope = $3 "
            "where tenant_id = $1 and interaction_id = $2 and link = 3",
            t.id,
            edited.interaction_id,
            forged,
        )
        # Someone removes the last entry of the other record, and the count that goes with it.
        await conn.execute(
            "delete from recording.record_entries "
            "where tenant_id = $1 and interaction_id = $2 and link = 4",
            t.id,
            shortened.interaction_id,
        )
        await conn.execute(
            "update recording.recordings set entry_count = 3 "
            "where tenant_id = $1 and interaction_id = $2",
            t.id,
            shortened.interaction_id,
        )
    finally:
        await conn.close()

    broken = await verify(edited)
    assert (broken.intact, broken.first_bad_link, broken.entries_checked) == (False, 3, 3)
    assert broken.first_bad_event_id == row["event_id"]
    assert "changed after it was stored" in broken.problem
    cut = await verify(shortened)
    assert (cut.intact, cut.first_bad_link) == (False, 4)
    assert "removed" in cut.problem


async def test_a_record_rewritten_hashes_and_all_no_longer_matches_its_days_published_root(
    env: Env, stack: Stack
) -> None:
    """The chain alone catches an edit; someone who also rewrites every hash after it and the
    head is caught by the root published for the day, which they cannot take back."""
    t, md = await env.tenant()
    api = stub(env.channel)
    c = Contact(t.id, now() - timedelta(days=1))
    created = media.Interaction(
        id=c.interaction_id, channel=common.CHANNEL_WEB, customer=media.Customer(id="c-8")
    )
    await env.publisher.publish("interaction.event", c.interaction("created", created))
    text = "please refund order 1234"
    await env.publisher.publish(
        "interaction.event", c.message("p-1", media.PARTICIPANT_ROLE_CUSTOMER, text=text)
    )
    request = pb.VerifyRecordingRequest(tenant_id=t.id, interaction_id=c.interaction_id)

    async def stored() -> pb.VerifyRecordingResponse | None:
        try:
            answer: pb.VerifyRecordingResponse = await api.VerifyRecording(request, metadata=md)
        except grpc.aio.AioRpcError as error:
            if error.code() != MISSING:
                raise
            return None
        return answer if answer.entries_checked == 2 else None

    await eventually(stored)
    conn = await asyncpg.connect(stack.database_url)
    try:
        # The entries were stored yesterday (the clock of this test cannot wait for midnight).
        await conn.execute(
            "update recording.record_entries set stored_at = stored_at - interval '1 day' "
            "where tenant_id = $1",
            t.id,
        )
        day = (now() - timedelta(days=1)).date().isoformat()
        async with asyncio.timeout(20):
            root = await env.events.wait_for(
                lambda envelope, e: envelope.tenant_id == t.id and e.HasField("daily_root")
            )
        assert (root.daily_root.day, root.daily_root.records) == (day, 1)
        anchored = await api.VerifyRecording(request, metadata=md)
        assert anchored.intact
        assert [(a.day, a.root_sha256) for a in anchored.anchors] == [
            (day, root.daily_root.root_sha256)
        ]

        # Rewrite the message, then its hash and the record's head to match.
        row = await conn.fetchrow(
            "select event_id, topic, envelope, previous_sha256 from recording.record_entries "
            "where tenant_id = $1 and interaction_id = $2 and link = 2",
            t.id,
            c.interaction_id,
        )
        forged = row["envelope"].replace(b"refund order 1234", b"cancel my account")
        digest = entry_hash(row["previous_sha256"], row["topic"], row["event_id"], forged)
        await conn.execute(
            "update recording.record_entries set envelope = $3, sha256 = $4 "
            "where tenant_id = $1 and interaction_id = $2 and link = 2",
            t.id,
            c.interaction_id,
            forged,
            digest,
        )
        await conn.execute(
            "update recording.recordings set head_sha256 = $3 "
            "where tenant_id = $1 and interaction_id = $2",
            t.id,
            c.interaction_id,
            digest,
        )
    finally:
        await conn.close()
    caught = await api.VerifyRecording(request, metadata=md)
    assert not caught.intact
    assert f"root published for {day}" in caught.problem
    assert not caught.anchors
