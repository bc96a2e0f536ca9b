"""WAV files for the tests of recorded prompts: a sine tone, and the shape of a WAV."""

from __future__ import annotations

import io
import math
import struct
import wave


def tone(
    seconds: float,
    rate: int = 8_000,
    channels: int = 1,
    width: int = 2,
    hz: float = 440.0,
    right: float | None = None,
) -> bytes:
    """A WAV of a sine tone; `right` gives the second channel its own level (else the same)."""
    frames = bytearray()
    for i in range(round(seconds * rate)):
        level = math.sin(2 * math.pi * hz * i / rate)
        levels = [level] if channels == 1 else [level, level if right is None else right]
        for value in levels:
            if width == 2:
                frames += struct.pack("<h", round(value * 12_000))
            else:
                frames += bytes([128 + round(value * 100)])
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(bytes(frames))
    return out.getvalue()


def shape(wav: bytes) -> tuple[int, int, int, int]:
    """(channels, bytes per sample, samples a second, frames) of a WAV."""
    with wave.open(io.BytesIO(wav), "rb") as reader:
        return (
            reader.getnchannels(),
            reader.getsampwidth(),
            reader.getframerate(),
            reader.getnframes(),
        )
