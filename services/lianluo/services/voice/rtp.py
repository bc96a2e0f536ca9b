"""RTP and RTCP packets (RFC 3550), telephone events (RFC 4733), G.711 and the receive
figures, pure.

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

from lianluo.services.voice.sdp import PCMA, Format

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


def encode(pcm: bytes, codec: Format) -> bytes:
    """16-bit linear PCM to G.711."""
    return audioop.lin2alaw(pcm, 2) if codec == PCMA else audioop.lin2ulaw(pcm, 2)


def decode(payload: bytes, codec: Format) -> bytes:
    """G.711 to 16-bit linear PCM."""
    return audioop.alaw2lin(payload, 2) if codec == PCMA else audioop.ulaw2lin(payload, 2)


def mix(a: bytes, b: bytes) -> bytes:
    """Two 16-bit mono frames of one length, summed (clipped at full scale, not wrapped)."""
    return audioop.add(a, b, 2)


def stereo(left: bytes, right: bytes) -> bytes:
    """Two 16-bit mono streams of one length as one interleaved stereo stream."""
    return audioop.add(audioop.tostereo(left, 2, 1, 0), audioop.tostereo(right, 2, 0, 1), 2)


def mono(pcm: bytes) -> bytes:
    """16-bit stereo PCM as mono, the two channels mixed."""
    return audioop.tomono(pcm, 2, 0.5, 0.5)


def resample(pcm: bytes, rate: int, to: int = RATE) -> bytes:
    """16-bit mono PCM at `rate` to `to` (8 kHz unless said)."""
    if rate == to:
        return pcm
    converted, _ = audioop.ratecv(pcm, 2, 1, rate, to, None)
    return converted


@dataclass
class Figures:
    """What arrived of one stream: counts, loss and interarrival jitter (RFC 3550 A.1, A.8)."""

    received: int = 0
    first_sequence: int | None = None
    highest: int = 0  # extended sequence number
    jitter: float = 0.0  # in timestamp units
    clock: int = RATE  # of the timestamps, Hz
    # The sender of the stream, and the last sender report from it (its middle 32 bits of NTP
    # time, and when it came, in seconds of the loop's clock), for the next report's LSR/DLSR.
    ssrc: int = 0
    last_sr: int = 0
    last_sr_at: float = 0.0
    _transit: int | None = field(default=None, repr=False)
    _expected_before: int = field(default=0, repr=False)
    _received_before: int = field(default=0, repr=False)

    def add(self, p: Packet, arrival_samples: int) -> None:
        self.received += 1
        self.ssrc = p.ssrc
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

    def fraction_lost(self) -> int:
        """The share lost since the last call, in 256ths (RFC 3550 A.3), for a report."""
        expected, received = self.expected - self._expected_before, self.received
        received -= self._received_before
        self._expected_before, self._received_before = self.expected, self.received
        lost = expected - received
        return 0 if expected <= 0 or lost <= 0 else min(255, (lost << 8) // expected)

    def jitter_ms(self) -> float:
        return self.jitter * 1000 / self.clock


# ---------------------------------------------------------------------- RTCP (RFC 3550 6.4)

SR, RR = 200, 201
_RTCP = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIII")  # ssrc, fraction<<24 | cumulative lost, highest, jitter, LSR
# Seconds from 1900 (NTP) to 1970 (Unix).
NTP_EPOCH = 2_208_988_800


@dataclass(frozen=True)
class Report:
    """One report block: what a receiver says it got of a source's stream."""

    source: int
    fraction_lost: int  # in 256ths, since its last report
    lost: int  # in all
    highest: int  # extended highest sequence number
    jitter: int  # in timestamp units


@dataclass(frozen=True)
class SenderInfo:
    """What a sender report says of its sender's own stream."""

    ssrc: int
    ntp_middle: int  # the middle 32 bits of its NTP time, echoed as LSR
    packets: int


def ntp(unix: float) -> tuple[int, int]:
    seconds = int(unix) + NTP_EPOCH
    return seconds & 0xFFFFFFFF, int((unix % 1) * (1 << 32)) & 0xFFFFFFFF


def report_block(f: Figures, now: float) -> bytes:
    """This side's report of the stream `f` counts (to send in an SR or RR)."""
    lost = min(f.lost, 0x7FFFFF)
    dlsr = int((now - f.last_sr_at) * 65536) if f.last_sr else 0
    return _BLOCK.pack(
        f.ssrc,
        f.fraction_lost() << 24 | lost,
        f.highest & 0xFFFFFFFF,
        int(f.jitter) & 0xFFFFFFFF,
        f.last_sr,
    ) + struct.pack("!I", dlsr & 0xFFFFFFFF)


def sender_report(
    ssrc: int, unix: float, rtp_timestamp: int, packets: int, octets: int, blocks: list[bytes]
) -> bytes:
    """An SR (when this side has sent), else an RR, with the given report blocks."""
    if packets:
        high, low = ntp(unix)
        body = struct.pack("!IIIIII", ssrc, high, low, rtp_timestamp, packets, octets)
        kind = SR
    else:
        body, kind = struct.pack("!I", ssrc), RR
    body += b"".join(blocks)
    return _RTCP.pack(0x80 | len(blocks), kind, len(body) // 4) + body


def parse_rtcp(data: bytes) -> tuple[list[SenderInfo], list[Report]]:
    """The sender reports and report blocks of a compound RTCP packet; what cannot be read,
    and the other packet types (SDES, BYE, ...), are skipped."""
    senders: list[SenderInfo] = []
    reports: list[Report] = []
    offset = 0
    while offset + _RTCP.size <= len(data):
        first, kind, words = _RTCP.unpack_from(data, offset)
        end = offset + 4 + 4 * words
        if first >> 6 != 2 or end > len(data):
            break
        at = offset + 4
        if kind in (SR, RR) and at + 4 <= end:
            (ssrc,) = struct.unpack_from("!I", data, at)
            at += 4
            if kind == SR and at + 20 <= end:
                high, low, _, packets, _ = struct.unpack_from("!IIIII", data, at)
                senders.append(SenderInfo(ssrc, (high << 16 | low >> 16) & 0xFFFFFFFF, packets))
                at += 20
            for _ in range(first & 0x1F):
                if at + 24 > end:
                    break
                source, lost_word, highest, jitter, _ = _BLOCK.unpack_from(data, at)
                lost = lost_word & 0xFFFFFF
                lost = lost - (1 << 24) if lost & 0x800000 else lost  # signed 24 bits
                reports.append(Report(source, lost_word >> 24, lost, highest, jitter))
                at += 24
        offset = end
    return senders, reports
