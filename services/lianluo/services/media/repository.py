"""Postgres access for the media service. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf import json_format

from lianluo.media.v1 import media_pb2 as pb


def _doc(interaction: pb.Interaction) -> dict[str, Any]:
    return json_format.MessageToDict(interaction, preserving_proto_field_name=True)


def _interaction(doc: dict[str, Any]) -> pb.Interaction:
    return json_format.ParseDict(doc, pb.Interaction())


class Repository:
    async def insert(
        self, conn: asyncpg.Connection, tid: uuid.UUID, it: pb.Interaction, request_id: str | None
    ) -> None:
        await conn.execute(
            "insert into interactions (tenant_id, id, state, doc, last_sequence, request_id) "
            "values ($1, $2, $3, $4, $5, $6)",
            tid,
            uuid.UUID(it.id),
            it.state,
            _doc(it),
            it.last_sequence,
            request_id,
        )

    async def by_request(
        self, conn: asyncpg.Connection, tid: uuid.UUID, request_id: str
    ) -> pb.Interaction | None:
        doc = await conn.fetchval(
            "select doc from interactions where tenant_id = $1 and request_id = $2",
            tid,
            request_id,
        )
        return None if doc is None else _interaction(doc)

    async def open_count(self, conn: asyncpg.Connection, tid: uuid.UUID, limit: int) -> int:
        """How many of the tenant's interactions have not ended, counting up to `limit`."""
        found: int = await conn.fetchval(
            "select count(*) from (select 1 from interactions where tenant_id = $1 "
            "and state not in (7, 8, 9) limit $2) as open",
            tid,
            limit,
        )
        return found

    async def live_count(self, conn: asyncpg.Connection) -> int:
        """Interactions not ended, of every tenant: a figure of the cell's load for its
        operators (the metrics endpoint), never an answer to a tenant."""
        found: int = await conn.fetchval(
            "select count(*) from interactions where state not in (7, 8, 9)"
        )
        return found

    async def open_interactions(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        queues: list[str] | None,
        after: list[str] | None,
        limit: int,
    ) -> list[tuple[pb.Interaction, list[str]]]:
        """Interactions not ended (of `queues`, when given), oldest first, after the position
        `after` ([created_at, id]); each with its own position."""
        rows = await conn.fetch(
            "select doc, created_at, id from interactions where tenant_id = $1 "
            "and state not in (7, 8, 9) and ($2::text[] is null or doc->>'queue' = any($2)) "
            "and ($3::timestamptz is null or (created_at, id) > ($3, $4::uuid)) "
            "order by created_at, id limit $5",
            tid,
            queues,
            datetime.fromisoformat(after[0]) if after else None,
            uuid.UUID(after[1]) if after else None,
            limit,
        )
        return [(_interaction(r["doc"]), [r["created_at"].isoformat(), str(r["id"])]) for r in rows]

    async def get(
        self, conn: asyncpg.Connection, tid: uuid.UUID, iid: uuid.UUID, *, lock: bool = False
    ) -> pb.Interaction | None:
        query = "select doc from interactions where tenant_id = $1 and id = $2"
        doc = await conn.fetchval(query + (" for update" if lock else ""), tid, iid)
        return None if doc is None else _interaction(doc)

    async def save(self, conn: asyncpg.Connection, tid: uuid.UUID, it: pb.Interaction) -> None:
        await conn.execute(
            "update interactions set state = $3, doc = $4, last_sequence = $5, updated_at = now() "
            "where tenant_id = $1 and id = $2",
            tid,
            uuid.UUID(it.id),
            it.state,
            _doc(it),
            it.last_sequence,
        )

    async def await_secret(
        self, conn: asyncpg.Connection, tid: uuid.UUID, iid: uuid.UUID, awaits: bool
    ) -> None:
        """Whether the customer's next text answers a prompt for a secret."""
        await conn.execute(
            "update interactions set awaits_secret = $3 where tenant_id = $1 and id = $2",
            tid,
            iid,
            awaits,
        )

    async def take_secret(self, conn: asyncpg.Connection, tid: uuid.UUID, iid: uuid.UUID) -> bool:
        """True once, for the text that answers a prompt for a secret."""
        taken = await conn.fetchval(
            "update interactions set awaits_secret = false "
            "where tenant_id = $1 and id = $2 and awaits_secret returning true",
            tid,
            iid,
        )
        return bool(taken)

    async def add_frames(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        rows: list[tuple[int, bytes, bool]],
        iid: uuid.UUID,
    ) -> None:
        await conn.executemany(
            "insert into timeline (tenant_id, interaction_id, sequence, frame, staff_only) "
            "values ($1, $2, $3, $4, $5)",
            [(tid, iid, seq, frame, staff) for seq, frame, staff in rows],
        )

    async def frames_after(
        self, conn: asyncpg.Connection, tid: uuid.UUID, iid: uuid.UUID, after: int, staff: bool
    ) -> list[bytes]:
        rows = await conn.fetch(
            "select frame from timeline where tenant_id = $1 and interaction_id = $2 "
            "and sequence > $3 and (not staff_only or $4) order by sequence",
            tid,
            iid,
            after,
            staff,
        )
        return [r["frame"] for r in rows]

    async def client_message(
        self, conn: asyncpg.Connection, tid: uuid.UUID, iid: uuid.UUID, participant: str, cmid: str
    ) -> int | None:
        seq: int | None = await conn.fetchval(
            "select sequence from client_messages where tenant_id = $1 and interaction_id = $2 "
            "and participant_id = $3 and client_message_id = $4",
            tid,
            iid,
            participant,
            cmid,
        )
        return seq

    async def remember_client_message(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        iid: uuid.UUID,
        participant: str,
        cmid: str,
        seq: int,
    ) -> None:
        await conn.execute(
            "insert into client_messages (tenant_id, interaction_id, participant_id, "
            "client_message_id, sequence) values ($1, $2, $3, $4, $5)",
            tid,
            iid,
            participant,
            cmid,
            seq,
        )

    async def frame_at(
        self, conn: asyncpg.Connection, tid: uuid.UUID, iid: uuid.UUID, seq: int
    ) -> bytes | None:
        frame: bytes | None = await conn.fetchval(
            "select frame from timeline where tenant_id = $1 and interaction_id = $2 "
            "and sequence = $3",
            tid,
            iid,
            seq,
        )
        return frame

    async def put_offer(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        offer_id: str,
        agent_id: str,
        iid: uuid.UUID,
        frame: bytes,
    ) -> None:
        await conn.execute(
            "insert into offers (tenant_id, id, agent_id, interaction_id, frame) "
            "values ($1, $2, $3, $4, $5) on conflict do nothing",
            tid,
            offer_id,
            agent_id,
            iid,
            frame,
        )

    async def close_offer(self, conn: asyncpg.Connection, tid: uuid.UUID, offer_id: str) -> None:
        await conn.execute(
            "update offers set pending = false where tenant_id = $1 and id = $2", tid, offer_id
        )

    async def pending_offers(
        self, conn: asyncpg.Connection, tid: uuid.UUID, agent_id: str
    ) -> list[bytes]:
        rows = await conn.fetch(
            "select frame from offers where tenant_id = $1 and agent_id = $2 and pending",
            tid,
            agent_id,
        )
        return [r["frame"] for r in rows]
