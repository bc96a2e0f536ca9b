"""Each RTP stream's codec: 20 ms of the service's audio to a payload, and back.

Inside, a call's audio is 8 kHz 16-bit mono PCM: prompts, the relay between two legs, and
recordings. G.711 is stateless (the standard library's `audioop`). Opus (RFC 7587) is
libopus through PyAV (the FFmpeg bindings aiortc uses too): its encoder and decoder keep
state, so each stream has its own; the encoder takes the 8 kHz audio as it is, the decoder
gives 48 kHz, brought down to 8 kHz (with state, so that frames join without a click). Its
RTP clock runs at 48 kHz whatever the audio's rate.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Protocol

import av

from lianluo.services.voice import rtp, sdp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

# A narrowband voice needs no more (RFC 7587 suggests 8-12 kb/s for it); the peer is told
# this side plays 8 kHz only (maxplaybackrate), so its encoder spends no more either.
OPUS_BITRATE = 16_000
DECODED_RATE = 48_000


class Codec(Protocol):
    format: sdp.Format

    def encode(self, pcm: bytes) -> bytes:
        """20 ms of 8 kHz 16-bit PCM to one payload."""

    def decode(self, payload: bytes) -> bytes:
        """One payload to 8 kHz 16-bit PCM (silence for one that cannot be read)."""

    def ticks(self, payload: bytes) -> int:
        """How far a payload moves the RTP clock."""


class G711:
    def __init__(self, format: sdp.Format) -> None:
        self.format = format

    def encode(self, pcm: bytes) -> bytes:
        return rtp.encode(pcm, self.format)

    def decode(self, payload: bytes) -> bytes:
        return rtp.decode(payload, self.format)

    def ticks(self, payload: bytes) -> int:
        return len(payload)  # a byte a sample, at 8 kHz


class Opus:
    def __init__(self, format: sdp.Format) -> None:
        self.format = format
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = rtp.RATE
        self._encoder.layout = "mono"
        self._encoder.format = "s16"
        self._encoder.bit_rate = OPUS_BITRATE
        self._encoder.time_base = Fraction(1, rtp.RATE)
        self._encoder.options = {"application": "voip", "frame_duration": "20"}
        self._encoder.open()
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.open()
        self._resampled: tuple[int, tuple[tuple[int, int], ...]] | None = None
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.sample_rate = rtp.RATE
        frame.planes[0].update(pcm)
        frame.pts = self._pts
        self._pts += len(pcm) // 2
        return b"".join(bytes(p) for p in self._encoder.encode(frame))

    def decode(self, payload: bytes) -> bytes:
        try:
            frames = self._decoder.decode(av.Packet(payload))
        except av.error.FFmpegError:
            return b"\0" * rtp.SAMPLES * 2
        out = b""
        for frame in frames:
            pcm = bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)]
            if len(frame.layout.channels) == 2:
                pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
            converted, self._resampled = audioop.ratecv(
                pcm, 2, 1, frame.sample_rate or DECODED_RATE, rtp.RATE, self._resampled
            )
            out += converted
        return out

    def ticks(self, payload: bytes) -> int:
        return self.format.clock // 50  # 20 ms, the ptime this side asks for


# The service's own audio as it is, never named in SDP: a leg whose own stack encodes what it
# sends (the phone in the browser, where aiortc speaks Opus to the browser) takes and gives PCM.
LINEAR = sdp.Format("linear", -1)


class Linear:
    format = LINEAR

    def encode(self, pcm: bytes) -> bytes:
        return pcm

    def decode(self, payload: bytes) -> bytes:
        return payload

    def ticks(self, payload: bytes) -> int:
        return len(payload) // 2


def codec(format: sdp.Format) -> Codec:
    """A stream's codec for an encoding both sides agreed on."""
    if format == LINEAR:
        return Linear()
    return Opus(format) if format.name == sdp.OPUS.name else G711(format)
