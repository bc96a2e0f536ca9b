"""SDP offer and answer for one audio stream (RFC 3264, RFC 4566), pure.

The voice service speaks G.711 (PCMU, then PCMA) with RFC 4733 telephone events. An offer
without either codec is refused (488), and the answer mirrors the offer's direction, so that a
peer that puts the call on hold (sendonly) hears nothing back (recvonly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PCMU, PCMA = 0, 8
CODECS = {PCMU: "PCMU", PCMA: "PCMA"}
# What the service prefers, first to last.
PREFERENCE = (PCMU, PCMA)
EVENTS = "telephone-event"
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

    def codec(self) -> int | None:
        """The first G.711 codec both sides have, in the peer's order of preference."""
        for pt in self.formats:
            name = self.names.get(pt, f"{CODECS.get(pt, '')}/8000").upper()
            for ours in PREFERENCE:
                if name == f"{CODECS[ours]}/8000" and pt == ours:
                    return ours
        return None

    def events(self) -> int | None:
        """The payload type of the peer's telephone events at 8 kHz, if it offers them."""
        for pt in self.formats:
            if self.names.get(pt, "").lower() == f"{EVENTS}/8000":
                return pt
        return None


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
                if len(parts) < 4 or not parts[1].isdigit() or not parts[2].startswith("RTP/AVP"):
                    raise SdpError("m=audio must be: audio <port> RTP/AVP <formats>")
                port = int(parts[1])
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
    return Media(host, port, formats, names, direction)


def describe(
    session: int,
    version: int,
    host: str,
    port: int,
    codecs: tuple[int, ...],
    events: int | None,
    direction: str = "sendrecv",
) -> bytes:
    """An SDP body for one audio stream: an offer (several codecs) or an answer (one)."""
    formats = [*codecs, *([events] if events is not None else [])]
    lines = [
        "v=0",
        f"o=lianluo {session} {version} IN IP4 {host}",
        "s=lianluo",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(f) for f in formats)}",
        *(f"a=rtpmap:{c} {CODECS[c]}/8000" for c in codecs),
    ]
    if events is not None:
        lines += [f"a=rtpmap:{events} {EVENTS}/8000", f"a=fmtp:{events} 0-16"]
    lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()
