"""SDP offer and answer for one audio stream (RFC 3264, RFC 4566), pure.

The voice service speaks G.711 (PCMU and PCMA) and Opus (RFC 7587, at the payload type the
offer gives it), with RFC 4733 telephone events. An answer takes the first of these in the
offer's order; an offer with none of them is refused (488). The answer mirrors the offer's
direction, so that a peer that puts the call on hold (sendonly) hears nothing back
(recvonly).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    """An audio encoding as SDP names it (rtpmap), at the payload type a stream carries it."""

    name: str
    payload_type: int
    clock: int = 8000  # the RTP clock, Hz
    channels: int = 1

    def rtpmap(self) -> str:
        return f"{self.name}/{self.clock}" + (f"/{self.channels}" if self.channels > 1 else "")


PCMU = Format("PCMU", 0)
PCMA = Format("PCMA", 8)
# RFC 7587: always "opus/48000/2" in SDP, whatever the audio's rate and channels; its payload
# type is dynamic (this one is this side's, in its own offers).
OPUS = Format("opus", 111, 48000, 2)
# This side's offer, first to last: G.711 first, which every phone and trunk has.
OFFER = (PCMU, PCMA, OPUS)
EVENTS = "telephone-event"
# SRTP keyed in the SDP (SDES, RFC 4568): the one suite every SRTP phone speaks.
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEY_BYTES = 30  # a 16-byte master key and a 14-byte salt


@dataclass(frozen=True)
class Crypto:
    """An SDES key: the tag that pairs an offer's key with the answer's, and the master key
    and salt. Keys go only in SDP sent over TLS, where nobody on the path reads them."""

    tag: int
    key: bytes

    @staticmethod
    def new(tag: int = 1) -> Crypto:
        return Crypto(tag, secrets.token_bytes(SRTP_KEY_BYTES))

    def attribute(self) -> str:
        return f"crypto:{self.tag} {SRTP_SUITE} inline:{base64.b64encode(self.key).decode()}"


MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
MAX_SDP = 8_000


class SdpError(ValueError):
    """The body is not an SDP offer this service can read."""


@dataclass(frozen=True)
class Media:
    """The audio stream a peer describes: where it receives, with what."""

    host: str
    port: int
    # Payload types, in the peer's order of preference.
    formats: tuple[int, ...]
    # Payload type -> encoding name, from a=rtpmap (static types need none).
    names: dict[int, str]
    direction: str = "sendrecv"
    # RTP/SAVP when the peer asks for SRTP only; RTP/AVP with keys is SRTP if the answer agrees.
    profile: str = "RTP/AVP"
    keys: tuple[Crypto, ...] = ()

    def codec(self) -> Format | None:
        """The first codec both sides have, in the peer's order of preference: G.711 at its
        static payload type, Opus at whatever dynamic one the peer gives it."""
        for pt in self.formats:
            name = self.names.get(pt, {0: "PCMU/8000", 8: "PCMA/8000"}.get(pt, "")).lower()
            for ours in (PCMU, PCMA):
                if name == f"{ours.name}/{ours.clock}".lower() and pt == ours.payload_type:
                    return ours
            if name == "opus/48000" and pt >= 96:
                return Format(OPUS.name, pt, OPUS.clock, OPUS.channels)
        return None

    def srtp(self) -> Crypto | None:
        """The peer's key in the suite this side speaks, if it offers SRTP."""
        return self.keys[0] if self.keys else None

    def events(self, clock: int = 8000) -> int | None:
        """The payload type of the peer's telephone events at a codec's clock, if it offers
        them (RFC 4733: the events run on the clock of the audio they go with)."""
        for pt in self.formats:
            if self.names.get(pt, "").lower() == f"{EVENTS}/{clock}":
                return pt
        return None


class Refusal(Exception):
    """An INVITE's offer this side cannot answer: the SIP answer that says why."""

    def __init__(self, code: int, headers: dict[str, str]) -> None:
        super().__init__(code)
        self.code, self.headers = code, headers


def offer(content_type: str, body: bytes) -> tuple[Media, Format]:
    """An INVITE's offer and the codec to answer it with. A body that is not SDP is refused
    415; no offer at all is one this side cannot answer (488), a malformed one a bad request
    (400); no codec in common, 488."""
    kind = content_type.split(";")[0].strip().lower()
    if body and kind != "application/sdp":
        raise Refusal(415, {"Accept": "application/sdp"})
    try:
        media = parse(body)
    except SdpError as error:
        raise Refusal(488 if not body else 400, {"Warning": f'399 lianluo "{error}"'}) from None
    codec = media.codec()
    if codec is None:
        raise Refusal(488, {"Warning": '305 lianluo "only PCMU, PCMA and opus"'})
    if media.profile == "RTP/SAVP" and media.srtp() is None:
        raise Refusal(488, {"Warning": f'305 lianluo "SRTP only with {SRTP_SUITE}"'})
    return media, codec


def parse(body: bytes) -> Media:
    """The first audio stream of an SDP body."""
    if len(body) > MAX_SDP:
        raise SdpError("SDP body too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SdpError("SDP is not text") from error
    session_host = ""
    host = ""
    port = -1
    formats: tuple[int, ...] = ()
    names: dict[int, str] = {}
    keys: list[Crypto] = []
    profile = "RTP/AVP"
    direction = "sendrecv"
    in_audio = False
    seen_audio = False
    for line in text.splitlines():
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            in_audio = value.startswith("audio ") and not seen_audio
            if in_audio:
                seen_audio = True
                parts = value.split()
                if len(parts) < 4 or not parts[1].isdigit() or parts[2] not in PROFILES:
                    raise SdpError("m=audio must be: audio <port> RTP/AVP (or RTP/SAVP) <formats>")
                port = int(parts[1])
                profile = parts[2]
                if not all(p.isdigit() and int(p) < 128 for p in parts[3:]):
                    raise SdpError("payload types must be numbers below 128")
                formats = tuple(int(p) for p in parts[3:])
        elif kind == "c":
            found = re.fullmatch(r"IN IP4 ([0-9.]+)(/\d+)?", value)
            if found is None:
                raise SdpError("c= must be IN IP4 <address>")
            if in_audio:
                host = found.group(1)
            elif not seen_audio:
                session_host = found.group(1)
        elif kind == "a" and (in_audio or not seen_audio):
            if value in MIRROR:
                direction = value
            elif value.startswith("crypto:") and in_audio:
                key = _crypto(value)
                if key is not None:
                    keys.append(key)
            elif value.startswith("rtpmap:") and in_audio:
                found = re.fullmatch(r"rtpmap:(\d+) ([\w.-]+/\d+)(/\d+)?", value)
                if found:
                    names[int(found.group(1))] = found.group(2)
    if not seen_audio:
        raise SdpError("no m=audio stream")
    if not 0 <= port < 65536:
        raise SdpError("bad audio port")
    host = host or session_host
    if not host:
        raise SdpError("no c= address")
    return Media(host, port, formats, names, direction, profile, tuple(keys))


PROFILES = ("RTP/AVP", "RTP/SAVP")


def _crypto(value: str) -> Crypto | None:
    """An a=crypto line's key, when it is in the suite this side speaks (others are ignored,
    as RFC 4568 says)."""
    found = re.fullmatch(r"crypto:(\d{1,9}) (\S+) inline:([A-Za-z0-9+/=]+)(\|\S*)?(\s.*)?", value)
    if found is None or found.group(2) != SRTP_SUITE:
        return None
    try:
        key = base64.b64decode(found.group(3), validate=True)
    except (binascii.Error, ValueError):
        return None
    return Crypto(int(found.group(1)), key) if len(key) == SRTP_KEY_BYTES else None


def answer(
    offer: Media, codec: Format, host: str, port: int, key: Crypto | None, session: int
) -> bytes:
    """The answer to an offer: the codec chosen, the offer's telephone events on its clock,
    the offer's direction mirrored, and this side's SRTP key in the offer's profile."""
    return describe(
        session,
        1,
        host,
        port,
        (codec,),
        offer.events(codec.clock),
        MIRROR[offer.direction],
        key,
        offer.profile,
    )


def describe(
    session: int,
    version: int,
    host: str,
    port: int,
    codecs: tuple[Format, ...],
    events: int | None,
    direction: str = "sendrecv",
    key: Crypto | None = None,
    profile: str = "RTP/AVP",
) -> bytes:
    """An SDP body for one audio stream: an offer (several codecs) or an answer (one). The
    telephone events run on the first codec's clock; Opus is asked for no more than the 8 kHz
    this side plays and records (RFC 7587's maxplaybackrate), which saves its bandwidth."""
    formats = [*(c.payload_type for c in codecs), *([events] if events is not None else [])]
    lines = [
        "v=0",
        f"o=lianluo {session} {version} IN IP4 {host}",
        "s=lianluo",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} {profile} {' '.join(str(f) for f in formats)}",
    ]
    for c in codecs:
        lines.append(f"a=rtpmap:{c.payload_type} {c.rtpmap()}")
        if c.name == OPUS.name:
            lines.append(f"a=fmtp:{c.payload_type} maxplaybackrate=8000;sprop-maxcapturerate=8000")
    if events is not None:
        clock = codecs[0].clock if codecs else 8000
        lines += [f"a=rtpmap:{events} {EVENTS}/{clock}", f"a=fmtp:{events} 0-16"]
    if key is not None:
        lines.append(f"a={key.attribute()}")
    lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()
