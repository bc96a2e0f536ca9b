"""Agents' SIP phones: they register here with digest authentication, and ring for the calls
the ACD offers their agent.

A registered phone's agent gets a desk stream from the media service (as the agent's desk in
the browser does). An offer of a call this replica holds rings the phone: answered, the offer
is accepted, the agent joins the interaction, and the caller and the agent hear each other
(their RTP is relayed between the two legs); not answered in the offer's time, or refused,
the offer is declined and the ACD offers the call to someone else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import grpc
from sipmessage import Request

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.logs import get_logger
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.voice import sdp, sip
from lianluo.services.voice.audio import Ports, RtpSession
from lianluo.services.voice.settings import VoiceSettings
from lianluo.services.voice.webphone import WebPhone, WebSession, gather_on
from lianluo.tenants.v1 import tenants_pb2 as tpb

log = get_logger(__name__)
REALM = "lianluo"
NONCE_SECONDS = 300
MAX_EXPIRES = 3600


async def sent(frames: asyncio.Queue[mpb.ClientFrame | None]) -> AsyncIterator[mpb.ClientFrame]:
    """A stream's frames to the media service, from a queue, until None."""
    while (frame := await frames.get()) is not None:
        yield frame


def desk_frames(tenant_id: str, agent_id: str) -> asyncio.Queue[mpb.ClientFrame | None]:
    """The frames of an agent's desk stream to the media service: the join, then none (the
    desk only listens), until None ends it."""
    frames: asyncio.Queue[mpb.ClientFrame | None] = asyncio.Queue()
    frames.put_nowait(
        mpb.ClientFrame(
            join=mpb.Join(tenant_id=tenant_id, role=mpb.PARTICIPANT_ROLE_AGENT, subject_id=agent_id)
        )
    )
    return frames


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest(
    username: str, password: str, method: str, uri: str, p: dict[str, str], realm: str = REALM
) -> str:
    """The response an RFC 2617 / 7616 MD5 digest expects (with qop=auth, or without)."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if p.get("qop") == "auth":
        return _md5(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
    return _md5(f"{ha1}:{p['nonce']}:{ha2}")


@dataclass
class Binding:
    tenant_id: str
    agent_id: str
    contact: str
    peer: sip.Peer
    expires: float
    desk: asyncio.Task[None] | None = None


@dataclass
class AgentLeg:
    """The agent's side of a bridged call: the phone's dialog and its RTP, or the phone in
    the browser (which needs no dialog: the desk accepted the call)."""

    tenant_id: str
    agent_id: str
    interaction_id: str
    session: RtpSession
    port: int  # 0 for the phone in the browser, whose ports are aiortc's
    # The SIP phone's dialog: the INVITE this side sent it, and its To, with its tag.
    invite: Request | None = None
    answer_to: str = ""
    peer: sip.Peer | None = None
    web: WebPhone | None = None
    participant_id: str = ""
    frames: asyncio.Queue[mpb.ClientFrame | None] = field(default_factory=asyncio.Queue)
    ended: bool = False
    task: asyncio.Task[None] | None = None
    # The next CSeq of this side's requests in the phone's dialog (the INVITE was 1).
    cseq: int = 2
    # The agent handed the call on (REFER): hanging up no longer ends the conversation.
    transferred: bool = False
    # The SDP version of this side's last answer in the dialog.
    sdp_version: int = 1
    # The colleague's side of a consult this phone was called for, while it lasts.
    consult: Consult | None = None
    # The call this leg is to take over once the ACD offers it (an attended transfer to it).
    awaiting: str = ""
    # The agent asked for a colleague and stays on the call with them (a consult from the
    # desk): once the colleague answers, the three are a conference.
    staying: bool = False

    @property
    def key(self) -> str:
        """The leg among the replica's: the phone's Call-ID, or the browser's call."""
        if self.invite is not None:
            return str(self.invite.call_id)
        return f"web/{self.tenant_id}/{self.agent_id}/{self.interaction_id}"


@dataclass
class Consult:
    """An agent's phone calling a colleague by name, to talk before handing a call on (an
    attended transfer): the calling phone's dialog, which this side answered, and the
    colleague's leg, bridged to it."""

    tenant_id: str
    agent_id: str  # the caller, the agent who consults
    dialog: sip.Dialog  # this side's requests to the calling phone
    local_tag: str
    session: RtpSession
    port: int
    colleague: AgentLeg
    sdp_version: int = 1
    ended: bool = False


class Phones:
    """The registrar, the desks of registered agents, and their legs of calls."""

    def __init__(
        self,
        settings: VoiceSettings,
        view: TenantConfigView,
        media: Any,
        acd: acd_rpc.AcdServiceStub,
        ports: Ports,
        connect: Callable[[apb.Offer, AgentLeg], Awaitable[bool]],
        caller_left: Callable[[str], None],
        leaves_conference: Callable[[AgentLeg], bool],
    ) -> None:
        self._settings = settings
        self._view = view
        self._media = media
        self._acd = acd
        self._ports = ports
        self._connect = connect
        self._caller_left = caller_left
        self._leaves_conference = leaves_conference
        self._admin = (("authorization", f"Bearer {settings.admin_key.get_secret_value()}"),)
        self._nonce_key = secrets.token_bytes(32)
        self._bindings: dict[tuple[str, str], Binding] = {}
        self.legs: dict[str, AgentLeg] = {}  # by the phone's Call-ID
        self.consults: dict[str, Consult] = {}  # by the calling phone's Call-ID
        # The agents' phones in the browser, by tenant and agent.
        self.web: dict[tuple[str, str], WebPhone] = {}
        gather_on(settings.voice_sip_host)
        self._tasks: set[asyncio.Task[Any]] = set()
        # The agents' legs that ended, newest last: what each received and sent.
        self.ended: collections.deque[tuple[str, str, int, int]] = collections.deque(maxlen=100)
        self.endpoint: sip.Endpoint | None = None

    # ------------------------------------------------------------------ registration

    def _nonce(self, now: float) -> str:
        stamp = str(int(now))
        mac = hmac.new(self._nonce_key, stamp.encode(), "sha256").hexdigest()[:16]
        return f"{stamp}.{mac}"

    def _fresh(self, nonce: str, now: float) -> bool:
        stamp, _, mac = nonce.partition(".")
        expected = hmac.new(self._nonce_key, stamp.encode(), "sha256").hexdigest()[:16]
        return (
            stamp.isdigit()
            and hmac.compare_digest(mac, expected)
            and now - int(stamp) < NONCE_SECONDS
        )

    def _agent(self, username: str) -> tuple[str, tpb.Agent] | None:
        """The agent a username "<agent name>@<tenant name>" names, if it has a phone."""
        agent_name, _, tenant_name = username.rpartition("@")
        for tenant_id in self._view.tenant_ids():
            tenant = self._view.tenant(tenant_id)
            if tenant is not None and tenant.name == tenant_name:
                agent = self._view.by_name(tenant_id, "agent", agent_name)
                if isinstance(agent, tpb.Agent) and agent.sip_password:
                    return tenant_id, agent
        return None

    def _challenge(self, request: Request, tx: sip.ServerTransaction, now: float) -> None:
        header = f'Digest realm="{REALM}", nonce="{self._nonce(now)}", algorithm=MD5, qop="auth"'
        tx.respond(sip.reply(request, 401, to_tag=sip.tag(), headers={"WWW-Authenticate": header}))

    def _authenticated(
        self, request: Request, tx: sip.ServerTransaction, now: float
    ) -> tuple[str, tpb.Agent] | None:
        """The agent whose phone sent the request, by its digest; None after answering 401
        (a challenge, for a request without fresh credentials) or 403 (wrong ones)."""
        credentials = request.headers.get("authorization") or ""
        found = _parameters(credentials)
        if not credentials.lower().startswith("digest") or not self._fresh(
            found.get("nonce", ""), now
        ):
            self._challenge(request, tx, now)
            return None
        owner = self._agent(found.get("username", ""))
        expected = (
            digest(
                found["username"],
                owner[1].sip_password,
                request.method,
                found.get("uri", ""),
                found,
            )
            if owner is not None
            else ""
        )
        if owner is None or not hmac.compare_digest(expected, found.get("response", "")):
            log.info(
                "a phone's credentials were refused",
                method=request.method,
                username=found.get("username", "")[:120],
            )
            tx.respond(sip.reply(request, 403, to_tag=sip.tag()))
            return None
        return owner

    async def register(self, request: Request, tx: sip.ServerTransaction) -> None:
        now = time.time()
        owner = self._authenticated(request, tx, now)
        if owner is None:
            return
        tenant_id, agent = owner
        contact = request.contact[0] if request.contact else None
        asked = _expires(request, contact)
        if asked is None:
            tx.respond(sip.reply(request, 400, to_tag=sip.tag()))
            return
        expires = min(asked, MAX_EXPIRES)
        key = (tenant_id, agent.id)
        known = self._bindings.pop(key, None)
        if known is not None and known.desk is not None:
            known.desk.cancel()
        if expires and contact is not None:
            binding = Binding(tenant_id, agent.id, str(contact.uri), tx.peer, now + expires)
            binding.desk = asyncio.create_task(self._desk(binding))
            self._bindings[key] = binding
        answer = sip.reply(request, 200, to_tag=sip.tag(), headers={"Expires": str(expires)})
        if contact is not None and expires:
            answer.headers.add("Contact", f"<{contact.uri}>;expires={expires}")
        tx.respond(answer)
        log.info("a phone registered", tenant_id=tenant_id, agent_id=agent.id, expires=expires)

    # ------------------------------------------------------------------ offers

    async def _desk(self, binding: Binding) -> None:
        """The agent's desk, for as long as the phone is registered: each call offered rings."""
        frames = desk_frames(binding.tenant_id, binding.agent_id)

        try:
            async for frame in self._media.Connect(sent(frames), metadata=self._admin):
                offer = frame.offer if frame.WhichOneof("frame") == "offer" else None
                # An agent with the phone in the browser open answers there, on the desk.
                web = self.web.get((binding.tenant_id, binding.agent_id))
                if offer and offer.requirements.media == common.MEDIA_TYPE_VOICE and web is None:
                    awaiting = self._awaiting(offer)
                    self.spawn(
                        self._take(awaiting, offer) if awaiting else self._ring(binding, offer)
                    )
        except grpc.aio.AioRpcError as error:
            log.info("a phone's desk closed", code=error.code().name)
        finally:
            frames.put_nowait(None)

    async def _ring(self, binding: Binding, offer: apb.Offer) -> None:
        """Ring the phone for an offered call; answered, the call is the agent's."""
        if time.time() > binding.expires:
            return
        left = offer.expire_time.ToDatetime(tzinfo=UTC).timestamp() - time.time()
        leg, reason = await self._call_phone(binding, offer.interaction_id, max(1.0, left))
        if leg is None:
            await self._answer(offer, False, reason)
            return
        if await self._answer(offer, True, "") and await self._connect(offer, leg):
            leg.task = self.spawn(self._join(leg))
            return
        await self.hang_up(leg)

    def _awaiting(self, offer: apb.Offer) -> AgentLeg | None:
        """The agent's leg already on the line for this call (the colleague of a consult the
        call was handed to), if any."""
        return next(
            (
                leg
                for leg in self.legs.values()
                if (leg.tenant_id, leg.agent_id) == (offer.tenant_id, offer.agent_id)
                and leg.awaiting == offer.interaction_id
                and not leg.ended
            ),
            None,
        )

    async def _take(self, leg: AgentLeg, offer: apb.Offer) -> None:
        """The colleague of a consult takes the call handed to them, on the line they are
        on: the offer is accepted without ringing again."""
        leg.awaiting, leg.interaction_id = "", offer.interaction_id
        if await self._answer(offer, True, "") and await self._connect(offer, leg):
            leg.task = self.spawn(self._join(leg))
            return
        await self.hang_up(leg)

    async def _call_phone(
        self, binding: Binding, interaction_id: str, wait: float
    ) -> tuple[AgentLeg | None, str]:
        """Ring a registered phone (INVITE) for up to `wait` seconds: its leg once it
        answers with usable audio; else None and why not."""
        assert self.endpoint is not None
        port = self._ports.take()
        if port is None:
            return None, "no RTP port free"
        host = self._settings.public_host()
        session = RtpSession(sdp.PCMU, 101, lambda _digit: None)
        await session.open(self._settings.voice_sip_host, port)
        call_id = f"{secrets.token_hex(8)}@{host}"
        invite = sip.new_request(
            "INVITE",
            binding.contact,
            call_id,
            1,
            f"{self.endpoint.contact(host, binding.peer)};tag={sip.tag()}",
            f"<{binding.contact}>",
        )
        invite.headers.add("Contact", self.endpoint.contact(host, binding.peer))
        invite.headers.add("Content-Type", "application/sdp")
        # Over TLS, SRTP is offered with a key, in RTP/AVP: a phone without SRTP answers
        # without one, and the call is plain RTP (RFC 4568 "best effort").
        key = sdp.Crypto.new() if binding.peer.transport == "TLS" else None
        invite.body = sdp.describe(int(time.time()), 1, host, port, sdp.OFFER, 101, key=key)
        answer = await self.endpoint.request(invite, binding.peer, wait=wait)
        if answer is not None and 200 <= answer.code < 300:
            self.endpoint.ack(invite, answer, binding.peer)
            try:
                media = sdp.parse(answer.body)
            except sdp.SdpError as error:
                log.info("a phone answered without an SDP answer", error=str(error))
                media = None
            leg = AgentLeg(
                binding.tenant_id,
                binding.agent_id,
                interaction_id,
                session,
                port,
                invite=invite,
                answer_to=str(answer.to_address),
                peer=binding.peer,
            )
            self.legs[leg.key] = leg
            codec = media.codec() if media is not None else None
            if media is None or codec is None:
                # Nothing to hear on that leg: the phone is hung up (another agent is tried).
                await self.hang_up(leg)
                return None, "the phone answered without usable audio"
            session.codec, session.remote = codec, (media.host, media.port)
            peer_key = media.srtp()
            if key is not None and peer_key is not None:
                session.secure(key, peer_key)
            return leg, ""
        session.close()
        self._ports.give_back(port)
        return None, "the phone did not answer"

    # ------------------------------------------------------------------ phones in the browser

    async def open_web(self, tenant_id: str, agent_id: str, offer: str) -> str:
        """The agent's phone in the browser, opened from the desk's WebRTC offer (one that was
        open is closed first); this side's answer. Raises BadOffer for an offer without audio."""
        old = self.web.pop((tenant_id, agent_id), None)
        if old is not None:
            await old.close()
        phone = WebPhone(tenant_id, agent_id, self._web_closed)
        try:
            answer = await phone.answer(offer)
        except BaseException:
            await phone.close()
            raise
        self.web[(tenant_id, agent_id)] = phone
        phone.desk = self.spawn(self._web_desk(phone))
        log.info("a phone in the browser opened", tenant_id=tenant_id, agent_id=agent_id)
        return answer

    async def close_web(self, tenant_id: str, agent_id: str) -> bool:
        phone = self.web.get((tenant_id, agent_id))
        if phone is None:
            return False
        await phone.close()
        return True

    def _web_closed(self, phone: WebPhone) -> None:
        """A phone in the browser closed (by the desk, or its connection failed): a call on
        it stays with the desk, where the agent ends it."""
        if self.web.get((phone.tenant_id, phone.agent_id)) is phone:
            del self.web[(phone.tenant_id, phone.agent_id)]
        for leg in list(self.legs.values()):
            if leg.web is phone:
                self.spawn(self.hang_up(leg))

    async def _web_desk(self, phone: WebPhone) -> None:
        """The agent's offers, as the desk sees them: a call the agent accepts on the desk is
        bridged to the phone in the browser."""
        frames = desk_frames(phone.tenant_id, phone.agent_id)
        offers: dict[str, apb.Offer] = {}
        try:
            async for frame in self._media.Connect(sent(frames), metadata=self._admin):
                kind = frame.WhichOneof("frame")
                if kind == "offer" and frame.offer.requirements.media == common.MEDIA_TYPE_VOICE:
                    offers[frame.offer.id] = frame.offer
                elif kind == "offer_closed":
                    offer = offers.pop(frame.offer_closed.offer_id, None)
                    if offer is not None and frame.offer_closed.state == apb.OFFER_STATE_ACCEPTED:
                        self.spawn(self._pick_up(phone, offer))
        except grpc.aio.AioRpcError as error:
            log.info("a browser phone's desk closed", code=error.code().name)
        finally:
            frames.put_nowait(None)

    async def _pick_up(self, phone: WebPhone, offer: apb.Offer) -> None:
        """The agent accepted a call on the desk: it is heard on the phone in the browser."""
        if phone.closed:
            return
        if phone.session is not None:  # a call before it still on the phone: it goes
            for leg in list(self.legs.values()):
                if leg.session is phone.session:
                    await self.hang_up(leg)
        session = WebSession(phone)
        session.start()
        phone.session = session
        leg = AgentLeg(phone.tenant_id, phone.agent_id, offer.interaction_id, session, 0, web=phone)
        self.legs[leg.key] = leg
        if not await self._connect(offer, leg):
            await self.hang_up(leg)  # not a call of this replica's

    # ------------------------------------------------------------------ consults

    async def consult(self, request: Request, tx: sip.ServerTransaction) -> None:
        """An agent's phone calls a colleague by name (`sip:wang.fang@...`), with its digest:
        the colleague's registered phone rings, and once it answers the two are bridged.
        The calling phone may then hand its call to the colleague (REFER with Replaces)."""
        assert self.endpoint is not None
        owner = self._authenticated(request, tx, time.time())
        if owner is None:
            return
        tenant_id, agent = owner
        name = urllib.parse.unquote(request.uri.user or "")
        colleague = self._view.by_name(tenant_id, "agent", name)
        binding = (
            self._bindings.get((tenant_id, colleague.id))
            if isinstance(colleague, tpb.Agent) and colleague.id != agent.id
            else None
        )
        if binding is None:
            warning = '399 lianluo "no colleague of that name has a phone registered"'
            tx.respond(sip.reply(request, 404, to_tag=sip.tag(), headers={"Warning": warning}))
            return
        taken = offered(request, tx, self._ports)
        if taken is None:
            return
        offer, codec, port = taken
        local_tag = sip.tag()
        tx.respond(sip.reply(request, 180, to_tag=local_tag))
        session = RtpSession(codec, offer.events(codec.clock), lambda _digit: None)
        session.remote = (offer.host, offer.port)
        key = keyed(offer, session)
        await session.open(self._settings.voice_sip_host, port)
        leg, _ = await self._call_phone(binding, "", 30.0)
        if leg is None or tx.final:  # not answered, or the calling phone gave up (CANCEL)
            session.close()
            self._ports.give_back(port)
            if leg is not None:
                await self.hang_up(leg)
            if not tx.final:
                tx.respond(sip.reply(request, 480, to_tag=local_tag))
            return
        host = self._settings.public_host()
        target = request.contact[0].uri if request.contact else request.from_address.uri
        dialog = sip.Dialog(
            request.call_id,
            str(target),
            f"{request.to_address};tag={local_tag}",
            str(request.from_address),
            tx.peer,
        )
        consult = Consult(tenant_id, agent.id, dialog, local_tag, session, port, leg)
        self.consults[request.call_id] = leg.consult = consult
        session.partner, leg.session.partner = leg.session, session
        answer = sdp.answer(offer, codec, host, port, key, int(time.time()))
        tx.respond(
            sip.reply(
                request,
                200,
                to_tag=local_tag,
                body=answer,
                content_type="application/sdp",
                headers={"Contact": self.endpoint.contact(host, tx.peer), "Allow": sip.ALLOW},
            )
        )
        log.info("a consult call", tenant_id=tenant_id, agent_id=agent.id, to=binding.agent_id)
        self.spawn(self._acked_or_ended(consult, tx))

    async def _acked_or_ended(self, consult: Consult, tx: sip.ServerTransaction) -> None:
        """A calling phone that never ACKs the answer (it gave up meanwhile, or went away)
        leaves no consult behind: after timer H, the colleague's leg is hung up."""
        try:
            await asyncio.wait_for(tx.acked.wait(), sip.WAIT)
        except TimeoutError:
            log.info("a consult was never acknowledged", tenant_id=consult.tenant_id)
            await self.end_consult(consult, by_caller=True)

    async def end_consult(
        self, consult: Consult, *, by_caller: bool = False, keep_colleague: bool = False
    ) -> None:
        """A consult is over: the calling phone hung up (`by_caller`), the colleague did, or
        the call was handed to the colleague, whose leg then stays (`keep_colleague`). The
        calling phone is sent a BYE unless it hung up."""
        if consult.ended:
            return
        consult.ended = True
        self.consults.pop(consult.dialog.call_id, None)
        consult.session.close()
        self._ports.give_back(consult.port)
        colleague = consult.colleague
        colleague.consult = None
        if colleague.session.partner is consult.session:
            colleague.session.partner = None
        if not keep_colleague:
            await self.hang_up(colleague)
        if not by_caller:
            assert self.endpoint is not None
            await self.endpoint.request(consult.dialog.request("BYE"), consult.dialog.peer)

    async def _answer(self, offer: apb.Offer, accept: bool, reason: str) -> bool:
        try:
            await self._acd.RespondToOffer(
                apb.RespondToOfferRequest(
                    tenant_id=offer.tenant_id,
                    offer_id=offer.id,
                    agent_id=offer.agent_id,
                    accept=accept,
                    decline_reason=reason,
                ),
                metadata=self._admin,
            )
        except grpc.aio.AioRpcError as error:
            log.info("an offer could not be answered", code=error.code().name)
            return False
        return True

    async def _join(self, leg: AgentLeg) -> None:
        """The agent in the interaction, as on their desk: a participant once assigned."""
        leg.frames.put_nowait(
            mpb.ClientFrame(
                join=mpb.Join(
                    tenant_id=leg.tenant_id,
                    interaction_id=leg.interaction_id,
                    role=mpb.PARTICIPANT_ROLE_AGENT,
                    subject_id=leg.agent_id,
                )
            )
        )

        with contextlib.suppress(grpc.aio.AioRpcError):
            async for frame in self._media.Connect(sent(leg.frames), metadata=self._admin):
                kind = frame.WhichOneof("frame")
                if kind == "joined":
                    leg.participant_id = frame.joined.participant_id
                elif kind == "transfer":
                    leg.staying = frame.transfer.stay

    async def phone_hung_up(self, leg: AgentLeg) -> None:
        """The agent hung up: the conversation is over, and the agent's wrap-up begins; unless
        they had handed the call on, which goes on without them. A colleague who hangs up a
        consult ends it; one awaiting a call handed to them leaves it to the ACD."""
        leg.ended = True
        if leg.consult is not None:
            self._forget(leg)
            await self.end_consult(leg.consult)
            return
        if leg.transferred or not leg.interaction_id:
            self._forget(leg)
            return
        if leg.participant_id and self._leaves_conference(leg):
            # Others stay on the call: this agent leaves the conversation, which goes on.
            leg.frames.put_nowait(mpb.ClientFrame(leave=mpb.Leave(reason="hung_up")))
            self._forget(leg)
            return
        if leg.participant_id:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._media.End(
                    mpb.EndRequest(
                        tenant_id=leg.tenant_id,
                        interaction_id=leg.interaction_id,
                        participant_id=leg.participant_id,
                    ),
                    metadata=self._admin,
                )
        self._caller_left(leg.interaction_id)
        self._forget(leg)

    async def hang_up(self, leg: AgentLeg) -> None:
        """This side ends the agent's leg (the caller hung up, or the call could not go on)."""
        if leg.ended:
            return
        leg.ended = True
        if leg.web is not None:  # the browser keeps its phone for the next call
            self._forget(leg)
            return
        bye = self._in_dialog(leg, "BYE")
        self._forget(leg)
        assert self.endpoint is not None
        assert leg.peer is not None
        await self.endpoint.request(bye, leg.peer)

    async def notify(self, leg: AgentLeg, status: str) -> None:
        """How a transfer the phone asked for (REFER) went, as RFC 3515 says: a NOTIFY with the
        status line, which ends the implicit subscription."""
        if leg.ended or leg.peer is None:
            return
        notify = self._in_dialog(leg, "NOTIFY")
        notify.headers.add("Event", "refer")
        notify.headers.add("Subscription-State", "terminated;reason=noresource")
        notify.headers.add("Content-Type", "message/sipfrag;version=2.0")
        notify.body = status.encode()
        assert self.endpoint is not None
        await self.endpoint.request(notify, leg.peer)

    @staticmethod
    def _in_dialog(leg: AgentLeg, method: str) -> Request:
        """A request of this side in the phone's dialog, with the dialog's next CSeq."""
        invite = leg.invite
        assert invite is not None, "a phone in the browser has no dialog"
        request = sip.new_request(
            method, str(invite.uri), invite.call_id, leg.cseq, str(invite.from_address),
            leg.answer_to,
        )  # fmt: skip
        leg.cseq += 1
        return request

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget(self, leg: AgentLeg) -> None:
        if self.legs.pop(leg.key, None) is None:
            return
        leg.frames.put_nowait(None)
        leg.session.close()
        if leg.port:
            self._ports.give_back(leg.port)
        received, sent = leg.session.figures.received, leg.session.sent
        self.ended.append((leg.interaction_id, leg.agent_id, received, sent))
        report = leg.session.peer_report
        log.info(
            "agent's leg ended",
            interaction_id=leg.interaction_id,
            received=received,
            sent=sent,
            # What the phone said, by RTCP, it received of what was sent.
            peer_lost=report.lost if report is not None else None,
        )

    def stop(self) -> None:
        for binding in self._bindings.values():
            if binding.desk is not None:
                binding.desk.cancel()
        for leg in list(self.legs.values()):
            self._forget(leg)
        for consult in self.consults.values():
            consult.session.close()
            self._ports.give_back(consult.port)
        for task in self._tasks:
            task.cancel()
        for phone in list(self.web.values()):
            # Not among the tasks cancelled above: the peer connections close on the way out.
            asyncio.get_running_loop().create_task(phone.close())


def offered(
    request: Request, tx: sip.ServerTransaction, ports: Ports
) -> tuple[sdp.Media, sdp.Format, int] | None:
    """An INVITE's offer, the codec to answer it with, and an RTP port for it; None after
    answering why not (415, 400 or 488 for the offer; 503 with Retry-After when no port is
    free)."""
    try:
        offer, codec = sdp.offer(str(request.content_type or ""), request.body)
    except sdp.Refusal as refusal:
        tx.respond(sip.reply(request, refusal.code, headers=refusal.headers))
        return None
    port = ports.take()
    if port is None:
        tx.respond(sip.reply(request, 503, headers={"Retry-After": sip.RETRY_AFTER}))
        return None
    return offer, codec, port


def keyed(offer: sdp.Media, session: RtpSession) -> sdp.Crypto | None:
    """SRTP for a call whose offer carries a key (SDES): the session secured, and this side's
    key for the answer, under the offer's tag; None for plain RTP."""
    peer = offer.srtp()
    if peer is None:
        return None
    key = sdp.Crypto.new(peer.tag)
    session.secure(key, peer)
    session.profile = offer.profile
    return key


def _expires(request: Request, contact: Any) -> int | None:
    """How long a REGISTER asks to be kept (its Contact's expires, else its Expires, else an
    hour); None when it says so in a way that is not a number of seconds."""
    if contact is not None and "expires" in contact.parameters:
        value = str(contact.parameters["expires"] or "")
    else:
        value = str(request.headers.get("expires") or "3600").strip()
    return int(value) if value.isdigit() and len(value) <= 10 else None


def _parameters(header: str) -> dict[str, str]:
    """The name=value pairs of a Digest header, quoted or not."""
    found: dict[str, str] = {}
    rest = header.partition(" ")[2]
    for part in _split(rest):
        name, _, value = part.partition("=")
        found[name.strip().lower()] = value.strip().strip('"')
    return found


def _split(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts
