"""An agent's phone in the browser: a WebRTC connection from the desk (aiortc: ICE, DTLS-SRTP
and Opus), open for as long as the agent keeps it, which each call the agent accepts on the
desk is bridged to.

Inside, the phone's leg of a call is an RtpSession whose codec is the service's own PCM: the
relay and the conference hand it 20 ms of 8 kHz audio on its clock, which goes to aiortc to be
encoded for the browser; what the browser says, aiortc decodes, and it is brought down to 8 kHz
and counted, recorded and passed on as any leg's audio is.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections.abc import Callable

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from lianluo.runtime.logs import get_logger
from lianluo.services.voice import codecs, rtp
from lianluo.services.voice.audio import FRAME_BYTES, RtpSession

log = get_logger(__name__)
# A second of audio waits for aiortc at most; older audio is dropped, not sent late.
QUEUED_FRAMES = 50
_CLOCK = fractions.Fraction(1, rtp.RATE)


class BadOffer(ValueError):
    """The browser's offer cannot make a phone (not SDP, or without audio)."""


def gather_on(host: str) -> None:
    """ICE candidates on the address the service's SIP and RTP use, when it names one.

    aioice gathers on every interface but loopback and has no setting for it, so its host
    lookup is replaced: a voice service bound to 127.0.0.1 (on a laptop, in the tests) offers
    127.0.0.1, and one bound to a pod's address offers that address only."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - every interface: aioice's own choice
        return
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [host]


class Outgoing(MediaStreamTrack):
    """The audio aiortc sends to the browser: 20 ms frames of 8 kHz PCM, as the leg's clock
    hands them over. Between calls nothing is sent."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUED_FRAMES)
        self._started: float | None = None
        self._pts = -rtp.SAMPLES

    def put(self, pcm: bytes) -> None:
        if self._frames.full():
            self._frames.get_nowait()
        self._frames.put_nowait(pcm)

    async def recv(self) -> av.AudioFrame:
        pcm = await self._frames.get()
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        # Stamped by the clock, so that a silence between two calls is a silence to the
        # browser's jitter buffer, not audio it should have played.
        now = int((loop.time() - self._started) * rtp.RATE) // rtp.SAMPLES * rtp.SAMPLES
        self._pts = max(now, self._pts + rtp.SAMPLES)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.sample_rate = rtp.RATE
        frame.time_base = _CLOCK
        frame.pts = self._pts
        frame.planes[0].update(pcm)
        return frame


class WebSession(RtpSession):
    """A call's leg on the phone in the browser."""

    def __init__(self, phone: WebPhone) -> None:
        super().__init__(codecs.LINEAR, None, lambda _digit: None)
        self._phone = phone
        self._in_sequence = 0
        self._in_timestamp = 0

    @property
    def connected(self) -> bool:
        return not self._phone.closed

    def _send(self, packet: rtp.Packet) -> None:
        self._phone.outgoing.put(packet.payload)

    def hear(self, pcm: bytes) -> None:
        """20 ms of what the browser said, as 8 kHz PCM."""
        self._in_sequence = (self._in_sequence + 1) % rtp.SEQ_MOD
        self._in_timestamp += len(pcm) // 2
        self.arrived(
            rtp.Packet(codecs.LINEAR.payload_type, self._in_sequence, self._in_timestamp, 0, pcm)
        )

    def close(self) -> None:
        super().close()
        if self._phone.session is self:
            self._phone.session = None


class WebPhone:
    """One agent's phone in the browser: the peer connection, what it sends, and the leg of the
    call on it now, if any."""

    def __init__(
        self, tenant_id: str, agent_id: str, on_closed: Callable[[WebPhone], None]
    ) -> None:
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.outgoing = Outgoing()
        self.session: WebSession | None = None
        self.closed = False
        self.desk: asyncio.Task[None] | None = None
        self._on_closed = on_closed
        self._pc = RTCPeerConnection()
        self._reader: asyncio.Task[None] | None = None
        self._pc.on("track", self._track)
        self._pc.on("connectionstatechange", self._state)

    async def answer(self, offer: str) -> str:
        """The answer to the browser's offer (its candidates gathered), with this side's."""
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        except ValueError as error:
            raise BadOffer(str(error)[:200]) from None
        if not any(t.kind == "audio" for t in self._pc.getTransceivers()):
            raise BadOffer("the offer has no audio")
        self._pc.addTrack(self.outgoing)
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return str(self._pc.localDescription.sdp)

    def _track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        """What the browser says, 20 ms of 8 kHz PCM at a time, to the call on the phone."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rtp.RATE)
        waiting = bytearray()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    waiting += bytes(out.planes[0])[: out.samples * 2]
                while len(waiting) >= FRAME_BYTES:
                    pcm = bytes(waiting[:FRAME_BYTES])
                    del waiting[:FRAME_BYTES]
                    if self.session is not None:
                        self.session.hear(pcm)

    async def _state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.desk is not None:
            self.desk.cancel()
        if self._reader is not None:
            self._reader.cancel()
        self.outgoing.stop()
        await self._pc.close()
        self._on_closed(self)
        log.info("a phone in the browser closed", tenant_id=self.tenant_id, agent_id=self.agent_id)
