"""Postgres access for the IVR: flow runs. Every query is scoped by the tenant id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from lianluo.common.v1 import common_pb2
from lianluo.services.ivr.domain import Caller, RunState, Status
from lianluo.tenants.v1 import tenants_pb2 as pb

_COLUMNS = (
    "tenant_id, interaction_id, flow_name, flow, channel, media, language, customer_id, "
    "customer_attributes, status, node_id, variables, retries_left, prompt_count, "
    "intent_confidence, timeout_seconds"
)
_STATUSES: set[str] = {"new", "waiting", "routed", "ended"}


@dataclass(frozen=True)
class Run:
    """A stored run: its flow (None when the flow was not found), caller and engine state."""

    tenant_id: str
    flow: pb.Flow | None
    caller: Caller
    state: RunState
    # The interaction ended while the run was still going.
    closed: bool = False


def _run(row: asyncpg.Record) -> Run:
    flow = pb.Flow.FromString(row["flow"]) if row["flow"] is not None else None
    status = row["status"]
    state = RunState(
        node_id=row["node_id"],
        variables=dict(row["variables"]),
        retries_left=row["retries_left"],
        prompt_count=row["prompt_count"],
        intent_confidence=row["intent_confidence"],
        status=cast(Status, status) if status in _STATUSES else "ended",
        timeout_seconds=row["timeout_seconds"],
    )
    caller = Caller(
        interaction_id=row["interaction_id"],
        channel=cast(common_pb2.Channel.ValueType, row["channel"]),
        customer_id=row["customer_id"],
        customer_attributes=dict(row["customer_attributes"]),
        language=row["language"],
        media=cast(common_pb2.MediaType.ValueType, row["media"]),
    )
    return Run(row["tenant_id"], flow, caller, state, closed=status == "closed")


def _state_values(state: RunState) -> tuple[Any, ...]:
    return (
        state.status,
        state.node_id,
        state.variables,
        state.retries_left,
        state.prompt_count,
        state.intent_confidence,
        state.timeout_seconds,
    )


class Repository:
    """Runs, keyed by (tenant, interaction)."""

    async def insert_run(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        flow_name: str,
        flow: pb.Flow | None,
        caller: Caller,
        state: RunState,
    ) -> bool:
        """Store a new run; False when the interaction already has one (a repeated creation)."""
        inserted = await conn.fetchval(
            f"insert into runs ({_COLUMNS}, deadline) "  # noqa: S608 - constant column list
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text, $11, $12, $13, $14, $15, "
            "$16::int, case when $10::text = 'waiting' "
            "then now() + make_interval(secs => $16::int) end) "
            "on conflict (tenant_id, interaction_id) do nothing returning true",
            tenant_id,
            caller.interaction_id,
            flow_name,
            flow.SerializeToString() if flow is not None else None,
            int(caller.channel),
            int(caller.media),
            caller.language,
            caller.customer_id,
            caller.customer_attributes,
            *_state_values(state),
        )
        return bool(inserted)

    async def lock_run(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> Run | None:
        """The run of an interaction, locked until the caller's transaction ends."""
        row = await conn.fetchrow(
            f"select {_COLUMNS} from runs "  # noqa: S608 - constant column list
            "where tenant_id = $1 and interaction_id = $2 for update",
            tenant_id,
            interaction_id,
        )
        return _run(row) if row is not None else None

    async def save_state(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str, state: RunState
    ) -> None:
        """Store a run's new state; a waiting run times out `timeout_seconds` from now."""
        await conn.execute(
            "update runs set status = $3::text, node_id = $4, variables = $5, retries_left = $6, "
            "prompt_count = $7, intent_confidence = $8, timeout_seconds = $9::int, deadline = "
            "case when $3::text = 'waiting' then now() + make_interval(secs => $9::int) end, "
            "updated_at = now() where tenant_id = $1 and interaction_id = $2",
            tenant_id,
            interaction_id,
            *_state_values(state),
        )

    async def close_run(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> bool:
        """Stop a run that is still going; False when there is none or it already finished."""
        closed = await conn.fetchval(
            "update runs set status = 'closed', deadline = null, updated_at = now() "
            "where tenant_id = $1 and interaction_id = $2 and status in ('new', 'waiting') "
            "returning true",
            tenant_id,
            interaction_id,
        )
        return bool(closed)

    async def lock_due(
        self, conn: asyncpg.Connection, tenant_ids: Sequence[str], limit: int
    ) -> list[Run]:
        """Waiting runs of these tenants whose prompt timed out, locked; rows another replica
        holds are skipped, so replicas share the work instead of queueing behind each other."""
        rows = await conn.fetch(
            f"select {_COLUMNS} from runs "  # noqa: S608 - constant column list
            "where tenant_id = any($1::text[]) and status = 'waiting' and deadline <= now() "
            "order by deadline limit $2 for update skip locked",
            list(tenant_ids),
            limit,
        )
        return [_run(r) for r in rows]
