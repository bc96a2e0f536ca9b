"""Locust users of a contact center: customers, agents (and standby agents) and supervisors.

Customers and agents meet inside one Locust process, so the end-to-end figures (contact to
offer, message relay) are measured with one clock: the sender notes the time, the receiving
peer reports the elapsed time when the frame reaches its stream.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from typing import Any

import gevent
import gevent.event
import gevent.queue
import grpc
from locust import User, between, task

from harness import calls
from harness.calls import Caller, ConnectStream, Expected, StreamEnded, report
from harness.tenant import CHANNELS, FLOW, LANGUAGES, QUEUE
from lianluo.acd.v1 import acd_pb2
from lianluo.common.v1 import common_pb2 as common
from lianluo.media.v1 import media_pb2 as mpb

R = mpb.ParticipantRole
S = mpb.InteractionState
CONTACT_TO_OFFER = "contact to offer"
RELAY_TO_AGENT = "relay customer to agent"
RELAY_TO_CUSTOMER = "relay agent to customer"
# Set by the surge shape when arrivals start to rise: standby agents sign in.
SURGE = gevent.event.Event()
# When each waiting contact asked for a person, and when each chat message was sent.
_routed_at: dict[str, float] = {}
_sent_at: dict[str, float] = {}


class Workload:
    """What every user shares: the stubs, the load tenant and the run's options."""

    caller: Caller
    tenant_id: str
    media: Any
    acd: Any
    options: Any
    agents: list[str]
    standby: list[str]


def _relayed(environment: Any, frame: mpb.ServerFrame, name: str) -> None:
    sent = _sent_at.pop(frame.message.client_message_id, None)
    if sent is not None:
        report(environment, "e2e", name, (time.perf_counter() - sent) * 1000)


def _text(text: str) -> mpb.MessageContent:
    return mpb.MessageContent(text=text)


def _extra_content() -> mpb.MessageContent:
    """A photo of a receipt, or where the customer is: the other media of a chat."""
    if random.random() < 0.5:
        return mpb.MessageContent(
            image=mpb.Attachment(
                uri=f"https://files.load.example/{uuid.uuid4().hex}.png",
                name="receipt.png",
                content_type="image/png",
                size_bytes=random.randint(20_000, 900_000),
            )
        )
    return mpb.MessageContent(
        location=mpb.Location(
            latitude=31.23 + random.random() / 10, longitude=121.47, label="Nanjing Road"
        )
    )


class Customer(User):
    """Starts a contact on a channel, answers the IVR, chats, ends; sometimes abandons."""

    weight = 1
    wait_time = between(1, 3)

    @task
    def contact(self) -> None:
        w, o = Workload, Workload.options
        channel = random.choice(CHANNELS)
        # Mail arrives without self-service: it goes straight to the queue.
        entry = {"queue": QUEUE} if channel == common.CHANNEL_EMAIL else {"flow": FLOW}
        started_at = time.perf_counter()
        try:
            started = w.caller(
                "media.StartInteraction",
                w.media.StartInteraction,
                mpb.StartInteractionRequest(
                    tenant_id=w.tenant_id,
                    request_id=uuid.uuid4().hex,
                    channel=channel,
                    media=common.MEDIA_TYPE_CHAT,
                    customer=mpb.Customer(
                        id=f"cust-{uuid.uuid4().hex[:10]}", language=random.choice(LANGUAGES)
                    ),
                    **entry,
                ),
            )
        except grpc.RpcError:
            return
        iid = started.interaction.id
        if "queue" in entry:
            _routed_at[iid] = started_at
        stream = None
        try:
            stream = ConnectStream.open(
                w.caller,
                w.media,
                mpb.Join(
                    tenant_id=w.tenant_id,
                    interaction_id=iid,
                    role=R.PARTICIPANT_ROLE_CUSTOMER,
                    subject_id=started.interaction.customer.id,
                ),
                "media.Connect customer",
                on_frame=lambda f: (
                    _relayed(self.environment, f, RELAY_TO_CUSTOMER)
                    if f.message.sender_role == R.PARTICIPANT_ROLE_AGENT
                    else None
                ),
            )
            self._converse(stream, iid, "flow" in entry, o)
        except (grpc.RpcError, StreamEnded, gevent.Timeout) as error:
            report(self.environment, "e2e", "conversation", _ms(started_at), error=error)
            self._end(iid, "load_error")
        finally:
            _routed_at.pop(iid, None)
            if stream is not None:
                stream.close()

    def _converse(self, stream: ConnectStream, iid: str, ivr: bool, o: Any) -> None:
        if ivr:
            stream.wait_for(lambda f: f.prompt.expects_answer, 20)
            self.wait()
            if random.random() < o.abandon_rate / 2:
                self._end(iid, "abandoned_in_ivr")
                return
            _routed_at[iid] = time.perf_counter()
            stream.send(_text(random.choice(["1", "2", "sales", "support"])), "ivr-answer")
        stream.wait_for(lambda f: f.state_changed.to_state == S.INTERACTION_STATE_QUEUED, 20)
        if random.random() < o.abandon_rate / 2:
            gevent.sleep(random.uniform(0, 1))
            self._end(iid, "abandoned_in_queue")
            return
        start = time.perf_counter()
        answered = stream.wait_for(
            lambda f: (
                f.state_changed.to_state == S.INTERACTION_STATE_CONNECTED
                or f.WhichOneof("frame") == "ended"
            ),
            90,
        )
        if answered.WhichOneof("frame") == "ended":
            # Overflow after the queue's max wait: the platform kept the message, as designed.
            report(self.environment, "e2e", "overflowed", _ms(start))
            return
        report(self.environment, "e2e", "queue to connected", _ms(start))
        for turn in range(random.randint(1, 3)):
            cmid = f"lt-{uuid.uuid4().hex}"
            content = _extra_content() if random.random() < o.media_rate else _text("Hello?")
            _sent_at[cmid] = time.perf_counter()
            stream.send(content, cmid)
            stream.wait_for(lambda f, n=turn: f.message.client_message_id == f"re-{n}-{iid}", 20)
            gevent.sleep(random.uniform(0.2, o.think_seconds))
        stream.send(_text("Thanks, bye."), f"lt-bye-{uuid.uuid4().hex[:8]}")
        # The server closes the stream right after the end.
        with contextlib.suppress(StreamEnded):
            stream.wait_for(lambda f: f.WhichOneof("frame") == "ended", 20)

    def _end(self, iid: str, code: str) -> None:
        with contextlib.suppress(grpc.RpcError):
            Workload.caller(
                "media.End",
                Workload.media.End,
                mpb.EndRequest(
                    tenant_id=Workload.tenant_id,
                    interaction_id=iid,
                    resolution=mpb.Resolution(code=code),
                ),
            )


class Agent(User):
    """Goes available, takes offers from its desk stream, replies, ends and wraps up."""

    fixed_count = 0
    wait_time = between(0, 0)
    pool = "agents"
    _taken = 0

    def on_start(self) -> None:
        ids = getattr(Workload, self.pool)
        cls = type(self)
        self.agent_id = ids[cls._taken % len(ids)]
        cls._taken += 1
        self.offers: gevent.queue.Queue[acd_pb2.Offer] = gevent.queue.Queue()
        self.chats: set[gevent.Greenlet] = set()
        self.sign_in()

    def sign_in(self) -> None:
        self.presence(acd_pb2.PRESENCE_AVAILABLE)
        self.desk = ConnectStream.open(
            Workload.caller,
            Workload.media,
            mpb.Join(
                tenant_id=Workload.tenant_id,
                role=R.PARTICIPANT_ROLE_AGENT,
                subject_id=self.agent_id,
            ),
            "media.Connect desk",
            on_frame=self._on_desk_frame,
        )

    def _on_desk_frame(self, frame: mpb.ServerFrame) -> None:
        if frame.WhichOneof("frame") != "offer":
            return
        routed = _routed_at.pop(frame.offer.interaction_id, None)
        if routed is not None:
            report(self.environment, "e2e", CONTACT_TO_OFFER, _ms(routed))
        self.offers.put(frame.offer)

    def presence(self, presence: int, reason: str = "") -> None:
        Workload.caller(
            "acd.SetPresence",
            Workload.acd.SetPresence,
            acd_pb2.SetPresenceRequest(
                tenant_id=Workload.tenant_id,
                agent_id=self.agent_id,
                presence=presence,
                reason=reason,
            ),
        )

    @task
    def work(self) -> None:
        try:
            offer = self.offers.get(timeout=1)
        except gevent.queue.Empty:
            return
        chat = gevent.spawn(self._handle, offer)
        self.chats.add(chat)
        chat.link(self.chats.discard)

    def _handle(self, offer: acd_pb2.Offer) -> None:
        w = Workload
        gevent.sleep(random.uniform(0.05, 0.3))  # reading the offer card
        try:
            w.caller(
                "acd.RespondToOffer",
                w.acd.RespondToOffer,
                acd_pb2.RespondToOfferRequest(
                    tenant_id=w.tenant_id, offer_id=offer.id, agent_id=self.agent_id, accept=True
                ),
                # The customer left meanwhile: the offer was withdrawn, as it should be.
                expected=(grpc.StatusCode.FAILED_PRECONDITION,),
            )
        except (grpc.RpcError, Expected):
            return
        iid = offer.interaction_id
        replies = 0
        try:
            stream = ConnectStream.open(
                w.caller,
                w.media,
                mpb.Join(
                    tenant_id=w.tenant_id,
                    interaction_id=iid,
                    role=R.PARTICIPANT_ROLE_AGENT,
                    subject_id=self.agent_id,
                ),
                "media.Connect agent (accept to joined)",
                on_frame=lambda f: (
                    _relayed(self.environment, f, RELAY_TO_AGENT)
                    if f.message.sender_role == R.PARTICIPANT_ROLE_CUSTOMER
                    else None
                ),
                # The assignment reaches media through routing.decision, just after the accept.
                retry=(grpc.StatusCode.PERMISSION_DENIED,),
                # The customer abandoned after the accept: the interaction has ended.
                expected=(grpc.StatusCode.FAILED_PRECONDITION,),
            )
        except (grpc.RpcError, StreamEnded, gevent.Timeout, Expected):
            return
        try:
            while (turn := _nth_turn(stream, replies, 40)) is not None:
                if turn.message.client_message_id.startswith("lt-bye-"):
                    break
                gevent.sleep(random.uniform(0.1, Workload.options.think_seconds))
                cmid = f"re-{replies}-{iid}"
                _sent_at[cmid] = time.perf_counter()
                stream.send(_text("Let me check that for you."), cmid)
                replies += 1
            else:
                return  # the customer ended it
            w.caller(
                "media.End",
                w.media.End,
                mpb.EndRequest(
                    tenant_id=w.tenant_id,
                    interaction_id=iid,
                    resolution=mpb.Resolution(code="resolved"),
                ),
            )
        except (grpc.RpcError, StreamEnded, gevent.Timeout):
            return
        finally:
            stream.close()
        self._wrap_up()

    def _wrap_up(self) -> None:
        """After-contact work; only when no other chat is open, as presence is per agent."""
        if len(self.chats) > 1:
            return
        try:
            self.presence(acd_pb2.PRESENCE_WRAP_UP)
            gevent.sleep(Workload.options.wrap_up_seconds)
            self.presence(acd_pb2.PRESENCE_AVAILABLE)
        except grpc.RpcError:
            pass

    def on_stop(self) -> None:
        gevent.killall(list(self.chats), timeout=2)
        self.desk.close()


def _nth_turn(stream: ConnectStream, n: int, seconds: float) -> mpb.ServerFrame | None:
    """The customer's n-th chat message (from 0), replayed or live; None once it has ended."""

    def turns() -> list[mpb.ServerFrame]:
        return [
            f
            for f in stream.frames
            if f.message.client_message_id.startswith("lt-")
            and f.message.sender_role == R.PARTICIPANT_ROLE_CUSTOMER
        ]

    stream.wait_for(lambda f: f.WhichOneof("frame") == "ended" or len(turns()) > n, seconds)
    found = turns()
    return found[n] if len(found) > n else None


class StandbyAgent(Agent):
    """Signed in but away until a surge begins; then it takes offers like any agent."""

    fixed_count = 0
    pool = "standby"
    _taken = 0

    def sign_in(self) -> None:
        self.presence(acd_pb2.PRESENCE_AWAY, "standby")
        SURGE.wait()
        report(self.environment, "e2e", "standby agent brought in", 0)
        super().sign_in()


class Supervisor(User):
    """Watches the wall: queue figures every few seconds."""

    fixed_count = 0
    wait_time = between(2, 5)

    @task
    def queue_stats(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            Workload.caller(
                "acd.QueueStats",
                Workload.acd.QueueStats,
                acd_pb2.QueueStatsRequest(tenant_id=Workload.tenant_id, window_seconds=300),
            )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


__all__ = ["Agent", "Customer", "StandbyAgent", "Supervisor", "Workload", "calls"]
