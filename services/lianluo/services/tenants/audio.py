"""A tenant's recordings: authorise, validate, convert, write and audit, in one transaction.

Recordings are read through AudioService only (the voice service fetches them with the cell's
admin key), so a change is written to the audit log but not published on `tenant.config`:
audio is too large to give every service.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from lianluo.runtime.errors import FieldViolation, InvalidArgument, NotFound
from lianluo.runtime.paging import decode_token, encode_token, page_size
from lianluo.services.tenants import audio_rules, events
from lianluo.services.tenants.audio_repository import AudioRepository
from lianluo.services.tenants.repository import Repository
from lianluo.services.tenants.service import scoped_tenant
from lianluo.tenants.v1 import audio_pb2 as apb

AUDIO = "audio"


def _after(token: str, scope: str) -> tuple[str, str] | None:
    """The (name, language) a list token of `scope` continues after."""
    if not token:
        return None
    after = decode_token(token, scope)
    if not (
        isinstance(after, list)
        and len(after) == 2
        and all(isinstance(part, str) and "\x00" not in part for part in after)
    ):
        raise InvalidArgument([FieldViolation("page.page_token", "not a token from this list")])
    return after[0], after[1]


def _named(name: str) -> None:
    if not name:
        raise InvalidArgument([FieldViolation("name", "must be set")])


class Audio:
    """Every operation of the audio API, scoped to the caller's tenant."""

    def __init__(self, pool: asyncpg.Pool, repo: Repository, store: AudioRepository) -> None:
        self._pool = pool
        self._repo = repo
        self._store = store

    async def put_audio(self, tenant_id: str, audio: apb.Audio) -> apb.Audio:
        """Store a recording as a phone plays it, replacing the one of its name and language;
        the answer has no WAV."""
        tid = scoped_tenant(tenant_id)
        # Before the transaction: a file refused, or being converted, holds no connection.
        kept = audio_rules.validate_audio(audio)
        name, language = audio.name, audio.language
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", tenant_id)
            stored = await self._store.audio(conn, tid, name, language)
            if stored is not None and stored.sha256 == kept.sha256:
                return stored  # a retry, or the same file again: nothing changes
            revision = await self._store.put(conn, tid, name, language, kept, now)
            await events.audit_unpublished(
                conn,
                str(tid),
                AUDIO,
                audio_rules.key_of(name, language),
                revision,
                deleted=False,
            )
        answer = apb.Audio(
            tenant_id=str(tid),
            name=name,
            language=language,
            sha256=kept.sha256,
            duration_ms=kept.duration_ms,
        )
        answer.update_time.FromDatetime(now)
        return answer

    async def get_audio(self, tenant_id: str, name: str, language: str) -> apb.Audio:
        """One recording, with its WAV as kept."""
        tid = scoped_tenant(tenant_id)
        _named(name)
        found = None
        if audio_rules.could_exist(name, language):
            async with self._pool.acquire() as conn:
                found = await self._store.audio(conn, tid, name, language, with_wav=True)
        if found is None:
            raise NotFound(AUDIO, audio_rules.key_of(name, language))
        return found

    async def delete_audio(self, tenant_id: str, name: str, language: str) -> None:
        tid = scoped_tenant(tenant_id)
        _named(name)
        key = audio_rules.key_of(name, language)
        if not audio_rules.could_exist(name, language):
            raise NotFound(AUDIO, key)
        async with self._pool.acquire() as conn, conn.transaction():
            revision = await self._store.delete(conn, tid, name, language)
            if revision is None:
                raise NotFound(AUDIO, key)
            await events.audit_unpublished(conn, str(tid), AUDIO, key, revision + 1, deleted=True)

    async def list_audio(
        self, tenant_id: str, size: int, token: str
    ) -> tuple[list[apb.Audio], str]:
        """One page of the tenant's recordings by name and language, without their WAVs."""
        tid = scoped_tenant(tenant_id)
        scope = f"{AUDIO}:{tid}"
        wanted, after = page_size(size), _after(token, scope)
        async with self._pool.acquire() as conn:
            items = await self._store.page(conn, tid, after, wanted)
        more = len(items) == wanted
        return items, encode_token(scope, [items[-1].name, items[-1].language]) if more else ""
