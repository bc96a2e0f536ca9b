"""The ACD API's logic: authorise, validate, then publish a command or answer a read.

Commands (SetPresence, RespondToOffer) never change routing state here, whichever replica
received them: they are published on `agent.event` and applied in order by the tenant's owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import agent_pb2
from lianluo.runtime import auth
from lianluo.runtime.errors import FailedPrecondition, NotFound, PermissionDenied, Violations
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.acd import events
from lianluo.services.acd.agents import AgentProfile, Customer, qualifies, ring_needs
from lianluo.services.acd.dispatch import TenantRouting
from lianluo.services.acd.domain import explain, needs_for
from lianluo.services.acd.repository import Repository
from lianluo.services.acd.router import build_routing, now_utc
from lianluo.services.acd.settings import AcdSettings
from lianluo.services.acd.state import stamp
from lianluo.services.acd.stats import Window, queue_figures, report
from lianluo.tenants.v1 import tenants_pb2 as pb

MAX_REASON = 200
DEFAULT_CANDIDATES, MAX_CANDIDATES = 10, 100
DEFAULT_WINDOW, MAX_WINDOW = 900, 86_400


def _parse_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


class AcdApi:
    """Every operation of AcdService, scoped to the caller's tenant."""

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

    def _tenant(self, tenant_id: str) -> str:
        """Authorise the caller for `tenant_id`, which must be a configured tenant."""
        auth.require_tenant(tenant_id)
        parsed = _parse_uuid(tenant_id)
        if parsed is None or self._view.tenant(tenant_id) is None:
            raise NotFound("tenant", tenant_id)
        return parsed

    def _agent(self, tenant_id: str, agent_id: str) -> pb.Agent:
        agent = self._view.get(tenant_id, "agent", agent_id)
        if not isinstance(agent, pb.Agent):
            raise NotFound("agent", agent_id)
        return agent

    # ------------------------------------------------------------------ commands

    def _watched(self, tenant_id: str) -> Callable[[pb.Agent], bool]:
        """Whether the caller watches a queue an agent takes (a supervisor: their queues)."""
        who = auth.current_principal()
        needs = [
            needs_for(q, common.RoutingRequirements())
            for q in self._view.all(tenant_id, "queue")
            if isinstance(q, pb.Queue) and who.watches(q.name)
        ]
        return lambda agent: any(qualifies(AgentProfile.from_config(agent), n) for n in needs)

    async def set_presence(self, request: acd.SetPresenceRequest) -> acd.AgentPresence:
        tenant_id = self._tenant(request.tenant_id)
        who = auth.current_principal()
        if who.role == auth.SUPERVISOR:
            # A supervisor manages the agents of their queues, not the others.
            if not self._watched(tenant_id)(self._agent(tenant_id, request.agent_id)):
                raise PermissionDenied("the agent takes none of the caller's queues")
        else:
            auth.require_agent(request.agent_id)
        v = Violations()
        v.check(bool(request.agent_id), "agent_id", "must be set")
        v.check(
            request.presence in acd.Presence.values()
            and request.presence != acd.PRESENCE_UNSPECIFIED,
            "presence",
            "must be OFFLINE, AVAILABLE, BUSY, WRAP_UP or AWAY",
        )
        v.check(len(request.reason) <= MAX_REASON, "reason", f"at most {MAX_REASON} characters")
        v.raise_if_any()
        agent = self._agent(tenant_id, request.agent_id)
        configured = {c.media: c.max_concurrent for c in agent.capacity}
        limits: dict[int, int] = {}
        for i, c in enumerate(request.capacity):
            at = f"capacity[{i}]"
            if not v.check(c.media in configured, f"{at}.media", "not a media the agent takes"):
                continue
            v.check(c.media not in limits, f"{at}.media", "a media is listed twice")
            v.check(
                0 <= c.max_concurrent <= configured[c.media],
                f"{at}.max_concurrent",
                f"must be 0 to the configured {configured[c.media]}",
            )
            limits[c.media] = c.max_concurrent
        v.raise_if_any()
        now = now_utc()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await self._repo.load(conn, tenant_id)
            current = rows.statuses.get(agent.id)
            in_use = _in_use(build_routing(tenant_id, self._view, rows, self._settings), agent.id)
            presence = acd.AgentPresence(
                tenant_id=tenant_id,
                agent_id=agent.id,
                presence=request.presence,
                reason=request.reason,
                load=_load(agent, limits, in_use),
                change_time=stamp(now),
            )
            if current is not None and current.last_idle_time is not None:
                presence.last_idle_time.CopyFrom(stamp(current.last_idle_time))
            event = agent_pb2.AgentEvent(
                agent_id=agent.id,
                presence_changed=agent_pb2.AgentPresenceChanged(
                    previous=current.presence if current else acd.PRESENCE_OFFLINE,  # type: ignore[arg-type]
                    presence=presence,
                ),
            )
            await events.publish_agent_event(
                conn, self._topics, tenant_id, events.PRESENCE_CHANGED, event
            )
        return presence

    async def list_presence(
        self, request: acd.ListAgentPresenceRequest
    ) -> acd.ListAgentPresenceResponse:
        tenant_id = self._tenant(request.tenant_id)
        async with self._pool.acquire() as conn:
            rows = await self._repo.load(conn, tenant_id)
        routing = build_routing(tenant_id, self._view, rows, self._settings)
        out = acd.ListAgentPresenceResponse()
        watched = self._watched(tenant_id)
        for agent in sorted(self._view.all(tenant_id, "agent"), key=lambda a: a.name):
            if not isinstance(agent, pb.Agent) or not watched(agent):
                continue
            status = rows.statuses.get(agent.id)
            shown = out.agents.add(
                tenant_id=tenant_id,
                agent_id=agent.id,
                presence=status.presence if status else acd.PRESENCE_OFFLINE,
                reason=status.reason if status else "",
                load=_load(agent, status.limits if status else {}, _in_use(routing, agent.id)),
            )
            if status is not None and status.change_time is not None:
                shown.change_time.CopyFrom(stamp(status.change_time))
        return out

    async def respond_to_offer(self, request: acd.RespondToOfferRequest) -> acd.Offer:
        tenant_id = self._tenant(request.tenant_id)
        auth.require_agent(request.agent_id)
        v = Violations()
        v.check(bool(request.offer_id), "offer_id", "must be set")
        v.check(bool(request.agent_id), "agent_id", "must be set")
        v.check(
            len(request.decline_reason) <= MAX_REASON,
            "decline_reason",
            f"at most {MAX_REASON} characters",
        )
        v.raise_if_any()
        offer_id = _parse_uuid(request.offer_id)
        if offer_id is None:
            raise NotFound("offer", request.offer_id)
        now = now_utc()
        async with self._pool.acquire() as conn, conn.transaction():
            offer = await self._repo.offer(conn, tenant_id, offer_id)
            if offer is None:
                raise NotFound("offer", request.offer_id)
            if offer.agent_id != request.agent_id:
                v.add("agent_id", "the offer was made to another agent")
                v.raise_if_any()
            reason = "" if request.accept else request.decline_reason
            recorded = False
            if offer.state == acd.OFFER_STATE_PENDING:
                if now >= offer.expire_time.ToDatetime(now.tzinfo):
                    raise FailedPrecondition("offer", "the offer has expired")
                recorded = await self._repo.record_answer(
                    conn, tenant_id, offer_id, offer.agent_id, request.accept, reason, now
                )
            if recorded:
                kind = events.OFFER_ACCEPTED if request.accept else events.OFFER_DECLINED
                answer = agent_pb2.AgentOfferAnswer(
                    offer_id=offer_id, interaction_id=offer.interaction_id, reason=reason
                )
                event = agent_pb2.AgentEvent(agent_id=offer.agent_id)
                (event.offer_accepted if request.accept else event.offer_declined).CopyFrom(answer)
                await events.publish_agent_event(conn, self._topics, tenant_id, kind, event)
                return _answered(offer, request.accept, reason, now)
            previous = await self._repo.answer(conn, tenant_id, offer_id)
        if previous is None:
            state = acd.OfferState.Name(offer.state).removeprefix("OFFER_STATE_").lower()
            raise FailedPrecondition("offer", f"the offer is no longer pending ({state})")
        accepted, previous_reason, answered_at = previous
        if accepted != request.accept:
            done = "accepted" if accepted else "declined"
            raise FailedPrecondition("offer", f"the offer was already {done}")
        # The same answer twice: the same offer, as the first answer left it.
        if offer.state in (acd.OFFER_STATE_ACCEPTED, acd.OFFER_STATE_DECLINED):
            return offer
        return _answered(offer, accepted, previous_reason, answered_at)

    # ------------------------------------------------------------------ reads

    async def recommend(self, request: acd.RecommendRequest) -> acd.RecommendResponse:
        tenant_id = self._tenant(request.tenant_id)
        v = Violations()
        v.check(
            0 <= request.max_candidates <= MAX_CANDIDATES,
            "max_candidates",
            f"must be 0 to {MAX_CANDIDATES}",
        )
        v.check(request.assume_wait_seconds >= 0, "assume_wait_seconds", "must not be negative")
        given = request.HasField("requirements") and bool(request.requirements.queue)
        v.check(
            given or bool(request.interaction_id),
            "requirements.queue",
            "must be set unless interaction_id names a waiting interaction",
        )
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            rows = await self._repo.load(conn, tenant_id)
        routing = build_routing(tenant_id, self._view, rows, self._settings)
        now = now_utc()
        contact = routing.contacts.get(request.interaction_id)
        if given:
            _require_watch(request.requirements.queue)
            queue = self._view.by_name(tenant_id, "queue", request.requirements.queue)
            if not isinstance(queue, pb.Queue):
                raise NotFound("queue", request.requirements.queue)
            needs = needs_for(queue, request.requirements)
            customer = Customer.of(request.requirements)
        elif contact is not None:
            _require_watch(contact.needs.queue)
            needs = contact.needs
            customer = Customer.of(contact.requirements)
        else:
            raise NotFound("interaction", request.interaction_id)
        declined = frozenset(contact.declined) if contact else frozenset()
        wait = request.assume_wait_seconds or (contact.wait_seconds(now) if contact else 0)
        policy = routing.policy.queue(needs.queue)
        ring = ring_needs(needs, policy, policy.ring_at(wait))
        ranking = routing.recommend(needs, customer, ring, declined, now, wait)
        limit = request.max_candidates or DEFAULT_CANDIDATES
        return acd.RecommendResponse(explanation=explain(needs, ranking, wait, limit))

    async def queue_stats(self, request: acd.QueueStatsRequest) -> acd.QueueStatsResponse:
        tenant_id = self._tenant(request.tenant_id)
        v = Violations()
        v.check(
            0 <= request.window_seconds <= MAX_WINDOW,
            "window_seconds",
            f"must be 0 to {MAX_WINDOW}",
        )
        v.raise_if_any()
        who = auth.current_principal()
        queues: list[pb.Queue] = []
        every = sorted(q.name for q in self._view.all(tenant_id, "queue") if who.watches(q.name))
        for name in request.queues or every:
            _require_watch(name)
            queue = self._view.by_name(tenant_id, "queue", name)
            if not isinstance(queue, pb.Queue):
                raise NotFound("queue", name)
            queues.append(queue)
        window = request.window_seconds or DEFAULT_WINDOW
        # One snapshot for the state and the logs, and a window that ends after it was taken:
        # a step committed just before the snapshot (an abandon, say) was stamped before `now`,
        # so the figures never show a contact gone from the queue but not yet counted.
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await self._repo.load(conn, tenant_id)
            now = now_utc()
            contacts, presence = await self._repo.history(
                conn, tenant_id, now - timedelta(seconds=window)
            )
        routing = build_routing(tenant_id, self._view, rows, self._settings)
        return acd.QueueStatsResponse(
            queues=[queue_figures(q, routing, now, contacts, presence, window) for q in queues],
            window_seconds=window,
            compute_time=stamp(now),
        )

    async def report(self, request: acd.ReportRequest) -> acd.ReportResponse:
        """Figures over a range of time, by queue, agent or channel, of the queues the caller
        watches (a supervisor: their own)."""
        tenant_id = self._tenant(request.tenant_id)
        start = request.start_time.ToDatetime(tzinfo=UTC)
        end = request.end_time.ToDatetime(tzinfo=UTC)
        v = Violations()
        v.check(request.HasField("start_time"), "start_time", "must be set")
        v.check(request.HasField("end_time"), "end_time", "must be set")
        v.check(start < end, "end_time", "must be after start_time")
        v.check(
            end - start <= timedelta(days=MAX_REPORT_DAYS),
            "end_time",
            f"at most {MAX_REPORT_DAYS} days after start_time",
        )
        v.check(request.group_by != acd.REPORT_GROUPING_UNSPECIFIED, "group_by", "must be set")
        v.raise_if_any()
        who = auth.current_principal()
        queues = sorted(
            (q for q in self._view.all(tenant_id, "queue") if who.watches(q.name)),
            key=lambda q: q.name,
        )
        names = {q.name for q in queues}
        async with self._pool.acquire() as conn:
            contacts = await self._repo.contacts_since(conn, tenant_id, start, end)
        # Only the contacts of the queues the caller watches, whatever the grouping.
        seen = {c.interaction_id for c in contacts if c.queue in names}
        mine = [c for c in contacts if c.interaction_id in seen]
        out = acd.ReportResponse(
            rows=report(queues, mine, Window(start, end), request.group_by),
            group_by=request.group_by,
        )
        out.start_time.CopyFrom(request.start_time)
        out.end_time.CopyFrom(request.end_time)
        return out


MAX_REPORT_DAYS = 366


def _require_watch(queue: str) -> None:
    """A supervisor sees only the queues they watch (`queue` empty: none named yet)."""
    if queue and not auth.current_principal().watches(queue):
        raise PermissionDenied(f"the caller does not watch the queue {queue!r}")


def _load(agent: pb.Agent, limits: dict[int, int], in_use: dict[int, int]) -> list[acd.MediaLoad]:
    """Per media the agent takes: the most at once (the session's limit, else configured) and
    how many are in use."""
    return [
        acd.MediaLoad(
            media=c.media,
            max_concurrent=limits.get(c.media, c.max_concurrent),
            in_use=in_use.get(c.media, 0),
        )
        for c in sorted(agent.capacity, key=lambda c: c.media)
    ]


def _in_use(routing: TenantRouting, agent_id: str) -> dict[int, int]:
    return dict(routing.pool.in_use.get(agent_id, {}))


def _answered(offer: acd.Offer, accept: bool, reason: str, at: datetime) -> acd.Offer:
    """The offer as the answer leaves it once the owner applies it."""
    out = acd.Offer()
    out.CopyFrom(offer)
    out.state = acd.OFFER_STATE_ACCEPTED if accept else acd.OFFER_STATE_DECLINED
    out.decline_reason = reason
    out.close_time.CopyFrom(stamp(at))
    return out
