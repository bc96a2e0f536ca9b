"""Postgres access for the ACD. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.services.acd.agents import AgentStatus, Needs
from lianluo.services.acd.state import (
    Assignment,
    Changes,
    Contact,
    ContactLog,
    PendingOffer,
    PresenceLog,
)
from lianluo.tenants.v1 import tenants_pb2 as pb


@dataclass
class TenantRows:
    """A tenant's routing state as stored: what the owner needs to decide."""

    statuses: dict[str, AgentStatus]
    contacts: dict[str, Contact]
    offers: dict[str, PendingOffer]
    assignments: list[Assignment]
    # Pending offers that already have an answer on its way, and when it was given.
    answered: dict[str, datetime]


def _status(row: Any) -> AgentStatus:
    return AgentStatus(
        agent_id=row["agent_id"],
        presence=row["presence"],
        reason=row["reason"],
        limits={int(k): int(v) for k, v in row["limits"].items()},
        change_time=row["change_time"],
        last_idle_time=row["last_idle_time"],
        last_assign_time=row["last_assign_time"],
    )


def _contact(row: Any) -> Contact:
    needs = row["needs"]
    return Contact(
        interaction_id=row["interaction_id"],
        requirements=common.RoutingRequirements.FromString(row["requirements"]),
        needs=Needs(
            queue=row["queue"],
            media=needs["media"],
            skills=dict(needs["skills"]),
            language=needs["language"],
            priority=needs["priority"],
            agent_id=needs.get("agent_id", ""),
            experts_only=needs.get("experts_only", False),
            expertise=needs.get("expertise", ""),
        ),
        enqueued_at=row["enqueued_at"],
        deadline=row["deadline"],
        overflow=pb.Overflow.FromString(row["overflow"]),
        declined=set(row["declined"]),
        offer_id=str(row["offer_id"]) if row["offer_id"] else None,
        not_before=row["not_before"],
        overflowed_from=tuple(row["overflowed_from"]),
        transferred_by=row["transferred_by"],
        stay=row["stay"],
    )


def _offer(row: Any) -> PendingOffer:
    return PendingOffer(
        offer=acd.Offer.FromString(row["offer"]),
        media=row["media"],
        explained=acd.RoutingExplanation.FromString(row["explanation"]),
    )


class Repository:
    """Reads and writes of routing state; the caller holds the transaction."""

    async def lock_tenant(self, conn: asyncpg.Connection, tenant_id: str) -> None:
        """Serialise writers of one tenant until the transaction ends, even across replicas
        that briefly both believe they own it during a rebalance."""
        await conn.execute("select pg_advisory_xact_lock(hashtext($1))", f"acd.tenant.{tenant_id}")

    async def load(self, conn: asyncpg.Connection, tenant_id: str) -> TenantRows:
        agents = await conn.fetch("select * from agents where tenant_id = $1", tenant_id)
        contacts = await conn.fetch("select * from contacts where tenant_id = $1", tenant_id)
        offers = await conn.fetch(
            "select * from offers where tenant_id = $1 and state = $2",
            tenant_id,
            acd.OFFER_STATE_PENDING,
        )
        held = await conn.fetch("select * from assignments where tenant_id = $1", tenant_id)
        return TenantRows(
            statuses={r["agent_id"]: _status(r) for r in agents},
            contacts={r["interaction_id"]: _contact(r) for r in contacts},
            offers={str(r["id"]): _offer(r) for r in offers},
            assignments=[
                Assignment(
                    r["interaction_id"],
                    r["agent_id"],
                    r["media"],
                    str(r["offer_id"]),
                    r["assigned_at"],
                )
                for r in held
            ],
            answered=await self.answered(conn, tenant_id),
        )

    async def answered(self, conn: asyncpg.Connection, tenant_id: str) -> dict[str, datetime]:
        """Pending offers whose answer is on its way, and when it was given. RespondToOffer on
        any replica writes these, so an owner reads them at every step."""
        answers = await conn.fetch(
            "select a.offer_id, a.answered_at from offer_answers a join offers o "
            "on o.tenant_id = a.tenant_id and o.id = a.offer_id "
            "where a.tenant_id = $1 and o.state = $2",
            tenant_id,
            acd.OFFER_STATE_PENDING,
        )
        return {str(r["offer_id"]): r["answered_at"] for r in answers}

    async def token(self, conn: asyncpg.Connection, tenant_id: str) -> str | None:
        """The token of the tenant's last committed routing step."""
        found = await conn.fetchval(
            "select token from routing_tokens where tenant_id = $1", tenant_id
        )
        return str(found) if found else None

    async def new_token(self, conn: asyncpg.Connection, tenant_id: str) -> str:
        """Mark this step: the token is stored only if the transaction commits."""
        token = str(uuid.uuid4())
        await conn.execute(
            "insert into routing_tokens (tenant_id, token) values ($1, $2) "
            "on conflict (tenant_id) do update set token = excluded.token",
            tenant_id,
            token,
        )
        return token

    async def save(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        changes: Changes,
        statuses: dict[str, AgentStatus],
        contacts: dict[str, Contact],
    ) -> None:
        """Write what one step changed."""
        for agent_id in sorted(changes.agents):
            await self._save_agent(conn, tenant_id, statuses[agent_id])
        for pending in changes.offers.values():
            await self._save_offer(conn, tenant_id, pending)
        for interaction_id in sorted(changes.contacts):
            await self._save_contact(conn, tenant_id, contacts[interaction_id])
        if changes.removed_contacts:
            await conn.execute(
                "delete from contacts where tenant_id = $1 and interaction_id = any($2::text[])",
                tenant_id,
                sorted(changes.removed_contacts),
            )
        for a in changes.released:
            await conn.execute(
                "delete from assignments "
                "where tenant_id = $1 and interaction_id = $2 and agent_id = $3",
                tenant_id,
                a.interaction_id,
                a.agent_id,
            )
        for a in changes.assigned:
            await conn.execute(
                "insert into assignments (tenant_id, interaction_id, agent_id, media, offer_id, "
                "assigned_at) values ($1, $2, $3, $4, $5, $6)",
                tenant_id,
                a.interaction_id,
                a.agent_id,
                a.media,
                a.offer_id,
                a.assigned_at,
            )

        if changes.contact_log:
            await conn.executemany(
                "insert into contact_log "
                "(tenant_id, interaction_id, queue, event, at, agent_id, channel, score) "
                "values ($1, $2, $3, $4, $5, $6, $7, $8)",
                [
                    (
                        tenant_id,
                        e.interaction_id,
                        e.queue,
                        e.event,
                        e.at,
                        e.agent_id,
                        e.channel,
                        e.score,
                    )
                    for e in changes.contact_log
                ],
            )
        if changes.presence_log:
            await conn.executemany(
                "insert into presence_log (tenant_id, agent_id, presence, at) "
                "values ($1, $2, $3, $4)",
                [(tenant_id, p.agent_id, p.presence, p.at) for p in changes.presence_log],
            )

    async def _save_agent(self, conn: asyncpg.Connection, tenant_id: str, s: AgentStatus) -> None:
        await conn.execute(
            "insert into agents (tenant_id, agent_id, presence, reason, limits, change_time, "
            "last_idle_time, last_assign_time) values ($1, $2, $3, $4, $5, $6, $7, $8) "
            "on conflict (tenant_id, agent_id) do update set presence = excluded.presence, "
            "reason = excluded.reason, limits = excluded.limits, "
            "change_time = excluded.change_time, last_idle_time = excluded.last_idle_time, "
            "last_assign_time = excluded.last_assign_time",
            tenant_id,
            s.agent_id,
            s.presence,
            s.reason,
            {str(k): v for k, v in s.limits.items()},
            s.change_time,
            s.last_idle_time,
            s.last_assign_time,
        )

    async def _save_contact(self, conn: asyncpg.Connection, tenant_id: str, c: Contact) -> None:
        needs = {
            "media": c.needs.media,
            "skills": dict(c.needs.skills),
            "language": c.needs.language,
            "priority": c.needs.priority,
            "agent_id": c.needs.agent_id,
            "experts_only": c.needs.experts_only,
            "expertise": c.needs.expertise,
        }
        # An overflow may move a waiting contact to another queue: every column follows.
        await conn.execute(
            "insert into contacts (tenant_id, interaction_id, queue, requirements, needs, "
            "enqueued_at, deadline, overflow, declined, offer_id, not_before, overflowed_from, "
            "transferred_by, stay) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
            "on conflict (tenant_id, interaction_id) do update set queue = excluded.queue, "
            "requirements = excluded.requirements, needs = excluded.needs, "
            "enqueued_at = excluded.enqueued_at, deadline = excluded.deadline, "
            "overflow = excluded.overflow, declined = excluded.declined, "
            "offer_id = excluded.offer_id, not_before = excluded.not_before, "
            "overflowed_from = excluded.overflowed_from",
            tenant_id,
            c.interaction_id,
            c.needs.queue,
            c.requirements.SerializeToString(),
            needs,
            c.enqueued_at,
            c.deadline,
            c.overflow.SerializeToString(),
            sorted(c.declined),
            c.offer_id,
            c.not_before,
            list(c.overflowed_from),
            c.transferred_by,
            c.stay,
        )

    async def _save_offer(self, conn: asyncpg.Connection, tenant_id: str, p: PendingOffer) -> None:
        o = p.offer
        await conn.execute(
            "insert into offers (tenant_id, id, interaction_id, agent_id, state, media, "
            "expire_time, offer, explanation) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "on conflict (tenant_id, id) do update set state = excluded.state, "
            "offer = excluded.offer",
            tenant_id,
            o.id,
            o.interaction_id,
            o.agent_id,
            o.state,
            p.media,
            o.expire_time.ToDatetime(UTC),
            o.SerializeToString(),
            p.explanation.SerializeToString(),
        )

    async def next_deadline(self, conn: asyncpg.Connection, tenant_id: str) -> datetime | None:
        """The earliest max wait or offer expiry of a tenant, to arm its timer."""
        due: datetime | None = await conn.fetchval(
            "select least((select min(deadline) from contacts where tenant_id = $1), "
            "(select min(not_before) from contacts where tenant_id = $1), "
            "(select min(expire_time) from offers where tenant_id = $1 and state = $2))",
            tenant_id,
            acd.OFFER_STATE_PENDING,
        )
        return due

    async def waiting(self, conn: asyncpg.Connection, tenant_id: str) -> int:
        """A tenant's contacts not yet assigned, callbacks not yet due left out."""
        count: int = await conn.fetchval(
            "select count(*) from contacts where tenant_id = $1 and not_before is null", tenant_id
        )
        return count

    # ------------------------------------------------------------------ reads for the API

    async def history(
        self, conn: asyncpg.Connection, tenant_id: str, since: datetime
    ) -> tuple[list[ContactLog], list[PresenceLog]]:
        """What the queue figures of a window starting at `since` need: every step of the
        contacts with a step in the window (an answer in it needs its earlier entry), and each
        agent's presence changes in the window with the one in force when it began."""
        contacts = await self.contacts_since(conn, tenant_id, since)
        presence = await conn.fetch(
            "(select distinct on (agent_id) agent_id, presence, at from presence_log "
            "where tenant_id = $1 and at < $2 order by agent_id, at desc) union all "
            "(select agent_id, presence, at from presence_log where tenant_id = $1 and at >= $2)",
            tenant_id,
            since,
        )
        return contacts, [PresenceLog(r["agent_id"], r["presence"], r["at"]) for r in presence]

    async def contacts_since(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        since: datetime,
        until: datetime | None = None,
    ) -> list[ContactLog]:
        """Every step of the contacts with a step from `since` (to `until`): an answer in the
        range needs its earlier entry."""
        rows = await conn.fetch(
            "select interaction_id, queue, event, at, agent_id, channel, score from contact_log "
            "where tenant_id = $1 and interaction_id in (select interaction_id from contact_log "
            "where tenant_id = $1 and at >= $2 and ($3::timestamptz is null or at < $3)) "
            "order by at",
            tenant_id,
            since,
            until,
        )
        return [
            ContactLog(
                r["interaction_id"],
                r["queue"],
                r["event"],
                r["at"],
                r["agent_id"],
                r["channel"],
                r["score"],
            )
            for r in rows
        ]

    async def offer(
        self, conn: asyncpg.Connection, tenant_id: str, offer_id: str
    ) -> acd.Offer | None:
        row = await conn.fetchrow(
            "select offer from offers where tenant_id = $1 and id = $2", tenant_id, offer_id
        )
        return acd.Offer.FromString(row["offer"]) if row else None

    async def answer(
        self, conn: asyncpg.Connection, tenant_id: str, offer_id: str
    ) -> tuple[bool, str, datetime] | None:
        """The answer already given to an offer: (accept, reason, when)."""
        row = await conn.fetchrow(
            "select accept, reason, answered_at from offer_answers "
            "where tenant_id = $1 and offer_id = $2",
            tenant_id,
            offer_id,
        )
        return (row["accept"], row["reason"], row["answered_at"]) if row else None

    async def record_answer(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        offer_id: str,
        agent_id: str,
        accept: bool,
        reason: str,
        at: datetime,
    ) -> bool:
        """Record the first answer to an offer; False when one was already recorded."""
        inserted = await conn.fetchval(
            "insert into offer_answers (tenant_id, offer_id, agent_id, accept, reason, "
            "answered_at) values ($1, $2, $3, $4, $5, $6) on conflict do nothing returning true",
            tenant_id,
            offer_id,
            agent_id,
            accept,
            reason,
            at,
        )
        return bool(inserted)
