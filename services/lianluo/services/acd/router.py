"""The single writer of routing state: applies a tenant's events in order, and runs its timers.

Only the replica that owns a tenant's partitions gets its events, and timers run only for the
tenants whose partitions this replica owns. Each step holds a per-tenant asyncio lock (events
and timers of one tenant never interleave here) and a per-tenant advisory lock in Postgres
(two replicas that both believe they own a tenant during a rebalance still take turns), gets
the state, decides, and saves what changed with its decisions in one transaction. A run of
events the consumer applies in one transaction is one step per tenant: locked and loaded at
its first event, saved once at the end, each event still decided in order.

The owner keeps each tenant's state in memory between steps instead of loading it every time:
a step stores a fresh token with its changes, and the kept state is used only while the
stored token is still the one this replica wrote. A step that failed or did not commit, a
write by another replica, or a change of the tenant's agents or queues makes the owner load
the state from Postgres again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

import asyncpg

from lianluo.domain.routing import layer_of, tenant_policy
from lianluo.events.v1 import agent_pb2, ivr_pb2
from lianluo.events.v1.interaction_pb2 import InteractionEvent
from lianluo.runtime.kafka import Envelope, partition_for
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.acd import events, metrics
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.domain import AgentProfile
from lianluo.services.acd.repository import Repository, TenantRows
from lianluo.services.acd.settings import AcdSettings
from lianluo.tenants.v1 import tenants_pb2 as pb

log = get_logger(__name__)
# The media service's leave reason when a supervisor takes a conversation over.
TAKEN_OVER = "taken_over"
# The media service's reason for a person who left a conversation others carry on.
LEFT = "left"
OwnedPartitions = Callable[[], Awaitable[set[int]]]


def now_utc() -> datetime:
    return datetime.now(UTC)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def build_routing(
    tenant_id: str, view: TenantConfigView, rows: TenantRows, settings: AcdSettings
) -> TenantRouting:
    """A tenant's routing state from its stored rows, its configured agents and queues, and
    its routing policy over the platform's."""
    queues = [q for q in view.all(tenant_id, "queue") if isinstance(q, pb.Queue)]
    tenant = view.tenant(tenant_id)
    own = layer_of(tenant.routing_policy) if tenant is not None else {}
    return TenantRouting(
        tenant_id,
        profiles={
            a.id: AgentProfile.from_config(a)
            for a in view.all(tenant_id, "agent")
            if isinstance(a, pb.Agent)
        },
        statuses=rows.statuses,
        contacts=rows.contacts,
        offers=rows.offers,
        assignments=rows.assignments,
        offer_timeout=timedelta(seconds=settings.offer_timeout_seconds),
        answer_grace=timedelta(seconds=settings.answer_grace_seconds),
        answered=rows.answered,
        policy=tenant_policy([settings.routing_defaults, own], queues),
        queues={q.name: q for q in queues},
        business_hours=tenant.business_hours if tenant is not None else None,
    )


class Router:
    """Applies consumed events and timer ticks to the tenants this replica owns."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        view: TenantConfigView,
        topics: events.Topics,
        settings: AcdSettings,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._view = view
        self._topics = topics
        self._settings = settings
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # When each owned tenant next needs its timer; None when nothing is waiting.
        self._deadlines: dict[str, datetime | None] = {}
        self._partitions: set[int] = set()
        # Contacts waiting (not yet assigned, callbacks not yet due) of each owned tenant, as
        # of its last step: the figure `lianluo_acd_contacts_waiting`.
        self._waiting: dict[str, int] = {}
        self._stopping = asyncio.Event()
        # Tenant -> (token of the step that left it, configuration generation, its state).
        self._kept: dict[str, tuple[str, int, TenantRouting]] = {}
        # The tenants the consumer's current run has open, on its connection (see `run`).
        self._run: ContextVar[
            tuple[asyncpg.Connection, dict[str, tuple[TenantRouting, int]]] | None
        ] = ContextVar("acd_run", default=None)
        self._generation: defaultdict[str, int] = defaultdict(int)
        view.subscribe(self._config_changed)

    def _config_changed(self, tenant_id: str, change: object) -> None:
        """Agents, queues or the tenant changed: state built before has old profiles and
        policy (also when a step that started before the change keeps it at its end)."""
        self._generation[tenant_id] += 1
        self._kept.pop(tenant_id, None)

    # ------------------------------------------------------------------ events

    async def on_routing_requested(
        self, conn: asyncpg.Connection, envelope: Envelope, request: ivr_pb2.RoutingRequest
    ) -> None:
        tenant_id = envelope.tenant_id
        queue = self._view.by_name(tenant_id, "queue", request.requirements.queue)
        if queue is None:
            log.warning("routing request to an unknown queue", queue=request.requirements.queue)

        def enqueue(r: TenantRouting, now: datetime) -> None:
            r.enqueue(
                request.interaction_id,
                request.requirements,
                queue,
                now,
                request.transferred_by,
                request.stay,
            )

        await self._apply(conn, tenant_id, envelope.type, enqueue)

    async def on_interaction_ended(
        self, conn: asyncpg.Connection, envelope: Envelope, ended: InteractionEvent
    ) -> None:
        await self._apply(
            conn,
            envelope.tenant_id,
            envelope.type,
            lambda r, now: r.end_interaction(ended.interaction_id, now),
        )

    async def on_participant_left(
        self, conn: asyncpg.Connection, envelope: Envelope, left: InteractionEvent
    ) -> None:
        """A supervisor took the conversation over, or an agent left one a colleague carries on:
        their capacity is free at once. (An agent who hands a contact over is released when
        another accepts it.)"""
        who = left.participant_left
        if who.leave_reason not in (TAKEN_OVER, LEFT):
            return

        def release(r: TenantRouting, now: datetime) -> None:
            r.release(left.interaction_id, who.subject_id, now)

        await self._apply(conn, envelope.tenant_id, envelope.type, release)

    async def on_interaction_rated(
        self, conn: asyncpg.Connection, envelope: Envelope, rated: InteractionEvent
    ) -> None:
        score = rated.rated.score
        await self._apply(
            conn,
            envelope.tenant_id,
            envelope.type,
            lambda r, now: r.rate(rated.interaction_id, score, now),
        )

    async def on_agent_event(
        self, conn: asyncpg.Connection, envelope: Envelope, event: agent_pb2.AgentEvent
    ) -> None:
        kind = event.WhichOneof("event")
        if kind == "wrap_up_done":
            done = event.wrap_up_done
            # Already applied when the interaction ended; repeating it frees nothing twice.

            def release(r: TenantRouting, now: datetime) -> None:
                r.release(done.interaction_id, event.agent_id, now)

            await self._apply(conn, envelope.tenant_id, envelope.type, release)
        elif kind is not None:
            await self._apply(
                conn, envelope.tenant_id, envelope.type, self._agent_step(kind, event)
            )

    async def _apply(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        kind: str,
        apply: Callable[[TenantRouting, datetime], None],
    ) -> None:
        """One event, inside the consumer's transaction: within a run (see `run`) the tenant
        is locked and loaded at its first event and saved at the run's end; alone, in a step
        of its own."""
        if not is_uuid(tenant_id):
            log.error("event without a valid tenant; skipped", type=kind)
            return
        in_run = self._run.get()
        if in_run is None or in_run[0] is not conn:
            async with self._locks[tenant_id]:
                await self._step(conn, tenant_id, apply)
            return
        steps = in_run[1]
        async with self._locks[tenant_id]:
            opened = steps.get(tenant_id)
            if opened is not None and opened[1] != self._generation[tenant_id]:
                # Agents or queues changed since the run loaded the tenant: what the run did so
                # far is saved, and the rest of it starts from the new configuration.
                await self._finish(conn, tenant_id, *steps.pop(tenant_id))
                opened = None
            if opened is None:
                opened = steps[tenant_id] = await self._open(conn, tenant_id)
            now = now_utc()
            apply(opened[0], now)
            opened[0].dispatch(now)

    @contextlib.asynccontextmanager
    async def run(self, conn: asyncpg.Connection) -> AsyncIterator[None]:
        """Around a run of events applied in one transaction: each tenant the run touches is
        locked, loaded and checked once, its events are applied in order, and what they changed
        is saved, published and stamped with a new token once, at the end. If an event fails,
        the transaction is rolled back and nothing the run did is kept in memory either."""
        steps: dict[str, tuple[TenantRouting, int]] = {}
        token = self._run.set((conn, steps))
        try:
            yield
        finally:
            self._run.reset(token)
        for tenant_id, (routing, generation) in steps.items():
            async with self._locks[tenant_id]:
                await self._finish(conn, tenant_id, routing, generation)

    def _agent_step(
        self, kind: str, event: agent_pb2.AgentEvent
    ) -> Callable[[TenantRouting, datetime], None]:
        agent_id = event.agent_id
        if kind == "presence_changed":
            presence = event.presence_changed.presence

            def set_presence(r: TenantRouting, now: datetime) -> None:
                profile = r.profiles.get(agent_id)
                configured = profile.capacity if profile else {}
                # Only a lowering is a limit: a later raise of the configured capacity then
                # applies without another SetPresence.
                limits: dict[int, int] = {
                    int(load.media): load.max_concurrent
                    for load in presence.load
                    if load.max_concurrent < configured.get(load.media, 0)
                }
                r.set_presence(agent_id, presence.presence, presence.reason, limits, now)

            return set_presence
        accept = kind == "offer_accepted"
        answer = event.offer_accepted if accept else event.offer_declined

        def respond(r: TenantRouting, now: datetime) -> None:
            if not r.answer(answer.offer_id, agent_id, accept, answer.reason, now):
                log.info("answer to an offer no longer pending; ignored", offer_id=answer.offer_id)

        return respond

    async def _step(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        apply: Callable[[TenantRouting, datetime], None],
    ) -> None:
        routing, generation = await self._open(conn, tenant_id)
        now = now_utc()
        apply(routing, now)
        routing.dispatch(now)
        await self._finish(conn, tenant_id, routing, generation)

    async def _open(self, conn: asyncpg.Connection, tenant_id: str) -> tuple[TenantRouting, int]:
        """Lock the tenant for this transaction and get its state, with the configuration
        generation it was built from."""
        await self._repo.lock_tenant(conn, tenant_id)
        generation = self._generation[tenant_id]
        return await self._routing(conn, tenant_id, generation), generation

    async def _finish(
        self, conn: asyncpg.Connection, tenant_id: str, routing: TenantRouting, generation: int
    ) -> None:
        """Save and publish what changed, and keep the state for the next step. Until the
        token is written the state in memory may be half-changed: it is kept again only here,
        so an exception anywhere before leaves nothing kept."""
        await self._repo.save(conn, tenant_id, routing.changes, routing.statuses, routing.contacts)
        await events.publish_changes(conn, self._topics, tenant_id, routing.changes)
        token = await self._repo.new_token(conn, tenant_id)
        if generation == self._generation[tenant_id]:
            self._kept[tenant_id] = (token, generation, routing)
        self._deadlines[tenant_id] = routing.next_deadline(now_utc())
        metrics.count_step(routing.changes)
        self._waiting[tenant_id] = sum(c.not_before is None for c in routing.contacts.values())

    async def _routing(
        self, conn: asyncpg.Connection, tenant_id: str, generation: int
    ) -> TenantRouting:
        """The tenant's state: the one kept from this replica's last step while it is still
        current, otherwise loaded from Postgres."""
        kept = self._kept.pop(tenant_id, None)
        if (
            kept is not None
            and kept[1] == generation
            and kept[0] == await self._repo.token(conn, tenant_id)
        ):
            routing = kept[2]
            routing.begin(await self._repo.answered(conn, tenant_id))
            return routing
        rows = await self._repo.load(conn, tenant_id)
        return build_routing(tenant_id, self._view, rows, self._settings)

    # ------------------------------------------------------------------ timers

    async def tick(self, tenant_id: str) -> None:
        """Time out expired offers and overflow contacts past max wait, for one tenant."""
        async with self._pool.acquire() as conn, conn.transaction():
            # The tenant's database lock before this process's lock: a consumer batch holds the
            # database lock from its first event of the tenant to its commit, and takes the
            # process lock for each event; the other order would deadlock with it.
            await self._repo.lock_tenant(conn, tenant_id)
            async with self._locks[tenant_id]:
                await self._step(conn, tenant_id, lambda r, now: r.expire(now))

    async def run_timers(self, owned: OwnedPartitions) -> None:
        """Run the timers of owned tenants until stop(); a failing tick is retried later."""
        while not self._stopping.is_set():
            try:
                await self._follow_ownership(await owned())
                now = now_utc()
                for tenant_id, due in list(self._deadlines.items()):
                    if due is not None and due <= now and self._owns(tenant_id):
                        await self.tick(tenant_id)
            except Exception:
                log.exception("routing timers failed; retrying")
            try:
                async with asyncio.timeout(self._settings.timer_tick_seconds):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping.set()

    def _owns(self, tenant_id: str) -> bool:
        partition = partition_for(tenant_id.encode(), self._settings.topic_partitions)
        return partition in self._partitions

    async def _follow_ownership(self, partitions: set[int]) -> None:
        """Drop the timers of tenants now owned elsewhere; rebuild those of gained tenants."""
        if partitions == self._partitions:
            return
        gained = partitions - self._partitions
        self._partitions = partitions
        for tenant_id in [t for t in self._deadlines if not self._owns(t)]:
            del self._deadlines[tenant_id]
        for tenant_id in [t for t in self._kept if not self._owns(t)]:
            del self._kept[tenant_id]
        for tenant_id in [t for t in self._waiting if not self._owns(t)]:
            del self._waiting[tenant_id]
        if not gained:
            return
        log.info("routing partitions assigned", partitions=sorted(partitions))
        # The tenants come from configuration, so each state query still names its tenant.
        for tenant_id in self._view.tenant_ids():
            if is_uuid(tenant_id) and self._owns(tenant_id):
                async with self._pool.acquire() as conn:
                    self._deadlines[tenant_id] = await self._repo.next_deadline(conn, tenant_id)
                    self._waiting[tenant_id] = await self._repo.waiting(conn, tenant_id)

    def contacts_waiting(self) -> int:
        """Contacts waiting in the queues of the tenants this replica owns."""
        return sum(self._waiting.values())
