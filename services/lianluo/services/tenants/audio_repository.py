"""Postgres access for a tenant's recordings. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from lianluo.services.tenants.audio_rules import PhoneAudio
from lianluo.tenants.v1 import audio_pb2 as apb

# Without the WAV: lists and the answer to a put never carry it.
_COLUMNS = "tenant_id, name, language, sha256, duration_ms, updated_at"


def audio_of(row: asyncpg.Record, wav: bytes = b"") -> apb.Audio:
    audio = apb.Audio(
        tenant_id=str(row["tenant_id"]),
        name=row["name"],
        language=row["language"],
        wav=wav,
        sha256=row["sha256"],
        duration_ms=row["duration_ms"],
    )
    audio.update_time.FromDatetime(row["updated_at"])
    return audio


class AudioRepository:
    """Recordings by (tenant, name, language)."""

    async def audio(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        name: str,
        language: str,
        *,
        with_wav: bool = False,
    ) -> apb.Audio | None:
        columns = f"{_COLUMNS}, wav" if with_wav else _COLUMNS
        row = await conn.fetchrow(
            f"select {columns} from audio where tenant_id = $1 and name = $2 "  # noqa: S608
            "and language = $3",
            tenant_id,
            name,
            language,
        )
        if row is None:
            return None
        return audio_of(row, row["wav"] if with_wav else b"")

    async def put(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        name: str,
        language: str,
        kept: PhoneAudio,
        now: datetime,
    ) -> int:
        """Store the recording under (name, language), replacing the one there; its revision."""
        revision: int = await conn.fetchval(
            "insert into audio (tenant_id, name, language, wav, sha256, duration_ms, revision, "
            "updated_at) values ($1, $2, $3, $4, $5, $6, 1, $7) "
            "on conflict (tenant_id, name, language) do update set wav = excluded.wav, "
            "sha256 = excluded.sha256, duration_ms = excluded.duration_ms, "
            "revision = audio.revision + 1, updated_at = excluded.updated_at "
            "returning revision",
            tenant_id,
            name,
            language,
            kept.wav,
            kept.sha256,
            kept.duration_ms,
            now,
        )
        return revision

    async def delete(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str, language: str
    ) -> int | None:
        """Remove the recording; the revision it had, or None if there was none."""
        revision: int | None = await conn.fetchval(
            "delete from audio where tenant_id = $1 and name = $2 and language = $3 "
            "returning revision",
            tenant_id,
            name,
            language,
        )
        return revision

    async def page(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        after: tuple[str, str] | None,
        size: int,
    ) -> list[apb.Audio]:
        """One page in (name, language) order, after the given name and language."""
        rows = await conn.fetch(
            f"select {_COLUMNS} from audio where tenant_id = $1 "  # noqa: S608
            "and ($2::text is null or (name, language) > ($2, $3)) "
            "order by name, language limit $4",
            tenant_id,
            after[0] if after else None,
            after[1] if after else None,
            size,
        )
        return [audio_of(r) for r in rows]
