"""Calls: a SIP dialog on one side, an interaction of the platform on the other.

A call to one of a tenant's numbers becomes an interaction on the phone channel, with the
caller's number as an identity of the customer (the gateway's customer store resolves it).
The voice service then is the caller's client of the media service, as the gateway is a
web visitor's: it joins the interaction as the customer with the customer's own session token,
says each prompt aloud, passes each digit pressed (RFC 4733 or SIP INFO) as the caller's
answer, and hangs up when the interaction ends. Whatever goes wrong with one call is answered
on that call; a flood of INVITEs is answered 503 with Retry-After before any work is done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from sipmessage import Request

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.runtime.grpc_server import platform_channel
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import Objects, tenant_key
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.voice import domain, rtp, sdp, sip
from lianluo.services.voice.audio import Conference, Ports, RtpSession, Speech, TenantAudio
from lianluo.services.voice.phones import AgentLeg, Phones, keyed, offered, sent
from lianluo.services.voice.settings import VoiceSettings
from lianluo.tenants.v1 import audio_pb2 as audio_pb
from lianluo.tenants.v1 import audio_pb2_grpc as audio_rpc
from lianluo.tenants.v1 import tenants_pb2 as tpb
from lianluo.tenants.v1 import tenants_pb2_grpc as tenants_rpc

log = get_logger(__name__)
R = mpb.ParticipantRole
S = mpb.InteractionState
ENDED = {S.INTERACTION_STATE_CLOSED, S.INTERACTION_STATE_ABANDONED, S.INTERACTION_STATE_OVERFLOWED}


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Platform:
    """The cell's services as a call uses them: the caller's customer and session token are
    had with the cell's admin key; everything else runs as the customer."""

    def __init__(self, settings: VoiceSettings) -> None:
        self._channels = [
            platform_channel(a, settings)
            for a in (
                settings.voice_tenants_address,
                settings.voice_media_address,
                settings.voice_gateway_address,
                settings.voice_acd_address,
            )
        ]
        tenants, media, gateway, _ = self._channels
        # The cell's admin key: for what a phone does on its agent's behalf (digest-authenticated).
        self.admin = _bearer(settings.admin_key.get_secret_value())
        self._auth = tenants_rpc.AuthServiceStub(tenants)
        self._customers = gateway_rpc.CustomerServiceStub(gateway)
        self.media = media_rpc.MediaServiceStub(media)
        self.acd = acd_rpc.AcdServiceStub(self._channels[3])
        self._audio = audio_rpc.AudioServiceStub(tenants)

    async def audio(self, tenant_id: str, name: str, language: str) -> bytes | None:
        """A tenant's recording as its WAV; None when there is none of that name and language
        (or the tenants service cannot say: the text is said instead)."""
        try:
            found = await self._audio.GetAudio(
                audio_pb.GetAudioRequest(tenant_id=tenant_id, name=name, language=language),
                metadata=self.admin,
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("a tenant's recording could not be had", code=error.code().name)
            return None
        return bytes(found.wav)

    async def caller(self, tenant_id: str, number: str) -> tuple[str, Any]:
        """The customer a caller's number resolves to, and their session's credentials."""
        customer = await self._customers.ResolveCustomer(
            gpb.ResolveCustomerRequest(
                tenant_id=tenant_id, kind=gpb.IDENTITY_KIND_PHONE, value=number
            ),
            metadata=self.admin,
        )
        session = await self._auth.CreateCustomerSession(
            tpb.CreateCustomerSessionRequest(
                tenant_id=tenant_id, customer_id=customer.id, channel=common.CHANNEL_PHONE
            ),
            metadata=self.admin,
        )
        return customer.id, _bearer(session.token)

    async def session(self, tenant_id: str, customer_id: str) -> Any:
        """The credentials of a customer's session on the phone channel."""
        session = await self._auth.CreateCustomerSession(
            tpb.CreateCustomerSessionRequest(
                tenant_id=tenant_id, customer_id=customer_id, channel=common.CHANNEL_PHONE
            ),
            metadata=self.admin,
        )
        return _bearer(session.token)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class Limiter:
    """New calls a second, as a token bucket: a burst of INVITEs is refused, not queued."""

    def __init__(self, per_second: float) -> None:
        self._rate = per_second
        self._tokens = per_second
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass(frozen=True)
class Ended:
    tenant_id: str
    interaction_id: str
    received: int
    lost: int
    sent: int
    digits: str
    jitter_ms: float = 0.0
    # From the INVITE to the 200 OK (0 for a call this side made).
    setup_ms: float = 0.0


@dataclass
class Call:
    call_id: str
    tenant_id: str
    # The tenant's line the caller dialled; None for a call this side made (a callback).
    line: domain.Line | None
    caller: str
    invite: sip.ServerTransaction | None
    local_tag: str
    session: RtpSession
    port: int
    language: str
    interaction_id: str = ""
    participant_id: str = ""
    leg_id: str = ""
    md: Any = None
    frames: asyncio.Queue[mpb.ClientFrame | None] = field(default_factory=asyncio.Queue)
    state: int = 0
    cseq: int = 1
    hung_up: bool = False
    digits: str = ""
    # The prompt the caller is answering, and the keys of a keyed-in answer so far.
    prompt: common.Prompt | None = None
    entry: str = ""
    entry_timer: asyncio.TimerHandle | None = None
    agent: AgentLeg | None = None
    # Colleagues who stayed on the call (a consult from the desk): with them, the caller and
    # the agent, a conference.
    others: list[AgentLeg] = field(default_factory=list)
    conference: Conference | None = None
    # Notices while the caller waits for someone: queued with no agent, or held by the agent.
    hold: asyncio.Task[None] | None = None
    invited: float = field(default_factory=time.monotonic)
    setup_ms: float = 0.0
    dialog: sip.Dialog | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class Calls:
    """Every call of this replica, and what each SIP request does to one."""

    def __init__(
        self,
        settings: VoiceSettings,
        view: TenantConfigView,
        platform: Platform,
        speech: Speech,
    ) -> None:
        self._settings = settings
        self._view = view
        self._platform = platform
        self._speech = speech
        self._audio = TenantAudio(platform.audio)
        self._objects = Objects(settings)
        self._ports = Ports(settings.rtp_range())
        self._limiter = Limiter(settings.voice_invites_per_second)
        self._calls: dict[str, Call] = {}
        self._lines: dict[str, domain.Line] | None = None
        self._endpoint: sip.Endpoint | None = None
        self.phones = Phones(
            settings,
            view,
            platform.media,
            platform.acd,
            self._ports,
            self.connect,
            self._agent_left,
            self._leaves_conference,
        )
        # The last calls that ended, newest last: what each received, sent and was told; and
        # how many have ended in all.
        self.ended: collections.deque[Ended] = collections.deque(maxlen=1000)
        self.ended_count = 0
        view.subscribe(lambda _tenant, _change: setattr(self, "_lines", None))

    @property
    def endpoint(self) -> sip.Endpoint | None:
        return self._endpoint

    @endpoint.setter
    def endpoint(self, endpoint: sip.Endpoint) -> None:
        self._endpoint = self.phones.endpoint = endpoint

    @property
    def open_calls(self) -> int:
        return len(self._calls) + len(self.phones.legs)

    def _line(self, number: str) -> domain.Line | None:
        if self._lines is None:
            self._lines = domain.numbers(
                (t, c)
                for t in self._view.tenant_ids()
                for c in self._view.all(t, "channel")
                if isinstance(c, tpb.Channel)
            )
        return self._lines.get(number)

    # ------------------------------------------------------------------ requests

    async def handle(self, request: Request, tx: sip.ServerTransaction) -> None:
        method = request.method
        if request.max_forwards is not None and request.max_forwards <= 0:
            tx.respond(sip.reply(request, 483))
        elif method == "OPTIONS":
            tx.respond(
                sip.reply(request, 200, headers={"Allow": sip.ALLOW, "Accept": "application/sdp"})
            )
        elif method == "INVITE" and "tag" not in request.to_address.parameters:
            await self._invite(request, tx)
        elif method == "REGISTER":
            await self.phones.register(request, tx)
        elif method == "CANCEL":
            await self._cancel(request, tx)
        elif (leg := self.phones.legs.get(request.call_id)) is not None:
            # The agent's phone, in the dialog of its leg.
            if method == "INVITE":
                leg.sdp_version = self._renegotiate(
                    leg.session, leg.port, leg.sdp_version, request, tx, ""
                )
                if (call := self._call_of(leg.interaction_id)) is not None:
                    self._update_hold(call)
            elif method == "REFER":
                await self._refer(leg, request, tx)
            elif method == "BYE":
                tx.respond(sip.reply(request, 200))
                await self.phones.phone_hung_up(leg)
            elif method == "INFO":
                tx.respond(sip.reply(request, 200))
            else:
                tx.respond(sip.reply(request, 405, headers={"Allow": sip.ALLOW}))
        elif (consult := self.phones.consults.get(request.call_id)) is not None:
            # The calling phone, in the dialog of its consult with a colleague.
            if method == "INVITE":
                consult.sdp_version = self._renegotiate(
                    consult.session, consult.port, consult.sdp_version, request, tx, ""
                )
            elif method == "BYE":
                tx.respond(sip.reply(request, 200))
                await self.phones.end_consult(consult, by_caller=True)
            elif method == "INFO":
                tx.respond(sip.reply(request, 200))
            else:
                tx.respond(sip.reply(request, 405, headers={"Allow": sip.ALLOW}))
        elif (call := self._calls.get(request.call_id)) is None:
            tx.respond(sip.reply(request, 481))
        elif method == "BYE":
            tx.respond(sip.reply(request, 200))
            await self._caller_left(call)
        elif method == "INVITE":
            call.cseq = self._renegotiate(
                call.session, call.port, call.cseq, request, tx, call.local_tag
            )
        elif method == "INFO":
            digit = domain.info_digit(str(request.content_type or ""), request.body)
            tx.respond(sip.reply(request, 200))
            if digit:
                self._pressed(call, digit)
        else:
            tx.respond(sip.reply(request, 405, headers={"Allow": sip.ALLOW}))

    async def _invite(self, request: Request, tx: sip.ServerTransaction) -> None:
        if request.headers.get("require"):
            tx.respond(sip.reply(request, 420, headers={"Unsupported": request.headers["require"]}))
            return
        dialled = domain.dialled(request.uri.user or "")
        line = self._line(dialled)
        if line is None and dialled and not domain.NUMBER.fullmatch(dialled):
            # Not a number: an agent's phone calling a colleague by name (within the same
            # rate of new calls, so that no phone can flood the replica either).
            if not self._limiter.take():
                tx.respond(sip.reply(request, 503, headers={"Retry-After": sip.RETRY_AFTER}))
                return
            await self.phones.consult(request, tx)
            return
        if line is None:
            tx.respond(sip.reply(request, 404))
            return
        if len(self._calls) >= self._settings.voice_max_calls or not self._limiter.take():
            tx.respond(sip.reply(request, 503, headers={"Retry-After": sip.RETRY_AFTER}))
            return
        taken = offered(request, tx, self._ports)
        if taken is None:
            return
        offer, codec, port = taken
        tx.respond(sip.reply(request, 100))
        call_id = request.call_id
        language = line.channel.voice.language or "en"
        session = RtpSession(codec, offer.events(codec.clock), lambda d: self._pressed(call, d))
        session.remote = (offer.host, offer.port)
        key = keyed(offer, session)
        call = Call(
            call_id,
            line.tenant_id,
            line,
            request.from_address.uri.user or "",
            tx,
            sip.tag(),
            session,
            port,
            language,
        )
        target = request.contact[0].uri if request.contact else request.from_address.uri
        call.dialog = sip.Dialog(
            call_id,
            str(target),
            f"{request.to_address};tag={call.local_tag}",
            str(request.from_address),
            tx.peer,
        )
        self._calls[call_id] = call
        try:
            await session.open(self._settings.voice_sip_host, port)
            await self._join(call)
        except (grpc.aio.AioRpcError, OSError) as error:
            log.warning("call refused by the platform", error=repr(error)[:200])
            await self._forget(call)
            tx.respond(
                sip.reply(
                    request, 503, to_tag=call.local_tag, headers={"Retry-After": sip.RETRY_AFTER}
                )
            )
            return
        answer = sdp.answer(offer, codec, self._settings.public_host(), port, key, int(time.time()))
        assert self.endpoint is not None
        contact = self.endpoint.contact(self._settings.public_host(), tx.peer)
        tx.respond(
            sip.reply(
                request,
                200,
                to_tag=call.local_tag,
                body=answer,
                content_type="application/sdp",
                headers={"Contact": contact, "Allow": sip.ALLOW},
            )
        )
        call.setup_ms = (time.monotonic() - call.invited) * 1000
        log.info("call answered", tenant_id=call.tenant_id, interaction_id=call.interaction_id)

    async def _join(self, call: Call) -> None:
        """The caller's customer, interaction and stream; the stream's frames are read from
        then on, and the caller hears what they say."""
        customer, call.md = await self._platform.caller(call.tenant_id, call.caller)
        assert call.line is not None
        channel = call.line.channel
        start = mpb.StartInteractionRequest(
            tenant_id=call.tenant_id,
            channel=common.CHANNEL_PHONE,
            media=common.MEDIA_TYPE_VOICE,
            customer=mpb.Customer(id=customer, address=call.caller, language=call.language),
            request_id=f"sip:{call.call_id}"[:120],
        )
        if channel.WhichOneof("entry") == "flow":
            start.flow = channel.flow
        else:
            start.queue = channel.queue
        started = await self._platform.media.StartInteraction(start, metadata=call.md)
        call.interaction_id = started.interaction.id
        call.participant_id = started.customer_participant_id
        call.leg_id = started.interaction.media[0].id
        call.frames.put_nowait(
            mpb.ClientFrame(
                join=mpb.Join(
                    tenant_id=call.tenant_id,
                    interaction_id=call.interaction_id,
                    role=R.PARTICIPANT_ROLE_CUSTOMER,
                    subject_id=customer,
                )
            )
        )
        call.tasks.append(asyncio.create_task(self._listen(call)))

    async def _listen(self, call: Call) -> None:
        stream = self._platform.media.Connect(sent(call.frames), metadata=call.md)
        try:
            async for frame in stream:
                kind = frame.WhichOneof("frame")
                if kind == "prompt":
                    p = frame.prompt
                    if p.expects_answer:
                        self._asked(call, p)
                    recorded = await self._recording(call, p.audio)
                    if recorded:
                        call.session.play(recorded)
                    else:
                        await self._say(
                            call,
                            domain.spoken(
                                p.text, [(c.digit, c.label) for c in p.choices], call.language
                            ),
                        )
                elif kind == "message" and frame.message.sender_role != R.PARTICIPANT_ROLE_CUSTOMER:
                    if frame.message.content.text and not frame.message.whisper:
                        await self._say(call, frame.message.content.text)
                elif kind == "participant_left":
                    self._left(call, frame.participant_left.id)
                elif kind == "state_changed":
                    call.state = frame.state_changed.to_state
                    if call.state != S.INTERACTION_STATE_IN_IVR:
                        self._asked(call, None)
                    self._update_hold(call)
                elif kind == "ended":
                    break
                if call.state == S.INTERACTION_STATE_WRAP_UP:
                    break  # the conversation is over for the caller; the agent wraps up
                if call.state == S.INTERACTION_STATE_CALLBACK and kind == "message":
                    break  # told they will be called back: this call ends, the contact waits
        except grpc.aio.AioRpcError as error:
            log.info("call's stream closed", code=error.code().name)
        finally:
            if call.hold is not None:
                call.hold.cancel()
                call.hold = None
        if not call.hung_up:
            # The interaction ended (a flow's end, an overflow): the caller hears its last
            # words, then the call ends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.session.drained(), 60)
            await self._hang_up(call)

    def _update_hold(self, call: Call) -> None:
        """The caller hears the hold notice while waiting for someone: queued with no agent on
        the line (an agent handing the call on stays on it until a colleague answers), or
        held by the agent's phone."""
        agent = call.agent
        waits = call.state == S.INTERACTION_STATE_QUEUED if agent is None else agent.session.held
        if waits and call.hold is None and not call.hung_up:
            call.hold = asyncio.create_task(self._hold(call))
        elif not waits and call.hold is not None:
            call.hold.cancel()
            call.hold = None
            if agent is not None:
                call.session.hush()  # the agent is back: no notice over them

    async def _hold(self, call: Call) -> None:
        """The caller hears a notice now and again, never silence for long; between notices
        the channel's music on hold, if it has one."""
        music = call.line.channel.voice.hold_audio if call.line is not None else ""
        loop = asyncio.get_running_loop()
        while True:
            await call.session.drained()
            await self._say(call, domain.hold_notice(call.language))
            await call.session.drained()
            due = loop.time() + self._settings.voice_hold_notice_seconds
            clip = await self._recording(call, music)
            while clip and loop.time() < due:
                call.session.play(clip)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.session.drained(), due - loop.time())
            if clip:
                call.session.hush()  # the next notice is due, whatever is left of the music
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def _recording(self, call: Call, name: str) -> bytes | None:
        """The tenant's recording `name` in the call's language, if it has one."""
        return await self._audio.get(call.tenant_id, name, call.language) if name else None

    async def _say(self, call: Call, text: str) -> None:
        if text:
            call.session.play(await self._speech.say(text, domain.voice_of(call.language)))

    def _asked(self, call: Call, prompt: common.Prompt | None) -> None:
        """The prompt the caller now answers (None: none). The recording is silent from a
        secret's prompt until its answer is keyed in, and again if it is asked again."""
        self._entered(call, None)
        call.prompt = prompt
        call.session.paused = prompt is not None and prompt.sensitive

    def _pressed(self, call: Call, digit: str) -> None:
        """A key pressed: what is being said stops. A menu's choice is the answer at once; a
        free answer is keyed in until the hash key, or a pause."""
        if not call.interaction_id:
            return
        call.session.hush()
        call.digits += digit
        if not domain.keyed(call.prompt):
            self._send(call, digit)
        elif digit == domain.ENTRY_END:
            self._entered(call, call.entry)
        else:
            call.entry += digit
            if call.entry_timer is not None:
                call.entry_timer.cancel()
            call.entry_timer = asyncio.get_running_loop().call_later(
                domain.ENTRY_GAP_SECONDS, lambda: self._entered(call, call.entry)
            )

    def _entered(self, call: Call, answer: str | None) -> None:
        """A keyed-in answer is complete (None: dropped); the recording goes on."""
        if call.entry_timer is not None:
            call.entry_timer.cancel()
            call.entry_timer = None
        call.entry = ""
        if answer is None:
            return
        call.prompt = None
        call.session.paused = False
        if answer:
            self._send(call, answer)

    @staticmethod
    def _send(call: Call, text: str) -> None:
        said = mpb.SendMessage(
            client_message_id=str(uuid.uuid4()), content=mpb.MessageContent(text=text)
        )
        call.frames.put_nowait(mpb.ClientFrame(send=said))

    def _renegotiate(
        self,
        session: RtpSession,
        port: int,
        version: int,
        request: Request,
        tx: sip.ServerTransaction,
        to_tag: str,
    ) -> int:
        """A re-INVITE of either leg: hold and resume, by the offer's direction, mirrored in
        the answer. The SDP version of this side after it."""
        try:
            offer = sdp.parse(request.body)
        except sdp.SdpError as error:
            tx.respond(sip.reply(request, 488, headers={"Warning": f'399 lianluo "{error}"'}))
            return version
        session.held = offer.direction in ("sendonly", "inactive")
        session.remote = (offer.host, offer.port)
        peer_key = offer.srtp()
        if session.key is not None and peer_key is not None:
            # The same key of this side, under the tag of the peer's new offer.
            session.secure(sdp.Crypto(peer_key.tag, session.key.key), peer_key)
        answer = sdp.describe(
            int(time.time()),
            version + 1,
            self._settings.public_host(),
            port,
            (session.codec,),
            session.events,
            sdp.MIRROR[offer.direction],
            session.key,
            session.profile,
        )
        tx.respond(
            sip.reply(request, 200, to_tag=to_tag, body=answer, content_type="application/sdp")
        )
        return version + 1

    async def _refer(self, leg: AgentLeg, request: Request, tx: sip.ServerTransaction) -> None:
        """The agent's phone hands the call on (RFC 3515). Blind: to a colleague by name, or to
        a queue by name, as the desk's transfer does; the caller waits, hearing the hold
        notice, until someone answers. Attended (RFC 3891's Replaces, naming the phone's
        consult with a colleague): to that colleague, who takes the call on the line they are
        on. Either way the phone is told, and hangs up."""
        call = self._call_of(leg.interaction_id)
        if call is None or call.agent is not leg or not leg.participant_id:
            tx.respond(sip.reply(request, 481))
            return
        refer_to = str(request.headers.get("refer-to") or "")
        replaced = sip.replaces(refer_to)
        if replaced is not None:
            await self._attended(call, leg, replaced, request, tx)
            return
        name = sip.refer_target(refer_to)
        agent = self._view.by_name(leg.tenant_id, "agent", name) if name else None
        queue = self._view.by_name(leg.tenant_id, "queue", name) if name else None
        if agent is None and queue is None:
            warning = '399 lianluo "no colleague or queue of that name"'
            tx.respond(sip.reply(request, 404, headers={"Warning": warning}))
            return
        transfer = mpb.Transfer(participant_id=leg.participant_id, note="transferred by phone")
        if agent is not None:
            transfer.agent_id = agent.id
        else:
            transfer.queue = name
        if await self._hand_on(call, leg, transfer, request, tx):
            log.info("call transferred by phone", tenant_id=leg.tenant_id, to=name)

    async def _attended(
        self,
        call: Call,
        leg: AgentLeg,
        replaced: sip.Replaces,
        request: Request,
        tx: sip.ServerTransaction,
    ) -> None:
        """An attended transfer: the call goes to the colleague of the phone's consult. The
        ACD offers it to them as any transfer to a person, and their leg, already on the
        line, takes it; the consult's dialog with the calling phone ends."""
        consult = self.phones.consults.get(replaced.call_id)
        # The dialog as the calling phone sees it: this side's tag is its to-tag.
        if (
            consult is None
            or (consult.tenant_id, consult.agent_id) != (leg.tenant_id, leg.agent_id)
            or replaced.to_tag != consult.local_tag
        ):
            warning = '399 lianluo "no consult of this phone has that dialog"'
            tx.respond(sip.reply(request, 481, headers={"Warning": warning}))
            return
        colleague = consult.colleague
        colleague.awaiting = leg.interaction_id
        transfer = mpb.Transfer(
            participant_id=leg.participant_id,
            agent_id=colleague.agent_id,
            note="transferred by phone after a consult",
        )
        if not await self._hand_on(call, leg, transfer, request, tx):
            colleague.awaiting = ""
            return
        await self.phones.end_consult(consult, keep_colleague=True)
        log.info("call transferred by phone after a consult", tenant_id=leg.tenant_id)

    async def _hand_on(
        self,
        call: Call,
        leg: AgentLeg,
        transfer: mpb.Transfer,
        request: Request,
        tx: sip.ServerTransaction,
    ) -> bool:
        """Ask the media service for the transfer a REFER names: accepted (202), the caller
        waits for the target, the phone is told it went and is let go; refused, a 403 names
        why and the call stays as it was."""
        # Set before asking: the target may be bridged before the answer arrives, and this
        # phone must then be left to hang up itself (after the NOTIFY), not be sent a BYE.
        leg.transferred = True
        try:
            await self._platform.media.Transfer(
                mpb.TransferRequest(
                    tenant_id=leg.tenant_id, interaction_id=leg.interaction_id, transfer=transfer
                ),
                metadata=self._platform.admin,
            )
        except grpc.aio.AioRpcError as error:
            leg.transferred = False
            warning = f'399 lianluo "{error.details()}"'.replace("\n", " ")[:200]
            tx.respond(sip.reply(request, 403, headers={"Warning": warning}))
            return False
        tx.respond(sip.reply(request, 202))
        if call.agent is leg:
            self._unbridge(call)
            self._update_hold(call)
        await self.phones.notify(leg, "SIP/2.0 200 OK")
        self.phones.spawn(self._let_go(leg))
        return True

    async def _let_go(self, leg: AgentLeg) -> None:
        """A phone that handed a call on hangs up once told; one that does not is hung up."""
        await asyncio.sleep(domain.LET_GO_SECONDS)
        await self.phones.hang_up(leg)

    async def _cancel(self, request: Request, tx: sip.ServerTransaction) -> None:
        assert self.endpoint is not None
        invite = self.endpoint.invite_of(request)
        if invite is None:
            tx.respond(sip.reply(request, 481))
            return
        tx.respond(sip.reply(request, 200))
        if not invite.final:
            call = self._calls.get(request.call_id)
            invite.respond(
                sip.reply(invite.request, 487, to_tag=call.local_tag if call else sip.tag())
            )
            if call is not None:
                await self._caller_left(call)

    async def connect(self, offer: apb.Offer, leg: AgentLeg) -> bool:
        """An agent's phone answered an offer: bridge the caller who waits on this replica,
        or, for a callback, call the customer back through the trunk."""
        if self._bridge(offer.interaction_id, leg):
            return True
        number = offer.requirements.callback_number
        if not number or not self._settings.voice_trunk or self.endpoint is None:
            return False
        return await self._dial(offer, number, leg)

    async def _dial(self, offer: apb.Offer, number: str, leg: AgentLeg) -> bool:
        """Call the customer's number through the trunk; answered, the agent is bridged."""
        assert self.endpoint is not None
        port = self._ports.take()
        if port is None:
            return False
        host, _, trunk_port = self._settings.voice_trunk.rpartition(":")
        peer = self.endpoint.peer(host, int(trunk_port))
        here = self._settings.public_host()
        session = RtpSession(sdp.PCMU, 101, lambda _digit: None)
        await session.open(self._settings.voice_sip_host, port)
        call_id = f"{uuid.uuid4().hex}@{here}"
        local_tag = sip.tag()
        local = f"{self.endpoint.contact(here)};tag={local_tag}"
        target = f"sip:{number}@{host}:{trunk_port}"
        invite = sip.new_request("INVITE", target, call_id, 1, local, f"<{target}>")
        invite.headers.add("Contact", self.endpoint.contact(here))
        invite.headers.add("Content-Type", "application/sdp")
        invite.body = sdp.describe(int(time.time()), 1, here, port, sdp.OFFER, 101)
        answer = await self.endpoint.request(invite, peer, wait=60)
        call: Call | None = None
        owned = False  # once the call is kept, forgetting it frees its port
        try:
            if answer is None or not 200 <= answer.code < 300:
                return False
            self.endpoint.ack(invite, answer, peer)
            media = sdp.parse(answer.body)
            session.codec = media.codec() or sdp.PCMU
            session.remote = (media.host, media.port)
            tenant_id = offer.tenant_id
            call = Call(call_id, tenant_id, None, number, None, local_tag, session, port, "en")
            call.interaction_id = offer.interaction_id
            remote = answer.contact[0].uri if answer.contact else target
            call.dialog = sip.Dialog(call_id, str(remote), local, str(answer.to_address), peer, 2)
            call.md = await self._platform.session(tenant_id, offer.requirements.customer_id)
            it = await self._platform.media.GetInteraction(
                mpb.GetInteractionRequest(tenant_id=tenant_id, interaction_id=offer.interaction_id),
                metadata=call.md,
            )
            customer = next(p for p in it.participants if p.role == R.PARTICIPANT_ROLE_CUSTOMER)
            call.participant_id = customer.id
            call.leg_id = it.media[0].id if it.media else ""
            self._calls[call_id] = call
            owned = True
            call.frames.put_nowait(
                mpb.ClientFrame(
                    join=mpb.Join(
                        tenant_id=tenant_id,
                        interaction_id=offer.interaction_id,
                        role=R.PARTICIPANT_ROLE_CUSTOMER,
                        subject_id=customer.subject_id,
                        # What was said before the callback is not said again.
                        last_seen_sequence=it.last_sequence,
                    )
                )
            )
            call.tasks.append(asyncio.create_task(self._listen(call)))
            self._bridge(offer.interaction_id, leg)
            log.info("called back", tenant_id=tenant_id, interaction_id=offer.interaction_id)
            return True
        except (grpc.aio.AioRpcError, sdp.SdpError, StopIteration) as error:
            log.warning("a callback could not be made", error=repr(error)[:200])
            if owned and call is not None:
                await self._hang_up(call)
            return False
        finally:
            if not owned:
                session.close()
                self._ports.give_back(port)

    def _call_of(self, interaction_id: str) -> Call | None:
        if not interaction_id:  # an agent's leg of no call (a consult)
            return None
        return next((c for c in self._calls.values() if c.interaction_id == interaction_id), None)

    def _bridge(self, interaction_id: str, leg: AgentLeg) -> bool:
        """The agent's phone answered: the caller and the agent hear each other. An agent
        who handed the call on from the desk is on the line until then: their phone is hung
        up now; one who asked to stay (a consult) stays, and the three are a conference."""
        call = self._call_of(interaction_id)
        if call is None:
            return False
        first = call.agent
        if first is not None and not first.ended and not first.transferred and first.staying:
            first.staying = False
            self._confer(call, first, leg)
            return True
        before = self._unbridge(call)
        if before is not None and not before.ended and not before.transferred:
            before.transferred = True
            self.phones.spawn(self.phones.hang_up(before))
        call.session.hush()
        call.agent = leg
        call.session.partner, leg.session.partner = leg.session, call.session
        self._update_hold(call)
        log.info("call bridged", tenant_id=call.tenant_id, interaction_id=interaction_id)
        return True

    def _unbridge(self, call: Call) -> AgentLeg | None:
        """The agent's leg leaves the call's audio (the caller's hold follows from its caller);
        the agent's leg it was, if any. In a conference, a colleague who stays takes its
        place."""
        leg = call.agent
        if leg is not None and call.conference is not None:
            self._drop(call, leg)
            return leg
        call.agent = None
        call.session.partner = None
        if leg is not None:
            leg.session.partner = None
        return leg

    def _confer(self, call: Call, first: AgentLeg, leg: AgentLeg) -> None:
        """A colleague joins the caller and the agent: each hears the other two."""
        call.session.hush()
        if call.conference is None:
            call.conference = Conference(call.session, first.session)
        call.conference.join(leg.session)
        call.others.append(leg)
        self._update_hold(call)
        log.info("a colleague joined the call", tenant_id=call.tenant_id, agent_id=leg.agent_id)

    def _drop(self, call: Call, leg: AgentLeg) -> None:
        """An agent's leg leaves the conference; down to the caller and one agent, the two are
        bridged as any call is."""
        assert call.conference is not None
        call.conference.leave(leg.session)
        if leg in call.others:
            call.others.remove(leg)
        elif leg is call.agent:
            call.agent = call.others.pop(0) if call.others else None
        if call.agent is None:  # nobody on staff is left on the line
            call.conference.leave(call.session)
            call.conference = None
        elif not call.others:
            call.conference.leave(call.session)
            call.conference.leave(call.agent.session)
            call.conference = None
            call.session.partner, call.agent.session.partner = call.agent.session, call.session
        self._update_hold(call)

    def _left(self, call: Call, participant_id: str) -> None:
        """An agent left the conversation (from the desk, or their consult ended): their phone
        leaves the conference and is hung up."""
        if call.conference is None:
            return
        for leg in (call.agent, *call.others):
            if leg is not None and leg.participant_id == participant_id and not leg.ended:
                self._drop(call, leg)
                self.phones.spawn(self.phones.hang_up(leg))

    def _leaves_conference(self, leg: AgentLeg) -> bool:
        """An agent's phone hung up: true when others stay on the call without them."""
        call = self._call_of(leg.interaction_id)
        if call is None or call.conference is None or leg not in (call.agent, *call.others):
            return False
        self._drop(call, leg)
        return True

    def _agent_left(self, interaction_id: str) -> None:
        """The agent hung up: the caller's call ends too."""
        call = self._call_of(interaction_id)
        if call is not None and not call.hung_up:
            call.agent = None
            call.tasks.append(asyncio.create_task(self._hang_up(call)))

    async def _caller_left(self, call: Call) -> None:
        """The caller hung up (BYE) or gave up (CANCEL): the interaction ends for them, unless
        it waits to call them back."""
        call.hung_up = True
        call.session.close()  # the recording ends with the call, however long what follows takes
        for leg in (call.agent, *call.others):
            if leg is not None:
                await self.phones.hang_up(leg)
        if call.interaction_id and call.state != S.INTERACTION_STATE_CALLBACK:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._platform.media.End(
                    mpb.EndRequest(
                        tenant_id=call.tenant_id,
                        interaction_id=call.interaction_id,
                        participant_id=call.participant_id,
                    ),
                    metadata=call.md,
                )
        await self._forget(call)

    async def _hang_up(self, call: Call) -> None:
        """This side ends the call: a BYE in its dialog."""
        call.hung_up = True
        call.session.close()
        assert self.endpoint is not None
        assert call.dialog is not None
        await self.endpoint.request(call.dialog.request("BYE"), call.dialog.peer)
        await self._forget(call)

    async def _forget(self, call: Call) -> None:
        if self._calls.pop(call.call_id, None) is None:
            return
        call.frames.put_nowait(None)
        call.session.close()
        self._ports.give_back(call.port)
        for leg in (call.agent, *call.others):
            if leg is not None and not leg.ended:
                self.phones.spawn(self.phones.hang_up(leg))
        await self._keep_recording(call)
        figures = call.session.figures
        self.ended_count += 1
        self.ended.append(
            Ended(
                call.tenant_id,
                call.interaction_id,
                figures.received,
                figures.lost,
                call.session.sent,
                call.digits,
                figures.jitter_ms(),
                call.setup_ms,
            )
        )
        log.info(
            "call ended",
            tenant_id=call.tenant_id,
            received=call.session.figures.received,
            lost=call.session.figures.lost,
            jitter_ms=round(call.session.figures.jitter_ms(), 2),
            sent=call.session.sent,
            # What the caller's side said, by RTCP, it received of what was sent.
            **_peer(call.session),
        )
        self._entered(call, None)
        current = asyncio.current_task()
        for task in call.tasks:
            if task is not current:
                task.cancel()

    async def _keep_recording(self, call: Call) -> None:
        """Both parties of the call, as one stereo WAV in the object store, named with its
        sha256 on the call's media leg (and so on the interaction's record, in order)."""
        if not call.interaction_id or not call.session.recorded_in:
            return
        wav = call.session.recording()
        key = tenant_key(call.tenant_id, "calls", call.interaction_id, f"{call.leg_id}.wav")
        try:
            stored = await self._objects.put(key, wav, "audio/wav")
            await self._platform.media.RemoveMedia(
                mpb.RemoveMediaRequest(
                    tenant_id=call.tenant_id,
                    interaction_id=call.interaction_id,
                    participant_id=call.participant_id,
                    media_leg_id=call.leg_id,
                    recording=mpb.Recording(
                        uri=f"object:{stored.key}",
                        sha256=stored.sha256,
                        size_bytes=stored.size,
                        duration_ms=len(call.session.recorded_in) * 1000 // (2 * rtp.RATE),
                        content_type="audio/wav",
                        paused_ms=call.session.paused_frames * rtp.SAMPLES * 1000 // rtp.RATE,
                    ),
                ),
                metadata=call.md,
            )
        except (grpc.aio.AioRpcError, OSError) as error:
            log.warning("a call's recording was not kept", error=repr(error)[:200])

    def stop(self) -> None:
        self.phones.stop()
        for call in list(self._calls.values()):
            call.frames.put_nowait(None)
            call.session.close()
            for task in call.tasks:
                task.cancel()


def _peer(session: RtpSession) -> dict[str, object]:
    """The peer's last RTCP report of what it received, as log fields (none without one)."""
    r = session.peer_report
    if r is None:
        return {}
    return {
        "peer_lost": r.lost,
        "peer_jitter_ms": round(r.jitter * 1000 / session.codec.clock, 2),
    }
