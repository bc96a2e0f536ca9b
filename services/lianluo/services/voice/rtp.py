"""RTP packets (RFC 3550), telephone events (RFC 4733), G.711 and the receive figures, pure.

G.711 is the standard library's `audioop` (deprecated from Python 3.11, removed in 3.13): its
C loops take a fraction of a microsecond per 20 ms frame. Moving past 3.12 means a table in
numpy, bit-exact with it.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from lianluo.services.voice.sdp import PCMA

HEADER = struct.Struct("!BBHII")
RATE = 8000
# 20 ms of 8 kHz audio: one packet.
SAMPLES = 160
EVENT_DIGITS = "0123456789*#ABCD"
SEQ_MOD = 1 << 16


@dataclass(frozen=True)
class Packet:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False


def parse(data: bytes) -> Packet | None:
    """An RTP packet, or None for anything else (RTCP, junk, another version)."""
    if len(data) < HEADER.size:
        return None
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2 or 72 <= second & 0x7F <= 76:  # not RTP 2, or RTCP on a shared port
        return None
    offset = HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # a header extension: its length in words follows its profile
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20 and end > offset:  # padding: the last byte says how much
        end -= data[-1]
    if end < offset:
        return None
    return Packet(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80))


def build(p: Packet) -> bytes:
    return (
        HEADER.pack(
            0x80, (0x80 if p.marker else 0) | p.payload_type, p.sequence, p.timestamp, p.ssrc
        )
        + p.payload
    )


@dataclass(frozen=True)
class Event:
    digit: str
    end: bool
    duration: int


def event(payload: bytes) -> Event | None:
    """A telephone event's digit, whether it has ended, and its duration in samples."""
    if len(payload) < 4 or payload[0] >= len(EVENT_DIGITS):
        return None
    return Event(
        EVENT_DIGITS[payload[0]], bool(payload[1] & 0x80), struct.unpack("!H", payload[2:4])[0]
    )


def event_payload(digit: str, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", EVENT_DIGITS.index(digit), (0x80 if end else 0) | volume, duration)


def encode(pcm: bytes, codec: int) -> bytes:
    """16-bit linear PCM to G.711."""
    return audioop.lin2alaw(pcm, 2) if codec == PCMA else audioop.lin2ulaw(pcm, 2)


def decode(payload: bytes, codec: int) -> bytes:
    """G.711 to 16-bit linear PCM."""
    return audioop.alaw2lin(payload, 2) if codec == PCMA else audioop.ulaw2lin(payload, 2)


def stereo(left: bytes, right: bytes) -> bytes:
    """Two 16-bit mono streams of one length as one interleaved stereo stream."""
    return audioop.add(audioop.tostereo(left, 2, 1, 0), audioop.tostereo(right, 2, 0, 1), 2)


def mono(pcm: bytes) -> bytes:
    """16-bit stereo PCM as mono, the two channels mixed."""
    return audioop.tomono(pcm, 2, 0.5, 0.5)


def resample(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM at `rate` to 8 kHz."""
    if rate == RATE:
        return pcm
    converted, _ = audioop.ratecv(pcm, 2, 1, rate, RATE, None)
    return converted


@dataclass
class Figures:
    """What arrived of one stream: counts, loss and interarrival jitter (RFC 3550 A.1, A.8)."""

    received: int = 0
    first_sequence: int | None = None
    highest: int = 0  # extended sequence number
    jitter: float = 0.0  # in timestamp units
    _transit: int | None = field(default=None, repr=False)

    def add(self, p: Packet, arrival_samples: int) -> None:
        self.received += 1
        if self.first_sequence is None:
            self.first_sequence = self.highest = p.sequence
        else:
            cycles, last = divmod(self.highest, SEQ_MOD)
            delta = (p.sequence - last) % SEQ_MOD
            if delta < SEQ_MOD // 2:  # forward (a wrap counts a cycle)
                self.highest = cycles * SEQ_MOD + last + delta
        transit = arrival_samples - p.timestamp
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        return 0 if self.first_sequence is None else self.highest - self.first_sequence + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def jitter_ms(self) -> float:
        return self.jitter * 1000 / RATE
