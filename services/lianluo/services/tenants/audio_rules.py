"""What a recorded prompt may be, and the shape it is kept in: pure checks and conversion.

A phone hears G.711 at 8,000 samples a second on one channel, so a recording is converted once,
when it is stored, and the voice service plays it as kept without converting it on every call.
Sizes in bytes are checked at the entry of every RPC from the limits declared in audio.proto;
these are the rules a size cannot say.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
import wave
from dataclasses import dataclass

from lianluo.domain.flows import AUDIO_NAME, AUDIO_NAME_RULE
from lianluo.runtime.errors import FieldViolation, InvalidArgument, Violations
from lianluo.tenants.v1 import audio_pb2 as apb

# Deprecated from Python 3.11 and removed in 3.13, as the voice service notes (voice/rtp.py);
# the standard library has nothing else that resamples.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

LANGUAGE = re.compile(r"[a-z]{2,8}")
PHONE_RATE = 8_000
SAMPLE_BYTES = 2
MIN_RATE, MAX_RATE = 8_000, 48_000
MAX_SECONDS = 60


@dataclass(frozen=True)
class PhoneAudio:
    """A recording as kept: a one-channel 16-bit WAV at 8 kHz, its sha256 and how long it plays."""

    wav: bytes
    sha256: str
    duration_ms: int


class _Refused(Exception):
    """Why a WAV cannot be kept, in the words a client reads."""


def key_of(name: str, language: str) -> str:
    """One recording's id in the audit log and in errors; no name holds a "/"."""
    return f"{name}/{language}" if language else name


def could_exist(name: str, language: str) -> bool:
    """Whether a recording may have this name and language (others are simply not found)."""
    return bool(AUDIO_NAME.fullmatch(name)) and (not language or bool(LANGUAGE.fullmatch(language)))


def _key(v: Violations, name: str, language: str, p: str) -> None:
    # The rule by which flows and voice channels name a recording, so every name they hold fits.
    v.check(bool(AUDIO_NAME.fullmatch(name)), f"{p}name", AUDIO_NAME_RULE)
    if language:
        v.check(
            bool(LANGUAGE.fullmatch(language)),
            f"{p}language",
            '2 to 8 lowercase letters ("en", "zh"), or empty for calls in any other language',
        )


def validate_audio(audio: apb.Audio, p: str = "audio") -> PhoneAudio:
    """The recording's WAV as kept, once its name, language and WAV are valid."""
    v = Violations()
    _key(v, audio.name, audio.language, f"{p}.")
    kept: PhoneAudio | None = None
    try:
        kept = _for_phone(audio.wav)
    except _Refused as refused:
        v.add(f"{p}.wav", str(refused))
    v.raise_if_any()
    assert kept is not None  # a refused WAV is a violation, raised above
    return kept


def for_phone(wav: bytes, path: str = "audio.wav") -> PhoneAudio:
    """A WAV converted to what a phone plays; INVALID_ARGUMENT on `path` saying why it cannot."""
    try:
        return _for_phone(wav)
    except _Refused as refused:
        raise InvalidArgument([FieldViolation(path, str(refused))]) from None


def _for_phone(wav: bytes) -> PhoneAudio:
    if not wav:
        raise _Refused("must be set: a WAV file")
    channels, width, rate, pcm = _read(wav)
    if width != SAMPLE_BYTES:
        raise _Refused(f"must be 16-bit PCM, not {8 * width}-bit")
    if channels not in (1, 2):
        raise _Refused(f"must have one or two channels, not {channels}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise _Refused(f"must have 8,000 to 48,000 samples a second, not {rate:,}")
    # What the data holds, not what the header claims: a header may promise more than follows.
    frames = len(pcm) // (channels * width)
    if frames == 0:
        raise _Refused("has no sound: its data is empty")
    if frames > MAX_SECONDS * rate:
        raise _Refused(f"must play at most {MAX_SECONDS} seconds, not {frames / rate:.1f}")
    pcm = pcm[: frames * channels * width]
    if channels == 2:
        pcm = audioop.tomono(pcm, width, 0.5, 0.5)
    if rate != PHONE_RATE:
        pcm, _ = audioop.ratecv(pcm, width, 1, rate, PHONE_RATE, None)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(SAMPLE_BYTES)
        writer.setframerate(PHONE_RATE)
        writer.writeframes(pcm)
    kept = out.getvalue()
    duration_ms = len(pcm) // SAMPLE_BYTES * 1000 // PHONE_RATE
    return PhoneAudio(kept, hashlib.sha256(kept).hexdigest(), duration_ms)


def _read(wav: bytes) -> tuple[int, int, int, bytes]:
    """(channels, bytes per sample, samples a second, frames) of a WAV file."""
    try:
        with wave.open(io.BytesIO(wav), "rb") as reader:
            params = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            return (*params, reader.readframes(reader.getnframes()))
    except wave.Error as error:
        # The standard library reads WAVE_FORMAT_PCM only: float, A-law and extensible
        # headers (format 3, 6, 65534) are refused by their format tag.
        if str(error).startswith("unknown format"):
            raise _Refused(f"must be 16-bit PCM, not {error}") from None
        raise _Refused(f"not a WAV file: {error}") from None
    except (EOFError, struct.error, ValueError, OverflowError):
        raise _Refused("not a WAV file: it ends inside its header") from None
