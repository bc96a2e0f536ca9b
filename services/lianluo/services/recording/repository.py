"""Postgres access for the recording service. Every query is scoped by the tenant id."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import asyncpg

from lianluo.events.v1.envelope_pb2 import Envelope
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime.objects import stored_key
from lianluo.services.recording import domain
from lianluo.services.recording.domain import StoredEntry, Summary
from lianluo.services.recording.requests import ListFilter, Page

_SUMMARY_COLUMNS = (
    "tenant_id, interaction_id, start_time, channel, customer_id, agent_ids, queue, state, "
    "resolution_code, resolution_note, end_time, complete, entry_count, media_count, "
    "retain_until, retention_explicit, legal_hold, legal_hold_reason, legal_hold_time, "
    "head_sha256"
)
_SAVED_COLUMNS = _SUMMARY_COLUMNS.split(", ")[2:]
# Distinct words a record keeps for search: a week-long chat has a few thousand; the bound keeps
# one endless conversation from growing its row without end.
MAX_WORDS = 20_000


def _summary(row: asyncpg.Record) -> Summary:
    values = dict(row)
    values["agent_ids"] = list(values["agent_ids"])
    return Summary(**values)


class Repository:
    """Summaries, entries and media items of recorded interactions."""

    async def lock_or_create(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str, first_seen: datetime
    ) -> Summary:
        """The interaction's summary, locked for this transaction; created on its first event."""
        await conn.execute(
            "insert into recordings (tenant_id, interaction_id, start_time) values ($1, $2, $3) "
            "on conflict do nothing",
            tenant_id,
            interaction_id,
            first_seen,
        )
        summary = await self.get_summary(conn, tenant_id, interaction_id, for_update=True)
        assert summary is not None
        return summary

    async def get_summary(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        interaction_id: str,
        *,
        for_update: bool = False,
    ) -> Summary | None:
        row = await conn.fetchrow(
            f"select {_SUMMARY_COLUMNS} from recordings "  # noqa: S608 - constant columns
            "where tenant_id = $1 and interaction_id = $2" + (" for update" if for_update else ""),
            tenant_id,
            interaction_id,
        )
        return None if row is None else _summary(row)

    async def save_summary(self, conn: asyncpg.Connection, s: Summary, words: str = "") -> None:
        """Store the summary, and add `words` (lianluo.domain.words.document_text) to the
        record's in the same update; a record with MAX_WORDS distinct words takes no more."""
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(_SAVED_COLUMNS, start=5))
        await conn.execute(
            f"update recordings set {sets}, updated_at = now(), "  # noqa: S608 - constant columns
            "words = case when $3 <> '' and length(words) < $4 "
            "then words || to_tsvector('simple', $3) else words end "
            "where tenant_id = $1 and interaction_id = $2",
            s.tenant_id,
            s.interaction_id,
            words,
            MAX_WORDS,
            *(getattr(s, c) for c in _SAVED_COLUMNS),
        )

    async def insert_entry(
        self, conn: asyncpg.Connection, tenant_id: str, e: domain.Event
    ) -> bytes | None:
        """Store one event as the next link of its record's hash chain; its hash, the record's
        new head, or None when this event id is already in the record. The caller holds the
        record's row lock (lock_or_create), so the links of one record are made one at a
        time."""
        last = await conn.fetchrow(
            "select link, sha256 from record_entries where tenant_id = $1 "
            "and interaction_id = $2 and link is not null order by link desc limit 1",
            tenant_id,
            e.interaction_id,
        )
        previous, link = (last["sha256"], last["link"] + 1) if last else (b"", 1)
        body = e.envelope.SerializeToString()
        digest = domain.entry_hash(previous, e.topic, e.envelope.event_id, body)
        inserted = await conn.fetchval(
            "insert into record_entries (tenant_id, interaction_id, event_id, topic, event_type, "
            "sequence, occur_time, envelope, link, previous_sha256, sha256) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
            "on conflict do nothing returning true",
            tenant_id,
            e.interaction_id,
            e.envelope.event_id,
            e.topic,
            e.envelope.type,
            e.sequence,
            e.occur_time,
            body,
            link,
            previous,
            digest,
        )
        return digest if inserted else None

    async def chain(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> list[domain.ChainedEntry]:
        """The record's entries as stored, for the chain (its head is on its summary)."""
        rows = await conn.fetch(
            "select link, topic, event_id, envelope, previous_sha256, sha256, "
            "(stored_at at time zone 'UTC')::date as stored_day from record_entries "
            "where tenant_id = $1 and interaction_id = $2 order by link",
            tenant_id,
            interaction_id,
        )
        return [domain.ChainedEntry(**dict(r)) for r in rows]

    async def entries(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> list[StoredEntry]:
        rows = await conn.fetch(
            "select topic, sequence, occur_time, arrival, envelope, link, sha256, previous_sha256 "
            "from record_entries "
            "where tenant_id = $1 and interaction_id = $2",
            tenant_id,
            interaction_id,
        )
        return [
            StoredEntry(
                r["topic"],
                r["sequence"],
                r["occur_time"],
                r["arrival"],
                Envelope.FromString(r["envelope"]),
                r["link"],
                r["sha256"],
                r["previous_sha256"],
            )
            for r in rows
        ]

    async def roots_of_days(
        self, conn: asyncpg.Connection, tenant_id: str, days: Iterable[date]
    ) -> list[domain.DayRoot]:
        """The tenant's published roots of `days`."""
        rows = await conn.fetch(
            "select day, root_sha256, leaves from daily_roots "
            "where tenant_id = $1 and day = any($2::date[]) order by day",
            tenant_id,
            sorted(set(days)),
        )
        return [domain.DayRoot(r["day"], r["root_sha256"], r["leaves"]) for r in rows]

    async def days_without_root(
        self, conn: asyncpg.Connection, before: date, limit: int
    ) -> list[tuple[str, date]]:
        """(tenant, day) pairs with entries stored on a day before `before` and no root yet."""
        rows = await conn.fetch(
            "select distinct e.tenant_id, (e.stored_at at time zone 'UTC')::date as day "
            "from record_entries e where e.stored_at < $1::date at time zone 'UTC' "
            "and e.link is not null and not exists (select 1 from daily_roots r "
            "where r.tenant_id = e.tenant_id "
            "and r.day = (e.stored_at at time zone 'UTC')::date) order by day limit $2",
            before,
            limit,
        )
        return [(r["tenant_id"], r["day"]) for r in rows]

    async def day_leaves(
        self, conn: asyncpg.Connection, tenant_id: str, day: date
    ) -> list[domain.Leaf]:
        """For each record with entries stored on `day`, its last entry of that day."""
        rows = await conn.fetch(
            "select distinct on (interaction_id) interaction_id, link, sha256 "
            "from record_entries where tenant_id = $1 and link is not null "
            "and (stored_at at time zone 'UTC')::date = $2 order by interaction_id, link desc",
            tenant_id,
            day,
        )
        return [(r["interaction_id"], r["link"], r["sha256"].hex()) for r in rows]

    async def insert_root(
        self, conn: asyncpg.Connection, tenant_id: str, day: date, leaves: list[domain.Leaf]
    ) -> bytes | None:
        """Keep the day's root; None when it was kept already (by another replica)."""
        root = domain.root_of(leaves)
        kept = await conn.fetchval(
            "insert into daily_roots (tenant_id, day, root_sha256, leaves) "
            "values ($1, $2, $3, $4) on conflict do nothing returning true",
            tenant_id,
            day,
            root,
            [list(leaf) for leaf in leaves],
        )
        return root if kept else None

    async def upsert_media(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str, item: pb.MediaItem
    ) -> None:
        # The end of a leg arrives as a partial item; jsonb `||` merges it into the start.
        await conn.execute(
            "insert into media_items (tenant_id, interaction_id, id, item) values ($1, $2, $3, $4) "
            "on conflict (tenant_id, interaction_id, id) "
            "do update set item = media_items.item || excluded.item",
            tenant_id,
            interaction_id,
            item.id,
            domain.media_to_json(item),
        )

    async def count_media(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> int:
        count: int = await conn.fetchval(
            "select count(*) from media_items where tenant_id = $1 and interaction_id = $2",
            tenant_id,
            interaction_id,
        )
        return count

    async def media(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> list[pb.MediaItem]:
        rows = await conn.fetch(
            "select item from media_items where tenant_id = $1 and interaction_id = $2 "
            "order by arrival",
            tenant_id,
            interaction_id,
        )
        return [domain.media_from_json(r["item"]) for r in rows]

    async def list_page(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        flt: ListFilter,
        page: Page,
        tsquery: str = "",
    ) -> list[Summary]:
        """One page of summaries, newest first, after the page's keyset position; `tsquery`
        the words of `flt.text`, all of which a record must hold."""
        where = ["tenant_id = $1"]
        args: list[Any] = [tenant_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if flt.start_time is not None:
            where.append(f"start_time >= {arg(flt.start_time)}")
        if flt.end_time is not None:
            where.append(f"start_time < {arg(flt.end_time)}")
        if flt.customer_id:
            where.append(f"customer_id = {arg(flt.customer_id)}")
        if flt.agent_id:
            where.append(f"agent_ids @> array[{arg(flt.agent_id)}]::text[]")
        if flt.queue:
            where.append(f"queue = {arg(flt.queue)}")
        if flt.channel:
            where.append(f"channel = {arg(flt.channel)}")
        if flt.resolution:
            where.append(f"resolution_code = {arg(flt.resolution)}")
        if tsquery:
            where.append(f"words @@ to_tsquery('simple', {arg(tsquery)})")
        if page.after is not None:
            start, interaction_id = page.after
            where.append(f"(start_time, interaction_id) < ({arg(start)}, {arg(interaction_id)})")
        rows = await conn.fetch(
            f"select {_SUMMARY_COLUMNS} from recordings where {' and '.join(where)} "  # noqa: S608 - placeholders only
            f"order by start_time desc, interaction_id desc limit {arg(page.size)}",
            *args,
        )
        return [_summary(r) for r in rows]

    # ------------------------------------------------------------------ purge

    async def tenants_with_expired(
        self, conn: asyncpg.Connection, now: datetime, limit: int
    ) -> list[str]:
        """Tenants that have a record past its retention and not held.

        The one query not scoped to a tenant: the sweep has to find whom to visit. Each purge
        that follows is scoped.
        """
        rows = await conn.fetch(
            "select distinct tenant_id from recordings "
            "where retain_until < $1 and not legal_hold limit $2",
            now,
            limit,
        )
        return [r["tenant_id"] for r in rows]

    async def delete_expired(
        self, conn: asyncpg.Connection, tenant_id: str, now: datetime, limit: int
    ) -> list[Summary]:
        """Delete up to `limit` of the tenant's expired, unheld records; return their summaries."""
        return await self._delete(
            conn, tenant_id, "retain_until < $2 and not legal_hold", [now], limit
        )

    async def delete_unheld(
        self, conn: asyncpg.Connection, tenant_id: str, limit: int
    ) -> list[Summary]:
        """Delete up to `limit` records of a deleted tenant, except those under legal hold."""
        return await self._delete(conn, tenant_id, "not legal_hold", [], limit)

    async def _delete(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        condition: str,
        args: list[Any],
        limit: int,
    ) -> list[Summary]:
        # SKIP LOCKED: another replica's sweep, or an interaction being recorded right now,
        # keeps its rows; each record is purged, and announced, exactly once.
        rows = await conn.fetch(
            f"delete from recordings where (tenant_id, interaction_id) in ("  # noqa: S608 - constant conditions
            "select tenant_id, interaction_id from recordings "
            f"where tenant_id = $1 and {condition} "
            f"limit ${len(args) + 2} for update skip locked) returning {_SUMMARY_COLUMNS}",
            tenant_id,
            *args,
            limit,
        )
        purged = [_summary(r) for r in rows]
        ids = [s.interaction_id for s in purged]
        if ids:
            await conn.execute(
                "delete from record_entries where tenant_id = $1 "
                "and interaction_id = any($2::text[])",
                tenant_id,
                ids,
            )
            media = await conn.fetch(
                "delete from media_items where tenant_id = $1 "
                "and interaction_id = any($2::text[]) returning interaction_id, item",
                tenant_id,
                ids,
            )
            # The record's objects go with it, once the purge commits (delete_objects).
            doomed = [
                (tenant_id, row["interaction_id"], key)
                for row in media
                if (key := stored_key(tenant_id, domain.media_from_json(row["item"]).uri))
            ]
            await conn.executemany(
                "insert into object_deletions (tenant_id, interaction_id, key) "
                "values ($1, $2, $3) on conflict do nothing",
                doomed,
            )
        return purged

    async def doomed_objects(
        self, conn: asyncpg.Connection, limit: int
    ) -> list[tuple[str, str, str]]:
        """Objects of purged records still to delete, locked for the caller: (tenant id,
        interaction id, key). Serves every tenant of the cell, as the purge sweep does."""
        rows = await conn.fetch(
            "select tenant_id, interaction_id, key from object_deletions where due_at <= now() "
            "order by due_at limit $1 for update skip locked",
            limit,
        )
        return [(r["tenant_id"], r["interaction_id"], r["key"]) for r in rows]

    async def delete_later(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        interaction_id: str,
        key: str,
        due: datetime,
    ) -> None:
        """Queue an object the sweep deletes at `due` (an export's bundle)."""
        await conn.execute(
            "insert into object_deletions (tenant_id, interaction_id, key, due_at) "
            "values ($1, $2, $3, $4) on conflict do nothing",
            tenant_id,
            interaction_id,
            key,
            due,
        )

    async def objects_deleted(
        self, conn: asyncpg.Connection, tenant_id: str, keys: list[str]
    ) -> None:
        await conn.execute(
            "delete from object_deletions where tenant_id = $1 and key = any($2::text[])",
            tenant_id,
            keys,
        )
