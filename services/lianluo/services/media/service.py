"""The media service's logic: every change locks its interaction, takes the next sequence
numbers of its timeline, and is announced (interaction.event) and relayed (media.timeline)
through the outbox in the same transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from lianluo.acd.v1 import acd_pb2
from lianluo.common.v1 import common_pb2
from lianluo.domain import redaction
from lianluo.events.v1 import interaction_pb2, ivr_pb2, routing_pb2
from lianluo.media.v1 import media_pb2 as pb
from lianluo.runtime import auth, contract, outbox, paging
from lianluo.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Violations,
)
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.media import domain
from lianluo.services.media.hub import DESK_FRAME, FRAME, STAFF_FRAME
from lianluo.services.media.repository import Repository
from lianluo.tenants.v1 import tenants_pb2

log = get_logger(__name__)
S = pb.InteractionState
R = pb.ParticipantRole
PRODUCER = "media"
OVERFLOW_NOTICE = "All our agents are busy. We have kept your message and will get back to you."
MOVED_NOTICE = "We are passing you to {queue}; please stay with us."
EXPERTS_NOTICE = "We are finding an expert to help you; please stay with us."
CALLBACK_NOTICE = "All our agents are busy. We will call you back on {number}."
CLOSED_NOTICE = "We are closed now. We have kept your message and will answer when we open."
CLOSED_CALLBACK_NOTICE = "We are closed now. We will call you back on {number} when we open."
BOT_ID = "ivr"
# How far ahead an agent may schedule a callback.
CALLBACK_NOTICE_MIN = timedelta(minutes=1)
CALLBACK_AHEAD_MAX = timedelta(days=90)
# Why the agents leave a conversation a supervisor takes over; the ACD frees their capacity.
TAKEN_OVER = "taken_over"
# Why a person left a conversation others on staff carry on (a colleague after a consult).
LEFT = "left"
# How long an agent's join may wait for its assignment to arrive from the ACD, looking again
# this often: the assignment is usually one or two hops (tens of ms) behind the accept, and
# each look is one short transaction.
ASSIGNMENT_WAIT_SECONDS = 5.0
ASSIGNMENT_POLL_SECONDS = 0.025
# Media that need a real-time endpoint for clients to connect to.
REAL_TIME = frozenset({1, 3, 7})  # voice, video, screen share
STAFF_ROLES = frozenset(
    {R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT, R.PARTICIPANT_ROLE_SUPERVISOR}
)


def _stamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def _uuid(value: str, field: str) -> uuid.UUID | None:
    if not value:
        raise InvalidArgument([FieldViolation(field, "must be set")])
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class Change:
    """One locked interaction and the timeline items a change adds to it."""

    def __init__(self, conn: asyncpg.Connection, tid: uuid.UUID, it: pb.Interaction) -> None:
        self.conn = conn
        self.tid = tid
        self.it = it
        self.items: list[tuple[pb.ServerFrame, str | None, Message | None, bool]] = []

    def add(
        self,
        frame_field: str,
        value: Message,
        *,
        event: str | None = None,
        event_value: Message | None = None,
        staff_only: bool = False,
    ) -> pb.ServerFrame:
        """Append an item to the timeline; `event` names its InteractionEvent case, if any."""
        self.it.last_sequence += 1
        frame = pb.ServerFrame(
            interaction_id=self.it.id, sequence=self.it.last_sequence, time=_stamp()
        )
        getattr(frame, frame_field).CopyFrom(value)
        self.items.append((frame, event, event_value or value, staff_only))
        self.it.update_time.CopyFrom(frame.time)
        return frame

    def move(self, target: Any, reason: str) -> bool:
        """Change the state if the state machine allows it; False (and nothing) otherwise."""
        if not domain.can_move(self.it.state, target):
            return False
        change = pb.StateChange(from_state=self.it.state, to_state=target, reason=reason)
        self.it.state = target
        self.add("state_changed", change, event="state_changed")
        return True

    def end(self, final: Any, resolution: pb.Resolution, by: str = "") -> None:
        if self.it.state in domain.TERMINAL:
            return
        self.move(final, resolution.code or "ended")
        self.it.resolution.CopyFrom(resolution)
        self.it.end_time.CopyFrom(_stamp())
        ending = pb.InteractionEnd(
            final_state=final, resolution=resolution, ended_by_participant_id=by
        )
        self.add("ended", ending, event="ended")

    def message(
        self,
        sender: pb.Participant,
        content: pb.MessageContent,
        cmid: str = "",
        whisper: bool = False,
        redacted: Sequence[str] = (),
    ) -> pb.Message:
        msg = pb.Message(
            id=str(uuid.uuid4()),
            interaction_id=self.it.id,
            sequence=self.it.last_sequence + 1,
            sender_participant_id=sender.id,
            sender_role=sender.role,
            client_message_id=cmid,
            content=content,
            send_time=_stamp(),
            whisper=whisper,
            redacted=redacted,
        )
        self.add("message", msg, event="message", staff_only=whisper)
        return msg

    def participant(self, participant_id: str) -> pb.Participant | None:
        return next((p for p in self.it.participants if p.id == participant_id), None)


class MediaService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        config: TenantConfigView,
        event_topic: str,
        routing_topic: str,
        timeline_topic: str,
        secret_topic: str,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._config = config
        self._event_topic = event_topic
        self._routing_topic = routing_topic
        self._timeline_topic = timeline_topic
        self._secret_topic = secret_topic

    # ------------------------------------------------------------------ writing

    async def _flush(self, change: Change) -> None:
        await self._repo.save(change.conn, change.tid, change.it)
        iid = uuid.UUID(change.it.id)
        rows = [(f.sequence, f.SerializeToString(), staff) for f, _, _, staff in change.items]
        await self._repo.add_frames(change.conn, change.tid, rows, iid)
        tenant = str(change.tid)
        async with outbox.batched(change.conn):
            for frame, event, value, staff in change.items:
                if event is not None and value is not None:
                    ev = interaction_pb2.InteractionEvent(
                        interaction_id=change.it.id, sequence=frame.sequence
                    )
                    getattr(ev, event).CopyFrom(value)
                    envelope = contract.envelope(contract.INTERACTION_EVENT, PRODUCER, tenant, ev)
                    await outbox.enqueue(change.conn, self._event_topic, envelope)
                relay = contract.envelope(
                    contract.MEDIA_TIMELINE,
                    PRODUCER,
                    tenant,
                    frame,
                    STAFF_FRAME if staff else FRAME,
                )
                await outbox.enqueue(change.conn, self._timeline_topic, relay)

    async def _desk(
        self, conn: asyncpg.Connection, tenant: str, agent_id: str, frame: pb.ServerFrame
    ) -> None:
        envelope = contract.envelope(contract.MEDIA_TIMELINE, PRODUCER, tenant, frame, DESK_FRAME)
        await outbox.enqueue(conn, self._timeline_topic, envelope, key=f"{tenant}/desk/{agent_id}")

    async def signal(self, tenant_id: str, frame: pb.ServerFrame) -> None:
        """A frame outside the timeline (typing, a read receipt) to the interaction's streams
        on every replica; nothing of it is kept."""
        frame.time.GetCurrentTime()
        envelope = contract.envelope(contract.MEDIA_TIMELINE, PRODUCER, tenant_id, frame, FRAME)
        async with self._pool.acquire() as conn:
            await outbox.enqueue(conn, self._timeline_topic, envelope)

    async def _locked(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str
    ) -> Change:
        tid = _uuid(tenant_id, "tenant_id")
        iid = _uuid(interaction_id, "interaction_id")
        it = None if tid is None or iid is None else await self._repo.get(conn, tid, iid, lock=True)
        if it is None or tid is None:
            raise NotFound("interaction", interaction_id)
        return Change(conn, tid, it)

    # ------------------------------------------------------------------ API

    async def start(self, req: pb.StartInteractionRequest) -> tuple[pb.Interaction, str]:
        who = auth.require_tenant(req.tenant_id)
        if not domain.may_start(who, req.customer.id, req.channel):
            raise PermissionDenied(
                "only a key, a tenant admin or the customer's own session starts an interaction"
            )
        tid = _uuid(req.tenant_id, "tenant_id")
        if tid is None or self._config.tenant(req.tenant_id) is None:
            raise NotFound("tenant", req.tenant_id)
        v = Violations()
        v.check(req.channel != 0, "channel", "must be set")
        v.check(req.media != 0, "media", "must be set")
        entry = req.WhichOneof("entry")
        v.check(entry is not None, "entry", "one of flow or queue")
        if entry == "flow":
            v.check(
                self._config.by_name(req.tenant_id, "flow", req.flow) is not None,
                "flow",
                f"no flow named {req.flow!r}",
            )
        if entry == "queue":
            v.check(
                self._config.by_name(req.tenant_id, "queue", req.queue) is not None,
                "queue",
                f"no queue named {req.queue!r}",
            )
        domain.check_collected(req.collected_data, v)
        v.check(len(req.customer.history) <= 20, "customer.history", "at most 20 contacts")
        v.raise_if_any()
        async with self._pool.acquire() as conn, conn.transaction():
            if req.request_id:
                earlier = await self._repo.by_request(conn, tid, req.request_id)
                if earlier is not None:
                    return earlier, earlier.participants[0].id
            it, customer = _new_interaction(
                req.tenant_id, req.channel, req.customer, req.media, req.collected_data
            )
            if entry == "flow":
                it.entry_flow = req.flow
            else:
                it.entry_queue = req.queue
                it.queue = req.queue
            change = await self._create(conn, tid, it, customer, who, req.request_id)
            if entry == "flow":
                change.move(S.INTERACTION_STATE_IN_IVR, "flow")
            else:
                change.move(S.INTERACTION_STATE_QUEUED, "queue")
                await self._route(change, req.queue)
            await self._flush(change)
        return it, customer.id

    async def _create(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        it: pb.Interaction,
        customer: pb.Participant,
        who: auth.Principal,
        request_id: str,
    ) -> Change:
        """Store a new interaction within the tenant's quota, and publish its start: the
        created event, then its customer joining, first on its timeline."""
        limit = who.limits.max_concurrent_interactions
        if limit and await self._repo.open_count(conn, tid, limit) >= limit:
            raise ResourceExhausted(
                f"tenants/{it.tenant_id}",
                "max_concurrent_interactions",
                f"the tenant has its {limit:,} interactions open",
                5.0,
            )
        await self._repo.insert(conn, tid, it, request_id or None)
        created = pb.Interaction()
        created.CopyFrom(it)
        await outbox.enqueue(
            conn,
            self._event_topic,
            contract.envelope(
                contract.INTERACTION_EVENT,
                PRODUCER,
                it.tenant_id,
                interaction_pb2.InteractionEvent(interaction_id=it.id, created=created),
            ),
        )
        change = Change(conn, tid, it)
        change.add("participant_joined", customer, event="participant_joined")
        return change

    async def _route(
        self,
        change: Change,
        queue: str,
        target: common_pb2.RoutingTarget | None = None,
        note: str = "",
        transferred_by: str = "",
        stay: bool = False,
        learnt: common_pb2.RoutingRequirements | None = None,
    ) -> None:
        """Ask the ACD for a person: after self-service (with what it `learnt`), for a contact
        that skips it, or for a transfer. The interaction's own facts complete the request."""
        it = change.it
        req = ivr_pb2.RoutingRequest(interaction_id=it.id, transferred_by=transferred_by, stay=stay)
        r = req.requirements
        if learnt is not None:
            r.CopyFrom(learnt)
        r.queue = queue
        r.channel = it.channel
        if it.media:
            r.media = it.media[0].media
        r.customer_id = it.customer.id
        r.language = it.customer.language
        r.customer_attributes.update(it.customer.attributes)
        # What the channel collected, unless self-service learnt better.
        for name, value in it.collected_data.items():
            r.collected_data[name] = r.collected_data.get(name) or value
        del r.customer_history[:]
        r.customer_history.extend(it.customer.history)
        if target is not None:
            r.target.CopyFrom(target)
        r.note = note
        if it.customer.address.startswith("+"):
            # An E.164 address is a number the ACD can call back.
            r.callback_number = it.customer.address
        envelope = contract.envelope(contract.ROUTING_REQUEST, PRODUCER, it.tenant_id, req)
        await outbox.enqueue(change.conn, self._routing_topic, envelope)

    async def list_open(self, req: pb.ListInteractionsRequest) -> pb.ListInteractionsResponse:
        """The tenant's interactions not ended yet, oldest first, in the queues the caller
        may watch (a supervisor: their own)."""
        who = auth.require_tenant(req.tenant_id)
        if req.queue and not who.watches(req.queue):
            raise PermissionDenied(f"the caller does not watch the queue {req.queue!r}")
        queues: list[str] | None = None
        if req.queue:
            queues = [req.queue]
        elif who.role == auth.SUPERVISOR:
            queues = list(who.queues)
        size = paging.page_size(req.page.page_size)
        scope = f"media/open/{req.tenant_id}/{req.queue}"
        after = None
        if req.page.page_token:
            after = paging.decode_token(req.page.page_token, scope)
            if not domain.position(after):
                bad = FieldViolation("page.page_token", "not a token of this list")
                raise InvalidArgument([bad])
        tid = _uuid(req.tenant_id, "tenant_id")
        if tid is None:
            raise NotFound("tenant", req.tenant_id)
        async with self._pool.acquire() as conn:
            found = await self._repo.open_interactions(conn, tid, queues, after, size + 1)
        out = pb.ListInteractionsResponse(interactions=[it for it, _ in found[:size]])
        if len(found) > size:
            out.page.next_page_token = paging.encode_token(scope, found[size - 1][1])
        return out

    async def get(self, tenant_id: str, interaction_id: str) -> pb.Interaction:
        auth.require_tenant(tenant_id)
        tid, iid = _uuid(tenant_id, "tenant_id"), _uuid(interaction_id, "interaction_id")
        async with self._pool.acquire() as conn:
            it = None if tid is None or iid is None else await self._repo.get(conn, tid, iid)
        if it is None:
            raise NotFound("interaction", interaction_id)
        _require_use(it)
        return it

    async def send(
        self,
        tenant_id: str,
        interaction_id: str,
        participant_id: str,
        cmid: str,
        content: pb.MessageContent,
        whisper: bool = False,
    ) -> pb.Message:
        auth.require_tenant(tenant_id)
        v = Violations()
        domain.check_content(content, v)
        v.check(len(cmid) <= 200, "client_message_id", "at most 200 characters")
        v.raise_if_any()
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, tenant_id, interaction_id)
            sender = change.participant(participant_id)
            if sender is None or sender.HasField("leave_time"):
                raise NotFound("participant", participant_id)
            _require_use(change.it, sender)
            iid = uuid.UUID(change.it.id)
            if cmid:
                seq = await self._repo.client_message(conn, change.tid, iid, sender.id, cmid)
                if seq is not None:
                    frame = await self._repo.frame_at(conn, change.tid, iid, seq)
                    return pb.ServerFrame.FromString(frame or b"").message
            domain.require_open(change.it)
            if whisper and sender.role != R.PARTICIPANT_ROLE_SUPERVISOR:
                raise InvalidArgument([FieldViolation("whisper", "only a supervisor whispers")])
            content, redacted = self._redacted(tenant_id, content)
            if (
                sender.role == R.PARTICIPANT_ROLE_CUSTOMER
                and content.WhichOneof("content") == "text"
                and await self._repo.take_secret(conn, change.tid, iid)
            ):
                # The answer to a prompt for a secret: the IVR alone gets it; the timeline,
                # everyone on it and the recording get it masked.
                secret = ivr_pb2.SecretAnswer(interaction_id=change.it.id, text=content.text)
                envelope = contract.envelope(contract.IVR_SECRET, PRODUCER, tenant_id, secret)
                await outbox.enqueue(conn, self._secret_topic, envelope)
                content, redacted = (
                    pb.MessageContent(text=redaction.SECRET_MASK),
                    [redaction.IVR_SECRET],
                )
            msg = change.message(sender, content, cmid, whisper, redacted)
            if cmid:
                await self._repo.remember_client_message(
                    conn, change.tid, iid, sender.id, cmid, msg.sequence
                )
            await self._flush(change)
        return msg

    def _redacted(
        self, tenant_id: str, content: pb.MessageContent
    ) -> tuple[pb.MessageContent, list[str]]:
        """The content as the tenant's policy lets it be stored and relayed: what it masks is
        masked before anything else sees it, and named."""
        if content.WhichOneof("content") != "text":
            return content, []
        tenant = self._config.tenant(tenant_id)
        rules = tenant.redaction if tenant is not None else None
        policy = redaction.Policy(
            keep_card_numbers=bool(rules and rules.keep_card_numbers),
            keep_national_ids=bool(rules and rules.keep_national_ids),
        )
        text, kinds = redaction.redact(content.text, policy)
        return (pb.MessageContent(text=text), kinds) if kinds else (content, [])

    async def schedule_callback(self, req: pb.ScheduleCallbackRequest) -> pb.Interaction:
        """A call back the agent promised: a new phone interaction for the same customer, in
        state CALLBACK, that the ACD offers to this agent when it is due."""
        who = auth.require_tenant(req.tenant_id)
        tid = _uuid(req.tenant_id, "tenant_id")
        if tid is None:
            raise NotFound("tenant", req.tenant_id)
        v = Violations()
        v.check(
            bool(domain.E164.fullmatch(req.callback_number)),
            "callback_number",
            "an E.164 number: + and 8 to 15 digits",
        )
        now = datetime.now(UTC)
        due = req.due_time.ToDatetime(UTC) if req.HasField("due_time") else now
        v.check(
            now + CALLBACK_NOTICE_MIN <= due <= now + CALLBACK_AHEAD_MAX,
            "due_time",
            "from one minute to 90 days ahead",
        )
        if req.queue:
            v.check(
                self._config.by_name(req.tenant_id, "queue", req.queue) is not None,
                "queue",
                f"no queue named {req.queue!r}",
            )
        v.raise_if_any()
        async with self._pool.acquire() as conn, conn.transaction():
            if req.request_id:
                earlier = await self._repo.by_request(conn, tid, req.request_id)
                if earlier is not None:
                    return earlier
            source = await self._locked(conn, req.tenant_id, req.interaction_id)
            by = source.participant(req.participant_id)
            if by is None:
                raise NotFound("participant", req.participant_id)
            _require_use(source.it, by)
            if by.role not in (R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT):
                raise InvalidArgument(
                    [FieldViolation("participant_id", "only an agent or expert calls back")]
                )
            queue = req.queue or source.it.queue
            if not queue:
                raise InvalidArgument([FieldViolation("queue", "the conversation had no queue")])
            customer = pb.Customer()
            customer.CopyFrom(source.it.customer)
            # The number to dial: the ACD's request carries an E.164 address as the callback's.
            customer.address = req.callback_number
            it, joined = _new_interaction(
                req.tenant_id, common_pb2.CHANNEL_PHONE, customer, common_pb2.MEDIA_TYPE_VOICE
            )
            it.entry_queue = it.queue = queue
            it.callback.CopyFrom(
                pb.Callback(
                    callback_number=req.callback_number,
                    due_time=req.due_time,
                    follows_interaction_id=source.it.id,
                    agent_id=by.subject_id,
                )
            )
            change = await self._create(conn, tid, it, joined, who, req.request_id)
            change.move(S.INTERACTION_STATE_CALLBACK, "scheduled_callback")
            await self._route(
                change,
                queue,
                common_pb2.RoutingTarget(agent_id=by.subject_id),
                req.note,
                learnt=common_pb2.RoutingRequirements(not_before=req.due_time),
            )
            await self._flush(change)
        return it

    async def take_over(self, req: pb.TakeOverRequest) -> pb.Interaction:
        """The joined supervisor carries on alone with the customer; the agents leave."""
        auth.require_tenant(req.tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, req.tenant_id, req.interaction_id)
            by = change.participant(req.participant_id)
            if by is None or by.HasField("leave_time"):
                raise NotFound("participant", req.participant_id)
            _require_use(change.it, by)
            if by.role != R.PARTICIPANT_ROLE_SUPERVISOR:
                raise InvalidArgument(
                    [FieldViolation("participant_id", "only a supervisor takes over")]
                )
            if change.it.state != S.INTERACTION_STATE_CONNECTED:
                raise FailedPrecondition(
                    f"interaction/{change.it.id}", "only a connected conversation is taken over"
                )
            for p in change.it.participants:
                if p.role in (R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT):
                    self._leave(change, p.subject_id, TAKEN_OVER)
            await self._flush(change)
        return change.it

    async def rate(self, req: pb.RateRequest) -> pb.Interaction:
        """The customer's rating of a conversation that has ended for them; once."""
        auth.require_tenant(req.tenant_id)
        v = Violations()
        v.check(1 <= req.rating.score <= 5, "rating.score", "1 to 5")
        v.check(len(req.rating.comment) <= 2000, "rating.comment", "at most 2,000 characters")
        v.raise_if_any()
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, req.tenant_id, req.interaction_id)
            rater = change.participant(req.participant_id)
            if rater is None or rater.role != R.PARTICIPANT_ROLE_CUSTOMER:
                raise NotFound("participant", req.participant_id)
            _require_use(change.it, rater)
            if change.it.state not in domain.RATEABLE:
                raise FailedPrecondition(
                    f"interaction/{change.it.id}", "the conversation has not ended"
                )
            if change.it.HasField("rating"):
                raise FailedPrecondition(f"interaction/{change.it.id}", "it is rated already")
            rating = pb.Rating(score=req.rating.score, comment=req.rating.comment)
            rating.rate_time.CopyFrom(_stamp())
            change.it.rating.CopyFrom(rating)
            change.add("rated", rating, event="rated")
            await self._flush(change)
        return change.it

    async def add_media(self, req: pb.AddMediaRequest) -> pb.MediaLeg:
        auth.require_tenant(req.tenant_id)
        if req.media == 0:
            raise InvalidArgument([FieldViolation("media", "must be set")])
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, req.tenant_id, req.interaction_id)
            adder = change.participant(req.participant_id)
            if adder is None:
                raise NotFound("participant", req.participant_id)
            _require_use(change.it, adder)
            domain.require_open(change.it)
            leg = pb.MediaLeg(
                id=f"m-{uuid.uuid4().hex[:12]}",
                media=req.media,
                participant_id=req.participant_id,
                start_time=_stamp(),
            )
            if leg.media in REAL_TIME:
                leg.endpoint_uri = f"webrtc://{change.it.id}/{leg.id}"
            change.it.media.append(leg)
            change.add("media_added", leg, event="media_added")
            await self._flush(change)
        return leg

    async def remove_media(self, req: pb.RemoveMediaRequest) -> pb.MediaLeg:
        auth.require_tenant(req.tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, req.tenant_id, req.interaction_id)
            leg = next((m for m in change.it.media if m.id == req.media_leg_id), None)
            if leg is None:
                raise NotFound("media_leg", req.media_leg_id)
            _require_use(change.it, change.participant(leg.participant_id))
            changed = not leg.HasField("end_time")
            if changed:
                leg.end_time.CopyFrom(_stamp())
            if req.HasField("recording") and not leg.HasField("recording"):
                domain.check_recording(req.recording)
                leg.recording.CopyFrom(req.recording)
                changed = True
            if changed:
                change.add("media_removed", leg, event="media_removed")
                await self._flush(change)
        return leg

    async def transfer(self, req: pb.TransferRequest) -> pb.Interaction:
        """Hand a connected interaction to a queue, a named agent or an expert; the ACD routes
        it with the note, and releases the transferring agent when another accepts (unless
        they stay)."""
        auth.require_tenant(req.tenant_id)
        t = req.transfer
        target = self._transfer_target(req.tenant_id, t)
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, req.tenant_id, req.interaction_id)
            by = change.participant(t.participant_id)
            if by is None or by.HasField("leave_time"):
                raise NotFound("participant", t.participant_id)
            _require_use(change.it, by)
            if by.role not in (R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT):
                raise InvalidArgument(
                    [FieldViolation("transfer.participant_id", "only an agent or expert transfers")]
                )
            if target.agent_id == by.subject_id:
                raise InvalidArgument([FieldViolation("transfer.agent_id", "is the transferrer")])
            domain.require_open(change.it)
            if change.it.state != S.INTERACTION_STATE_CONNECTED:
                raise FailedPrecondition(
                    f"interaction/{change.it.id}", "only a connected interaction is transferred"
                )
            change.add("transfer", t, event="transfer_requested", staff_only=True)
            queue = t.queue or change.it.queue
            change.it.queue = queue
            change.move(S.INTERACTION_STATE_QUEUED, "transfer")
            await self._route(change, queue, target, t.note, by.subject_id, t.stay)
            await self._flush(change)
        return change.it

    def _transfer_target(self, tenant_id: str, t: pb.Transfer) -> common_pb2.RoutingTarget:
        """Check a transfer's target against the tenant's configuration."""
        kind = t.WhichOneof("target")
        if kind is None:
            raise InvalidArgument([FieldViolation("transfer.target", "queue, agent_id or expert")])
        if kind == "queue" and self._config.by_name(tenant_id, "queue", t.queue) is None:
            raise InvalidArgument([FieldViolation("transfer.queue", "no such queue")])
        named = t.agent_id if kind == "agent_id" else t.expert.agent_id if kind == "expert" else ""
        field = "transfer.agent_id" if kind == "agent_id" else "transfer.expert.agent_id"
        if named and self._config.get(tenant_id, "agent", named) is None:
            raise InvalidArgument([FieldViolation(field, "no such agent")])
        if kind == "expert" and not named and not t.expert.expertise:
            raise InvalidArgument(
                [FieldViolation("transfer.expert", "agent_id or expertise must be set")]
            )
        if named:
            return common_pb2.RoutingTarget(agent_id=named)
        if kind == "expert":
            return common_pb2.RoutingTarget(experts=True, expertise=t.expert.expertise)
        return common_pb2.RoutingTarget()

    async def end(self, req: pb.EndRequest) -> pb.Interaction:
        auth.require_tenant(req.tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, req.tenant_id, req.interaction_id)
            ender = change.participant(req.participant_id) if req.participant_id else None
            if req.participant_id and ender is None:
                raise NotFound("participant", req.participant_id)
            _require_use(change.it, ender)
            step = domain.ending(change.it, ender, req.resolution)
            if step == "wrap_up":
                # The conversation is over; the agent's after-contact work is not: they close it
                # with their disposition, which the closed-loop notice follows.
                if ender is not None and ender.role == R.PARTICIPANT_ROLE_CUSTOMER:
                    ender.leave_time.CopyFrom(_stamp())
                    change.add("participant_left", ender, event="participant_left")
                change.move(S.INTERACTION_STATE_WRAP_UP, "wrap_up")
                await self._flush(change)
            elif step == "end":
                change.end(domain.final_state(change.it.state), req.resolution, req.participant_id)
                await self._flush(change)
        return change.it

    # ------------------------------------------------------------------ streams

    async def join(self, join: pb.Join) -> tuple[pb.Interaction | None, pb.Participant | None]:
        """Check a Connect join; add a supervisor as a participant. (None, None) for a desk."""
        who = auth.require_tenant(join.tenant_id)
        if not domain.may_join_as(who, join):
            raise PermissionDenied("a person joins only as themselves, a customer as the customer")
        if not join.interaction_id:
            if join.role not in (R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT):
                raise InvalidArgument([FieldViolation("join.interaction_id", "must be set")])
            if self._config.get(join.tenant_id, "agent", join.subject_id) is None:
                raise NotFound("agent", join.subject_id)
            return None, None
        # An agent who has just accepted joins as the ACD's assignment travels to this service
        # (routing.decision): a join that arrives first waits for it a moment instead of failing.
        deadline = asyncio.get_running_loop().time() + ASSIGNMENT_WAIT_SECONDS
        if join.monitor and join.role != R.PARTICIPANT_ROLE_SUPERVISOR:
            raise InvalidArgument([FieldViolation("join.monitor", "only a supervisor monitors")])
        while True:
            interaction, found = await self._join_once(join, who)
            if found is not None or join.monitor:
                return interaction, found
            waits = join.role in (R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT)
            if waits:
                # The customer left between the accept and this join: say so, as the agent's
                # desk shows "the customer has gone" rather than a refusal.
                domain.require_open(interaction)
            if not waits or asyncio.get_running_loop().time() > deadline:
                raise PermissionDenied("not a participant of this interaction")
            await asyncio.sleep(ASSIGNMENT_POLL_SECONDS)

    async def _join_once(
        self, join: pb.Join, who: auth.Principal
    ) -> tuple[pb.Interaction, pb.Participant | None]:
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, join.tenant_id, join.interaction_id)
            if who.role in (auth.CUSTOMER, auth.SUPERVISOR):
                # The others wait below for their assignment; these are the caller's or never.
                _require_use(change.it)
            found = next(
                (
                    p
                    for p in change.it.participants
                    if domain.same_role(p.role, join.role)
                    and (p.subject_id == join.subject_id or p.id == join.subject_id)
                ),
                None,
            )
            if join.monitor:
                return change.it, None  # watching unseen: no participant
            if found is None and join.role == R.PARTICIPANT_ROLE_SUPERVISOR:
                found = pb.Participant(
                    id=f"s-{uuid.uuid4().hex[:12]}",
                    role=join.role,
                    subject_id=join.subject_id,
                    display_name=join.display_name,
                    join_time=_stamp(),
                )
                change.it.participants.append(found)
                change.add("participant_joined", found, event="participant_joined")
                await self._flush(change)
            return change.it, found

    async def replay(
        self, tenant_id: str, interaction_id: str, after: int, staff: bool
    ) -> list[pb.ServerFrame]:
        async with self._pool.acquire() as conn:
            rows = await self._repo.frames_after(
                conn, uuid.UUID(tenant_id), uuid.UUID(interaction_id), after, staff
            )
        return [pb.ServerFrame.FromString(r) for r in rows]

    async def pending_offers(self, tenant_id: str, agent_id: str) -> list[pb.ServerFrame]:
        async with self._pool.acquire() as conn:
            rows = await self._repo.pending_offers(conn, uuid.UUID(tenant_id), agent_id)
        return [pb.ServerFrame.FromString(r) for r in rows]

    # ------------------------------------------------------------------ events

    async def on_ivr_output(
        self, conn: asyncpg.Connection, tenant_id: str, out: ivr_pb2.IvrOutput
    ) -> None:
        change = await self._locked(conn, tenant_id, out.interaction_id)
        if change.it.state in domain.TERMINAL:
            return
        bot = self._bot(change)
        kind = out.WhichOneof("output")
        asks_secret = kind == "prompt" and out.prompt.sensitive and out.prompt.expects_answer
        await self._repo.await_secret(conn, change.tid, uuid.UUID(change.it.id), asks_secret)
        if kind == "prompt":
            text = domain.prompt_text(
                out.prompt.text, [(c.digit, c.label) for c in out.prompt.choices]
            )
            msg = pb.Message(
                id=str(uuid.uuid4()),
                interaction_id=change.it.id,
                sequence=change.it.last_sequence + 1,
                sender_participant_id=bot.id,
                sender_role=bot.role,
                content=pb.MessageContent(text=text),
                send_time=_stamp(),
            )
            change.add("prompt", out.prompt, event="message", event_value=msg)
        elif kind == "routed":
            change.it.queue = out.routed.queue
            # Queued and asked for in one transaction: no offer can come before the queueing.
            if change.move(S.INTERACTION_STATE_QUEUED, "ivr_routed"):
                await self._route(change, out.routed.queue, learnt=out.routed.requirements)
        elif kind == "ended":
            if out.ended.text:
                change.message(bot, pb.MessageContent(text=out.ended.text))
            change.end(S.INTERACTION_STATE_CLOSED, pb.Resolution(code="self_service"))
        await self._flush(change)

    def _bot(self, change: Change) -> pb.Participant:
        bot = next((p for p in change.it.participants if p.role == R.PARTICIPANT_ROLE_BOT), None)
        if bot is None:
            bot = pb.Participant(
                id=BOT_ID,
                role=R.PARTICIPANT_ROLE_BOT,
                subject_id=BOT_ID,
                display_name="Self-service",
                join_time=_stamp(),
            )
            change.it.participants.append(bot)
            change.add("participant_joined", bot, event="participant_joined")
        return bot

    async def on_routing_decision(
        self, conn: asyncpg.Connection, tenant_id: str, decision: routing_pb2.RoutingDecision
    ) -> None:
        change = await self._locked(conn, tenant_id, decision.interaction_id)
        kind = decision.WhichOneof("decision")
        iid = uuid.UUID(change.it.id)
        if kind == "offer":
            offer = decision.offer.offer
            frame = pb.ServerFrame(interaction_id=change.it.id, time=_stamp(), offer=offer)
            if change.move(S.INTERACTION_STATE_OFFERED, "offered"):
                await self._repo.put_offer(
                    conn, change.tid, offer.id, offer.agent_id, iid, frame.SerializeToString()
                )
                await self._desk(conn, tenant_id, offer.agent_id, frame)
        elif kind == "offer_withdrawn":
            # The interaction ended or moved on; that event sets its state. The desk is told.
            ended = decision.offer_withdrawn
            await self._close_offer(
                change, ended.offer_id, ended.agent_id, acd_pb2.OFFER_STATE_WITHDRAWN
            )
        elif kind in {"offer_declined", "offer_timed_out"}:
            ended = getattr(decision, kind)
            state = (
                acd_pb2.OFFER_STATE_DECLINED
                if kind == "offer_declined"
                else acd_pb2.OFFER_STATE_TIMED_OUT
            )
            change.move(S.INTERACTION_STATE_QUEUED, kind)
            await self._close_offer(change, ended.offer_id, ended.agent_id, state)
        elif kind == "assign":
            assign = decision.assign
            agent: Any = self._config.get(tenant_id, "agent", assign.agent_id)
            role = R.PARTICIPANT_ROLE_EXPERT if assign.agent_kind == 2 else R.PARTICIPANT_ROLE_AGENT
            person = pb.Participant(
                id=f"a-{assign.agent_id[:12]}",
                role=role,
                subject_id=assign.agent_id,
                display_name=agent.display_name if agent else "",
                join_time=_stamp(),
            )
            if change.it.state not in domain.TERMINAL and change.participant(person.id) is None:
                change.it.participants.append(person)
                change.add("participant_joined", person, event="participant_joined")
                change.move(S.INTERACTION_STATE_CONNECTED, "offer_accepted")
            if assign.released_agent_id:
                self._leave(change, assign.released_agent_id, "transferred")
            await self._close_offer(
                change, assign.offer_id, assign.agent_id, acd_pb2.OFFER_STATE_ACCEPTED
            )
        elif kind == "overflow" and change.it.state not in domain.TERMINAL:
            self._overflowed(change, decision.overflow)
        await self._flush(change)

    def _overflowed(self, change: Change, overflow: routing_pb2.RoutingOverflow) -> None:
        """Tell the customer where the queue's overflow takes them."""
        kind = overflow.overflow.kind
        closed = overflow.cause == routing_pb2.OVERFLOW_CAUSE_CLOSED
        if kind == tenants_pb2.OVERFLOW_KIND_QUEUE:
            target = self._config.by_name(str(change.tid), "queue", overflow.overflow.target_queue)
            name = getattr(target, "display_name", "") or overflow.overflow.target_queue
            text = MOVED_NOTICE.format(queue=name)
            change.it.queue = overflow.overflow.target_queue
            change.move(S.INTERACTION_STATE_QUEUED, "overflow")
        elif kind == tenants_pb2.OVERFLOW_KIND_EXPERTS:
            text = EXPERTS_NOTICE
            change.move(S.INTERACTION_STATE_QUEUED, "overflow")
        elif kind == tenants_pb2.OVERFLOW_KIND_CALLBACK:
            notice = CLOSED_CALLBACK_NOTICE if closed else CALLBACK_NOTICE
            text = notice.format(number=overflow.callback_number)
            change.move(S.INTERACTION_STATE_CALLBACK, "callback")
        else:
            notice = CLOSED_NOTICE if closed else OVERFLOW_NOTICE
            change.message(self._bot(change), pb.MessageContent(text=notice))
            change.end(S.INTERACTION_STATE_OVERFLOWED, pb.Resolution(code="overflow"))
            return
        change.message(self._bot(change), pb.MessageContent(text=text))

    async def leave(self, tenant_id: str, interaction_id: str, participant_id: str) -> None:
        """A person on staff leaves a conversation that an agent or expert carries on (the
        colleague who stayed after a consult, or the one who asked them). The last agent does
        not leave: they end it (End), which starts their wrap-up."""
        async with self._pool.acquire() as conn, conn.transaction():
            change = await self._locked(conn, tenant_id, interaction_id)
            me = change.participant(participant_id)
            if me is None or me.HasField("leave_time") or not self.is_staff(me.role):
                return
            if change.it.state != S.INTERACTION_STATE_CONNECTED:
                return
            carried = any(
                p.id != me.id
                and p.role in (R.PARTICIPANT_ROLE_AGENT, R.PARTICIPANT_ROLE_EXPERT)
                and not p.HasField("leave_time")
                for p in change.it.participants
            )
            if carried:
                self._leave(change, me.subject_id, LEFT)
                await self._flush(change)

    def _leave(self, change: Change, agent_id: str, reason: str) -> None:
        """The agent's participant leaves the interaction (for example after a transfer)."""
        for p in change.it.participants:
            staff = p.subject_id == agent_id and p.role != R.PARTICIPANT_ROLE_CUSTOMER
            if staff and not p.HasField("leave_time"):
                p.leave_time.CopyFrom(_stamp())
                p.leave_reason = reason
                change.add("participant_left", p, event="participant_left")

    async def _close_offer(self, change: Change, offer_id: str, agent_id: str, state: Any) -> None:
        await self._repo.close_offer(change.conn, change.tid, offer_id)
        frame = pb.ServerFrame(
            interaction_id=change.it.id,
            time=_stamp(),
            offer_closed=pb.OfferClosed(offer_id=offer_id, state=state),
        )
        await self._desk(change.conn, str(change.tid), agent_id, frame)

    def is_staff(self, role: int) -> bool:
        return role in STAFF_ROLES


def _new_interaction(
    tenant_id: str,
    channel: common_pb2.Channel.ValueType,
    customer: pb.Customer,
    media: common_pb2.MediaType.ValueType,
    collected: Any = None,
) -> tuple[pb.Interaction, pb.Participant]:
    """A new interaction, CREATED, with its customer as its first participant on one leg."""
    now = _stamp()
    joined = pb.Participant(
        id=f"c-{uuid.uuid4().hex[:12]}",
        role=R.PARTICIPANT_ROLE_CUSTOMER,
        subject_id=customer.id,
        display_name=customer.display_name,
        join_time=now,
    )
    leg = pb.MediaLeg(
        id=f"m-{uuid.uuid4().hex[:12]}", media=media, participant_id=joined.id, start_time=now
    )
    it = pb.Interaction(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        channel=channel,
        state=S.INTERACTION_STATE_CREATED,
        customer=customer,
        participants=[joined],
        media=[leg],
        create_time=now,
        update_time=now,
        collected_data=collected or {},
    )
    return it, joined


def _require_use(it: pb.Interaction, acting: pb.Participant | None = None) -> None:
    if not domain.may_use(auth.current_principal(), it, acting):
        raise PermissionDenied("the interaction, or the participant, is not the caller's")
