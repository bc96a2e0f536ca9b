"""The IVR's logic: start, step and close flow runs as interaction events arrive, expire silent
prompts, and answer ValidateFlow and SimulateFlow.

Every state change is stored with its outputs (through the outbox) in one transaction: the
consumer's, for events, or the sweeper's, for timeouts.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import cast

import asyncpg

from lianluo.common.v1 import common_pb2
from lianluo.domain import hours, redaction
from lianluo.events.v1 import ivr_pb2 as events_pb
from lianluo.events.v1.interaction_pb2 import InteractionEvent
from lianluo.ivr.v1 import ivr_pb2 as api
from lianluo.media.v1 import media_pb2
from lianluo.runtime import auth
from lianluo.runtime.errors import NotFound, Violations
from lianluo.runtime.kafka import Envelope
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.ivr import events, simulation, validation
from lianluo.services.ivr.domain import (
    BROKEN_TEXT,
    Answer,
    Caller,
    Input,
    RunState,
    Start,
    StepResult,
    Timeout,
    start_state,
    step,
)
from lianluo.services.ivr.repository import Repository, Run
from lianluo.tenants.v1 import tenants_pb2 as pb

log = get_logger(__name__)


def latest_flow(view: TenantConfigView, tenant_id: str, name: str) -> pb.Flow | None:
    """The newest version of the tenant's flow called `name`."""
    flows = [f for f in view.all(tenant_id, "flow") if f.name == name]
    return cast(pb.Flow, max(flows, key=lambda f: f.version)) if flows else None


def _caller(interaction_id: str, interaction: media_pb2.Interaction) -> Caller:
    return Caller(
        interaction_id=interaction_id,
        channel=interaction.channel,
        customer_id=interaction.customer.id,
        customer_attributes=dict(interaction.customer.attributes),
        language=interaction.customer.language,
        # The media the contact arrived on, as the media service's own routing requests say.
        media=interaction.media[0].media
        if interaction.media
        else common_pb2.MEDIA_TYPE_UNSPECIFIED,
    )


class RunService:
    """Flow runs, driven by `interaction.event` and by prompt timeouts."""

    def __init__(
        self, repo: Repository, view: TenantConfigView, topics: events.Topics, timeout_batch: int
    ) -> None:
        self._repo = repo
        self._view = view
        self._topics = topics
        self._timeout_batch = timeout_batch

    async def on_created(
        self, conn: asyncpg.Connection, envelope: Envelope, event: InteractionEvent
    ) -> None:
        interaction_id = event.interaction_id or event.created.id
        await self.start_run(conn, envelope.tenant_id, interaction_id, event.created)

    async def on_message(
        self, conn: asyncpg.Connection, envelope: Envelope, event: InteractionEvent
    ) -> None:
        message = event.message
        text = message.content.text if message.content.HasField("text") else None
        # A secret's answer comes whole on `ivr.secret`; this copy is masked.
        if redaction.IVR_SECRET in message.redacted:
            return
        # Only the customer answers self-service; the bot's own prompts come back here too.
        if message.sender_role == media_pb2.PARTICIPANT_ROLE_CUSTOMER and text is not None:
            await self.answer(conn, envelope.tenant_id, event.interaction_id, text)

    async def on_secret(
        self, conn: asyncpg.Connection, envelope: Envelope, event: events_pb.SecretAnswer
    ) -> None:
        await self.answer(conn, envelope.tenant_id, event.interaction_id, event.text)

    async def on_ended(
        self, conn: asyncpg.Connection, envelope: Envelope, event: InteractionEvent
    ) -> None:
        tenant_id = envelope.tenant_id
        if await self._repo.close_run(conn, tenant_id, event.interaction_id):
            log.info("run closed", tenant_id=tenant_id, interaction_id=event.interaction_id)

    async def start_run(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        interaction_id: str,
        interaction: media_pb2.Interaction,
    ) -> None:
        # A queue entry skips self-service: the media service asks the ACD for a person itself.
        if interaction.WhichOneof("entry") != "entry_flow":
            return
        caller = _caller(interaction_id, interaction)
        name = interaction.entry_flow
        flow = latest_flow(self._view, tenant_id, name)
        if flow is None:
            log.warning(
                "interaction names an unknown flow; ending it",
                tenant_id=tenant_id,
                interaction_id=interaction_id,
                flow=name,
            )
            ended = RunState(status="ended")
            if await self._repo.insert_run(conn, tenant_id, name, None, caller, ended):
                output = events_pb.IvrOutput(interaction_id=interaction_id)
                output.ended.text = BROKEN_TEXT
                await events.publish(conn, self._topics, tenant_id, [output])
            return
        # What the channel collected before (a pre-chat form) is known from the start, and
        # whether the tenant is open; the customer's form cannot say it is.
        tenant = self._view.tenant(tenant_id)
        opening = hours.state(tenant.business_hours, datetime.now(UTC)) if tenant else hours.OPEN
        known = {**interaction.collected_data, hours.VARIABLE: opening}
        result = step(flow, start_state(known), Start(), caller)
        if await self._repo.insert_run(conn, tenant_id, name, flow, caller, result.state):
            await self._emit(conn, tenant_id, caller, result)

    async def answer(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str, text: str
    ) -> None:
        run = await self._repo.lock_run(conn, tenant_id, interaction_id)
        if run is not None and not run.closed and run.state.status == "waiting":
            await self._advance(conn, run, Answer(text))

    async def expire_due(self, conn: asyncpg.Connection) -> int:
        """Step every run whose prompt timed out (in the caller's transaction); how many."""
        runs = await self._repo.lock_due(conn, self._view.tenant_ids(), self._timeout_batch)
        for run in runs:
            await self._advance(conn, run, Timeout())
        return len(runs)

    async def _advance(self, conn: asyncpg.Connection, run: Run, event: Input) -> None:
        if run.flow is None:
            return
        result = step(run.flow, run.state, event, run.caller)
        await self._repo.save_state(conn, run.tenant_id, run.caller.interaction_id, result.state)
        await self._emit(conn, run.tenant_id, run.caller, result)

    async def _emit(
        self, conn: asyncpg.Connection, tenant_id: str, caller: Caller, result: StepResult
    ) -> None:
        if result.stop is not None:
            log.error(
                "flow is broken; the interaction was ended",
                tenant_id=tenant_id,
                interaction_id=caller.interaction_id,
                detail=result.stop.detail,
            )
        await events.publish(conn, self._topics, tenant_id, result.outputs)


class FlowTools:
    """ValidateFlow and SimulateFlow: they read the tenant's configuration and store nothing."""

    def __init__(self, view: TenantConfigView) -> None:
        self._view = view

    def _scoped(self, tenant_id: str) -> str:
        v = Violations()
        v.check(bool(tenant_id), "tenant_id", "must be set")
        v.raise_if_any()
        auth.require_tenant(tenant_id)
        if self._view.tenant(tenant_id) is None:
            raise NotFound("tenant", tenant_id)
        return tenant_id

    def validate(self, tenant_id: str, flow: pb.Flow) -> api.ValidateFlowResponse:
        tid = self._scoped(tenant_id)
        queues: set[str] = {q.name for q in self._view.all(tid, "queue")}
        problems = validation.flow_problems(flow, queues)
        return api.ValidateFlowResponse(valid=validation.is_valid(problems), problems=problems)

    async def simulate(self, request: api.SimulateFlowRequest) -> api.SimulateFlowResponse:
        self._scoped(request.tenant_id)
        v = Violations()
        v.check(
            0 <= request.max_steps <= simulation.MAX_STEPS,
            "max_steps",
            f"must be 0 (meaning {simulation.DEFAULT_MAX_STEPS}) to {simulation.MAX_STEPS}",
        )
        v.check(
            len(request.inputs) <= simulation.MAX_STEPS,
            "inputs",
            f"at most {simulation.MAX_STEPS} inputs",
        )
        for i, scripted in enumerate(request.inputs):
            v.check(
                scripted.WhichOneof("input") is not None,
                f"inputs[{i}]",
                "must set text or timeout",
            )
        v.raise_if_any()
        # In a worker thread, and stopped at its time limit: a costly simulation slows no
        # live contact and no health check on this replica's event loop.
        return await asyncio.to_thread(simulation.simulate, request)
