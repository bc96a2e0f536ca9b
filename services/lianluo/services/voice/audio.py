"""A call's audio: RTP in (the caller's voice, its figures, its RFC 4733 digits) and out
(prompts, paced at one packet every 20 ms), and speech made from text by espeak-ng."""

from __future__ import annotations

import asyncio
import collections
import io
import secrets
import time
import wave
from collections.abc import Awaitable, Callable
from typing import cast

import pylibsrtp

from lianluo.runtime.logs import get_logger
from lianluo.services.voice import codecs, rtp, sdp

log = get_logger(__name__)
FRAME_BYTES = rtp.SAMPLES * 2  # 16-bit linear PCM
PACKET_SECONDS = rtp.SAMPLES / rtp.RATE
SPEECH_KEPT = 256
# How often each side reports on RTCP (RFC 3550's minimum interval).
RTCP_SECONDS = 5.0
# A tenant's recorded prompts are kept this long (a new one plays within a minute), and at
# most this much of them at once.
TENANT_AUDIO_SECONDS = 60.0
TENANT_AUDIO_BYTES = 32 << 20
# A call's recording keeps its first hour (two channels of 16-bit PCM: 115 MB), so that no call
# can take a replica's memory; what comes after is not recorded.
RECORDED_BYTES = rtp.RATE * 2 * 3600


class Ports:
    """The RTP ports of this replica: each call takes one and gives it back."""

    def __init__(self, ports: range) -> None:
        # Even ports for RTP (RTCP would take the odd one above).
        self._free = collections.deque(p for p in ports if p % 2 == 0)

    def take(self) -> int | None:
        return self._free.popleft() if self._free else None

    def give_back(self, port: int) -> None:
        self._free.append(port)


class RtpSession(asyncio.DatagramProtocol):
    """One call's RTP on one local port, to the address the peer's SDP gave."""

    def __init__(
        self, codec: sdp.Format, events: int | None, on_digit: Callable[[str], None]
    ) -> None:
        self.events = events
        self.remote: tuple[str, int] | None = None
        self.figures = rtp.Figures()
        self.coder: codecs.Codec = codecs.codec(codec)
        self.figures.clock = codec.clock
        self.sent = 0
        # Whether the peer holds the call (it sent sendonly or inactive): nothing is sent.
        self.held = False
        self._on_digit = on_digit
        self._seen_events: collections.deque[int] = collections.deque(maxlen=32)
        self._transport: asyncio.DatagramTransport | None = None
        self._clips: collections.deque[bytes] = collections.deque()
        self._playing = b""
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._talkspurt = True
        self._idle = asyncio.Event()
        self._idle.set()
        self._pacer: asyncio.Task[None] | None = None
        self._started = 0.0
        # The other leg of a bridged call: what arrives here is sent there as it comes.
        self.partner: RtpSession | None = None
        # Or, with three or more legs, the conference. What the others said (or a partner in
        # another codec), by speaker, waits here for this leg's next tick, where it is mixed.
        self.conference: Conference | None = None
        self._mix: dict[int, bytearray] = {}
        # SRTP (keyed by SDES): this side's key, sent in its SDP again at each re-INVITE, and
        # the sessions that protect what goes out and check what comes in. None: plain RTP.
        self.key: sdp.Crypto | None = None
        self.profile = "RTP/AVP"
        self._peer_key: sdp.Crypto | None = None
        self._protect: pylibsrtp.Session | None = None
        self._unprotect: pylibsrtp.Session | None = None
        # The recording, in step with the pacer's 20 ms ticks: what came in from the peer and
        # what went out to it, each as 16-bit PCM. Audio that arrives between two ticks waits
        # in `_heard` / `_said` for the next one.
        self.recorded_in = bytearray()
        self.recorded_out = bytearray()
        self._heard = bytearray()
        self._said = bytearray()
        # While the caller keys in a secret: the recording is silence, both ways.
        self.paused = False
        self.paused_frames = 0
        # RTCP, on the port above: what the peer last said it received of this stream.
        self.peer_report: rtp.Report | None = None
        self._octets = 0
        self._rtcp: asyncio.DatagramTransport | None = None
        self._reporter: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.start()
        try:
            rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _Rtcp(self), local_addr=(host, port + 1)
            )
        except OSError as error:
            log.info("no RTCP for a call: its port is taken", port=port + 1, error=str(error))
            return
        self._rtcp = rtcp
        self._reporter = loop.create_task(self._report())

    def start(self) -> None:
        """The 20 ms clock this side sends on, from now."""
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._pacer = loop.create_task(self._pace())

    @property
    def connected(self) -> bool:
        """Whether there is a peer to send to."""
        return self.remote is not None and self._transport is not None

    async def _report(self) -> None:
        """An SR (or RR, before this side has sent) every few seconds, with this side's report
        of the peer's stream."""
        while True:
            await asyncio.sleep(RTCP_SECONDS)
            if self.remote is None or self._rtcp is None:
                continue
            now = asyncio.get_running_loop().time()
            blocks = [rtp.report_block(self.figures, now)] if self.figures.received else []
            packet = rtp.sender_report(
                self._ssrc, time.time(), self._timestamp, self.sent, self._octets, blocks
            )
            if self._protect is not None:
                packet = self._protect.protect_rtcp(packet)
            self._rtcp.sendto(packet, (self.remote[0], self.remote[1] + 1))

    def secure(self, key: sdp.Crypto, peer_key: sdp.Crypto) -> None:
        """SRTP from now on: what goes out is encrypted and authenticated with this side's
        key, and what comes in is checked with the peer's (anything else is dropped)."""
        if self._peer_key != peer_key:
            self._unprotect = pylibsrtp.Session(
                policy=pylibsrtp.Policy(
                    key=peer_key.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND
                )
            )
            self._peer_key = peer_key
        if self.key != key or self._protect is None:
            self._protect = pylibsrtp.Session(
                policy=pylibsrtp.Policy(key=key.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            )
            self.key = key

    @property
    def secured(self) -> bool:
        return self._protect is not None

    def _send(self, packet: rtp.Packet) -> None:
        assert self._transport is not None
        assert self.remote is not None
        data = rtp.build(packet)
        if self._protect is not None:
            data = self._protect.protect(data)
        self._transport.sendto(data, self.remote)

    def rtcp_received(self, data: bytes) -> None:
        if self._unprotect is not None:
            try:
                data = self._unprotect.unprotect_rtcp(data)
            except pylibsrtp.Error:
                return
        senders, reports = rtp.parse_rtcp(data)
        for sender in senders:
            if sender.ssrc == self.figures.ssrc:
                self.figures.last_sr = sender.ntp_middle
                self.figures.last_sr_at = asyncio.get_running_loop().time()
        for report in reports:
            if report.source == self._ssrc:
                self.peer_report = report

    @property
    def codec(self) -> sdp.Format:
        return self.coder.format

    @codec.setter
    def codec(self, codec: sdp.Format) -> None:
        """The codec the peer's answer chose (this side's offer had several)."""
        if codec != self.coder.format:
            self.coder = codecs.codec(codec)
            self.figures.clock = codec.clock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.remote is not None and addr[0] != self.remote[0]:
            return
        if self._unprotect is not None:
            try:
                data = self._unprotect.unprotect(data)
            except pylibsrtp.Error:
                return  # not the peer's, or altered on the way
        packet = rtp.parse(data)
        if packet is not None:
            self.arrived(packet)

    def arrived(self, packet: rtp.Packet) -> None:
        """A packet from the peer: a digit, or audio counted, recorded and passed on."""
        now = asyncio.get_running_loop().time() - self._started
        if self.events is not None and packet.payload_type == self.events:
            event = rtp.event(packet.payload)
            # A digit counts once, at the first packet that ends it (three are sent).
            if event is not None and event.end and packet.timestamp not in self._seen_events:
                self._seen_events.append(packet.timestamp)
                self._on_digit(event.digit)
            return
        if packet.payload_type == self.codec.payload_type:
            self.figures.add(packet, int(now * self.codec.clock))
            # Decoded once (an Opus decoder keeps state): for the recording and the relay.
            pcm = self.coder.decode(packet.payload)
            if len(self._heard) < FRAME_BYTES * 50:  # a second of jitter at most
                self._heard += pcm
            if self.conference is not None and not self.held:
                self.conference.heard(self, pcm)
            elif self.partner is not None and not self.held:
                self.partner.relay(self, packet.payload, pcm)

    def relay(self, speaker: RtpSession, payload: bytes, pcm: bytes) -> None:
        """Send the other leg's audio on: at once and as it came when both legs have one
        codec; else its PCM goes out on this leg's own clock, 20 ms at a time (an Opus
        encoder takes whole frames, whatever the other leg's packets hold)."""
        if self.held or not self.connected:
            return
        if speaker.codec != self.codec:
            self.mix_in(speaker, pcm)
            return
        if len(self._said) < FRAME_BYTES * 50:
            self._said += pcm
        self._timestamp = (self._timestamp + self.coder.ticks(payload)) % (1 << 32)
        packet = rtp.Packet(
            self.codec.payload_type, self._sequence, self._timestamp, self._ssrc, payload
        )
        self._sequence = (self._sequence + 1) % rtp.SEQ_MOD
        self._send(packet)
        self._octets += len(packet.payload)
        self.sent += 1

    # ------------------------------------------------------------------ playing

    def play(self, pcm: bytes) -> None:
        """Queue 8 kHz 16-bit PCM to be sent after what is queued already."""
        if pcm:
            self._clips.append(pcm)
            self._idle.clear()

    def hush(self) -> None:
        """Stop what is playing and drop what is queued (the caller pressed a key)."""
        self._clips.clear()
        self._playing = b""
        self._idle.set()

    def mix_in(self, speaker: RtpSession, pcm: bytes) -> None:
        """What another leg said (in a conference, or a partner in another codec), for this
        leg's next ticks."""
        waiting = self._mix.setdefault(id(speaker), bytearray())
        if len(waiting) < FRAME_BYTES * 50:  # a second of jitter at most
            waiting += pcm

    def _mixed(self) -> bytes | None:
        """20 ms of what the other legs said, summed; None when none said anything."""
        out: bytes | None = None
        for waiting in self._mix.values():
            if waiting:
                frame = bytes(waiting[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
                del waiting[:FRAME_BYTES]
                out = frame if out is None else rtp.mix(out, frame)
        return out

    async def drained(self) -> None:
        await self._idle.wait()

    def _next_frame(self) -> bytes | None:
        while not self._playing and self._clips:
            self._playing = self._clips.popleft()
        if not self._playing:
            self._idle.set()
            return None
        frame, self._playing = self._playing[:FRAME_BYTES], self._playing[FRAME_BYTES:]
        return frame.ljust(FRAME_BYTES, b"\0")

    async def _pace(self) -> None:
        """One packet every 20 ms of the loop's clock, however late a tick wakes."""
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while True:
            tick += PACKET_SECONDS
            await asyncio.sleep(max(0.0, tick - loop.time()))
            frame = self._next_frame()
            if not self.held:  # the conference's legs, or a partner in another codec
                mixed = self._mixed()
                if mixed is not None:
                    frame = mixed if frame is None else rtp.mix(frame, mixed)
            self._record(frame)
            self._timestamp = (self._timestamp + self.codec.clock // 50) % (1 << 32)
            if frame is None or self.held or not self.connected:
                self._talkspurt = True
                continue
            packet = rtp.Packet(
                self.codec.payload_type,
                self._sequence,
                self._timestamp,
                self._ssrc,
                self.coder.encode(frame),
                marker=self._talkspurt,
            )
            self._talkspurt = False
            self._sequence = (self._sequence + 1) % rtp.SEQ_MOD
            self._send(packet)
            self._octets += len(packet.payload)
            self.sent += 1

    def _record(self, played: bytes | None) -> None:
        """One tick of the recording: 20 ms each way, silence where nothing was."""
        if played is not None and not self.held:
            self._said += played
        if len(self.recorded_in) >= RECORDED_BYTES:
            self._heard.clear()
            self._said.clear()
            return
        if self.paused:
            self._heard.clear()
            self._said.clear()
            self.paused_frames += 1
        for buffer, out in ((self._heard, self.recorded_in), (self._said, self.recorded_out)):
            out += bytes(buffer[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del buffer[:FRAME_BYTES]

    def recording(self) -> bytes:
        """The call so far as a stereo WAV: the peer on the left, what it heard on the right."""
        both = rtp.stereo(bytes(self.recorded_in), bytes(self.recorded_out))
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(rtp.RATE)
            wav.writeframes(both)
        return out.getvalue()

    def close(self) -> None:
        for task in (self._pacer, self._reporter):
            if task is not None:
                task.cancel()
        for transport in (self._transport, self._rtcp):
            if transport is not None:
                transport.close()
        self._idle.set()


class Conference:
    """Three or more legs of one call (a colleague who stays on it): each leg hears the others,
    mixed on its own sending clock, 20 ms at a time."""

    def __init__(self, *sessions: RtpSession) -> None:
        self.members: list[RtpSession] = []
        for session in sessions:
            self.join(session)

    def join(self, session: RtpSession) -> None:
        if session not in self.members:
            session.partner = None
            session.conference = self
            self.members.append(session)

    def leave(self, session: RtpSession) -> None:
        if session in self.members:
            self.members.remove(session)
        session.conference = None
        session._mix.clear()
        for member in self.members:
            member._mix.pop(id(session), None)

    def heard(self, speaker: RtpSession, pcm: bytes) -> None:
        for member in self.members:
            if member is not speaker:
                member.mix_in(speaker, pcm)


class _Rtcp(asyncio.DatagramProtocol):
    """A call's RTCP port: reports from the peer, handed to its session."""

    def __init__(self, session: RtpSession) -> None:
        self._session = session

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        remote = self._session.remote
        if remote is None or addr[0] == remote[0]:
            self._session.rtcp_received(data)


class Speech:
    """Text to 8 kHz PCM with espeak-ng, kept for the prompts said again and again. The text
    goes in on stdin, never as an argument, so no prompt can pass the synthesiser an option."""

    def __init__(self, command: str) -> None:
        self._command = command
        self._kept: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()

    async def say(self, text: str, voice: str) -> bytes:
        key = (text, voice)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        process = await asyncio.create_subprocess_exec(
            self._command,
            "--stdout",
            "-v",
            voice,
            "-s",
            "160",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate(text.encode())
        if process.returncode != 0 or not out:
            log.warning("speech synthesis failed", voice=voice, code=process.returncode)
            return b""
        spoken = pcm_of(out)
        self._kept[key] = spoken
        if len(self._kept) > SPEECH_KEPT:
            self._kept.popitem(last=False)
        return spoken


def pcm_of(wav: bytes) -> bytes:
    """A WAV's audio as 8 kHz mono 16-bit PCM (what a recording is kept as, so as it is)."""
    with wave.open(io.BytesIO(wav)) as found:
        width, channels, rate = found.getsampwidth(), found.getnchannels(), found.getframerate()
        pcm = found.readframes(found.getnframes())
    if width != 2:
        raise ValueError("not 16-bit PCM")
    if channels == 2:
        pcm = rtp.mono(pcm)
    return rtp.resample(pcm, rate)


class TenantAudio:
    """A tenant's recorded prompts (the tenants service's AudioService) as PCM to play: in the
    call's language, else without a language; None when the tenant has none of that name.
    Each is kept a minute, so that a prompt said on every call is fetched once a minute."""

    def __init__(self, fetch: Callable[[str, str, str], Awaitable[bytes | None]]) -> None:
        self._fetch = fetch
        self._kept: collections.OrderedDict[tuple[str, str, str], tuple[float, bytes | None]] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    async def get(self, tenant_id: str, name: str, language: str) -> bytes | None:
        for lang in dict.fromkeys((language, "")):
            pcm = await self._one(tenant_id, name, lang)
            if pcm is not None:
                return pcm
        return None

    async def _one(self, tenant_id: str, name: str, language: str) -> bytes | None:
        key = (tenant_id, name, language)
        now = time.monotonic()
        found = self._kept.get(key)
        if found is not None and now - found[0] < TENANT_AUDIO_SECONDS:
            self._kept.move_to_end(key)
            return found[1]
        wav = await self._fetch(tenant_id, name, language)
        try:
            pcm = pcm_of(wav) if wav else None
        except (wave.Error, EOFError, ValueError) as error:
            log.warning("a tenant's recording could not be read", name=name, error=str(error))
            pcm = None
        self._keep(key, now, pcm)
        return pcm

    def _keep(self, key: tuple[str, str, str], now: float, pcm: bytes | None) -> None:
        old = self._kept.pop(key, None)
        if old is not None and old[1] is not None:
            self._bytes -= len(old[1])
        self._kept[key] = (now, pcm)
        self._bytes += len(pcm or b"")
        while self._bytes > TENANT_AUDIO_BYTES and len(self._kept) > 1:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._bytes -= len(dropped or b"")
