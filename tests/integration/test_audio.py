"""A tenant's recorded prompts as its admins store them and the voice service fetches them,
over gRPC against the real Postgres: kept as a phone plays them, replaced, paged, deleted and
audited, and nothing of one tenant visible to another."""

from __future__ import annotations

import hashlib
import io
import uuid
import wave

import asyncpg
import grpc
import pytest
from audio_files import shape, tone
from conftest import ADMIN_KEY, Stack
from factories import Client, agent, onboard, queue, user
from grpc_errors import fails, field_errors

from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import audio_pb2 as apb
from lianluo.tenants.v1 import audio_pb2_grpc as arpc
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
def admin(channel: grpc.aio.Channel) -> Client:
    return Client(channel, ADMIN_KEY)


def recordings(client: Client) -> arpc.AudioServiceStub:
    return arpc.AudioServiceStub(client.channel)


async def put(c: Client, tenant_id: str, name: str, wav: bytes, language: str = "") -> apb.Audio:
    stored: apb.Audio = await recordings(c).PutAudio(
        apb.PutAudioRequest(
            tenant_id=tenant_id, audio=apb.Audio(name=name, language=language, wav=wav)
        ),
        metadata=c.md,
    )
    return stored


async def get(c: Client, tenant_id: str, name: str, language: str = "") -> apb.Audio:
    found: apb.Audio = await recordings(c).GetAudio(
        apb.GetAudioRequest(tenant_id=tenant_id, name=name, language=language), metadata=c.md
    )
    return found


async def delete(c: Client, tenant_id: str, name: str, language: str = "") -> None:
    await recordings(c).DeleteAudio(
        apb.DeleteAudioRequest(tenant_id=tenant_id, name=name, language=language), metadata=c.md
    )


async def test_a_recording_is_kept_as_a_phone_plays_it_replaced_and_deleted(
    admin: Client,
) -> None:
    t, c = await onboard(admin)
    stored = await put(c, t.id, "welcome", tone(2.0, rate=16_000, channels=2), "en")
    assert (stored.tenant_id, stored.name, stored.language) == (t.id, "welcome", "en")
    assert stored.duration_ms == 2_000 and stored.update_time.seconds > 0
    assert not stored.wav, "only GetAudio's answer carries the WAV"

    # The voice service fetches it with the cell's admin key.
    for reader in (c, admin):
        got = await get(reader, t.id, "welcome", "en")
        assert shape(got.wav) == (1, 2, 8_000, 16_000)
        assert got.sha256 == hashlib.sha256(got.wav).hexdigest() == stored.sha256
        assert got.duration_ms == 2_000 and got.update_time == stored.update_time
    # (name, language) is the key: no fallback from a language to none, or back.
    await fails(get(c, t.id, "welcome"), grpc.StatusCode.NOT_FOUND)
    await fails(get(c, t.id, "welcome", "zh"), grpc.StatusCode.NOT_FOUND)

    same = await put(c, t.id, "welcome", tone(2.0, rate=16_000, channels=2), "en")
    assert same == stored, "the same file again changes nothing"
    replaced = await put(c, t.id, "welcome", tone(0.5, rate=44_100, hz=660.0), "en")
    assert replaced.duration_ms == 500 and replaced.sha256 != stored.sha256
    got = await get(c, t.id, "welcome", "en")
    assert shape(got.wav) == (1, 2, 8_000, 4_000) and got.sha256 == replaced.sha256

    await delete(c, t.id, "welcome", "en")
    await fails(get(c, t.id, "welcome", "en"), grpc.StatusCode.NOT_FOUND)
    await fails(delete(c, t.id, "welcome", "en"), grpc.StatusCode.NOT_FOUND)

    entries = await c.audit.ListAuditEntries(
        pb.ListAuditEntriesRequest(tenant_id=t.id), metadata=c.md
    )
    mine = [
        (e.kind, e.method.rsplit("/", 1)[-1], e.revision, e.deleted)
        for e in entries.entries
        if e.resource_id == "welcome/en"
    ]
    assert mine == [
        ("audio", "PutAudio", 1, False),
        ("audio", "PutAudio", 2, False),
        ("audio", "DeleteAudio", 3, True),
    ]


async def test_recordings_are_listed_by_name_then_language_a_page_at_a_time(
    admin: Client,
) -> None:
    t, c = await onboard(admin)
    short = tone(0.1)
    for name, language in [
        ("welcome", "zh"),
        ("hold.music", ""),
        ("welcome", ""),
        ("welcome", "en"),
        ("menu-main", "en"),
    ]:
        await put(c, t.id, name, short, language)
    seen, token, pages = [], "", 0
    while True:
        page = await recordings(c).ListAudio(
            apb.ListAudioRequest(
                tenant_id=t.id, page=common.PageRequest(page_size=2, page_token=token)
            ),
            metadata=c.md,
        )
        pages += 1
        assert all(not a.wav and a.duration_ms == 100 and len(a.sha256) == 64 for a in page.audio)
        seen += [(a.name, a.language) for a in page.audio]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == [
        ("hold.music", ""),
        ("menu-main", "en"),
        ("welcome", ""),
        ("welcome", "en"),
        ("welcome", "zh"),
    ]
    assert pages == 3
    error = await fails(
        recordings(c).ListAudio(
            apb.ListAudioRequest(tenant_id=t.id, page=common.PageRequest(page_token="nope")),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_errors(error)) == {"page.page_token"}


async def test_bad_input_names_the_field_and_says_why(admin: Client) -> None:
    t, c = await onboard(admin)
    eight_bit = io.BytesIO()
    with wave.open(eight_bit, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8_000)
        writer.writeframes(b"\x80" * 800)
    for wav, why in [
        (b"ID3\x04 not a wav at all", "not a WAV file"),
        (eight_bit.getvalue(), "must be 16-bit PCM"),
        (tone(0.1, rate=96_000), "must have 8,000 to 48,000 samples a second"),
        (b"", "must be set"),
    ]:
        error = await fails(put(c, t.id, "welcome", wav), grpc.StatusCode.INVALID_ARGUMENT)
        fields = field_errors(error)
        assert set(fields) == {"audio.wav"} and fields["audio.wav"].startswith(why), fields
    error = await fails(put(c, t.id, "Welcome!", tone(0.1), "EN"), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_errors(error)) == {"audio.name", "audio.language"}
    error = await fails(get(c, t.id, ""), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_errors(error)) == {"name"}
    # A name no recording can have is simply not found.
    await fails(get(c, t.id, "x" * 65), grpc.StatusCode.NOT_FOUND)
    await fails(delete(c, t.id, "Welcome!"), grpc.StatusCode.NOT_FOUND)
    listed = await recordings(c).ListAudio(apb.ListAudioRequest(tenant_id=t.id), metadata=c.md)
    assert not listed.audio, "nothing refused was stored"


async def test_another_tenant_sees_nothing_and_the_recordings_leave_with_their_tenant(
    admin: Client, stack: Stack
) -> None:
    a, as_a = await onboard(admin)
    b, as_b = await onboard(admin)
    mine = await put(as_a, a.id, "welcome", tone(0.3), "zh")
    await put(as_b, b.id, "goodbye", tone(0.2))

    listed = await recordings(as_b).ListAudio(
        apb.ListAudioRequest(tenant_id=b.id), metadata=as_b.md
    )
    assert [x.name for x in listed.audio] == ["goodbye"]
    # A's name under B's tenant is not found, exactly as a name that does not exist.
    await fails(get(as_b, b.id, "welcome", "zh"), grpc.StatusCode.NOT_FOUND)
    await fails(delete(as_b, b.id, "welcome", "zh"), grpc.StatusCode.NOT_FOUND)
    # Naming A's tenant with B's key is refused before anything is read.
    await fails(get(as_b, a.id, "welcome", "zh"), grpc.StatusCode.PERMISSION_DENIED)
    await fails(delete(as_b, a.id, "welcome", "zh"), grpc.StatusCode.PERMISSION_DENIED)
    await fails(put(as_b, a.id, "welcome", tone(0.1), "zh"), grpc.StatusCode.PERMISSION_DENIED)
    assert (await get(as_a, a.id, "welcome", "zh")).sha256 == mine.sha256

    await admin.tenants.DeleteTenant(pb.DeleteTenantRequest(tenant_id=a.id), metadata=admin.md)
    conn = await asyncpg.connect(stack.database_url)
    try:
        left = await conn.fetchval(
            "select count(*) from tenants.audio where tenant_id = $1", uuid.UUID(a.id)
        )
    finally:
        await conn.close()
    assert left == 0


async def test_agents_neither_read_nor_write_and_supervisors_only_read(admin: Client) -> None:
    t, c = await onboard(admin)
    await c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md)
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    await put(c, t.id, "welcome", tone(0.1))
    people = {
        "agent": user("li", pb.ROLE_AGENT, agent="li.wei"),
        "supervisor": user("sam", pb.ROLE_SUPERVISOR, queues=["cards"]),
    }
    as_person = {}
    for name, person in people.items():
        await c.users.CreateUser(
            pb.CreateUserRequest(tenant_id=t.id, user=person, password=PASSWORD), metadata=c.md
        )
        tokens = await c.auth.Login(
            pb.LoginRequest(tenant=t.name, name=person.name, password=PASSWORD)
        )
        as_person[name] = Client(c.channel, tokens.access_token)

    denied = grpc.StatusCode.PERMISSION_DENIED
    await fails(put(as_person["agent"], t.id, "mine", tone(0.1)), denied)
    await fails(get(as_person["agent"], t.id, "welcome"), denied)
    assert (await get(as_person["supervisor"], t.id, "welcome")).duration_ms == 100
    await fails(put(as_person["supervisor"], t.id, "mine", tone(0.1)), denied)
    await fails(delete(as_person["supervisor"], t.id, "welcome"), denied)
