"""A tenant's recordings as the tenants service keeps them: which WAVs it takes, and the one
channel at 8 kHz a phone plays, without anything running."""

from __future__ import annotations

import hashlib
import io
import struct
import wave

import pytest
from audio_files import shape, tone

from lianluo.runtime.errors import InvalidArgument
from lianluo.services.tenants import audio_rules as rules
from lianluo.tenants.v1 import audio_pb2 as apb


def refusal(wav: bytes) -> str:
    with pytest.raises(InvalidArgument) as caught:
        rules.for_phone(wav)
    [violation] = caught.value.violations
    assert violation.field == "audio.wav"
    return violation.description


def test_a_stereo_16_khz_wav_is_kept_as_one_channel_at_8_khz_with_half_the_frames() -> None:
    kept = rules.for_phone(tone(2.0, rate=16_000, channels=2))
    assert shape(kept.wav) == (1, 2, 8_000, 16_000)
    assert kept.duration_ms == 2_000
    assert kept.sha256 == hashlib.sha256(kept.wav).hexdigest()


def test_stereo_is_mixed_half_and_half() -> None:
    # A full left channel and a silent right one: the mix is the left at half its level.
    left = rules.for_phone(tone(0.5, channels=2, right=0.0))
    alone = rules.for_phone(tone(0.5))
    with wave.open(io.BytesIO(left.wav)) as a, wave.open(io.BytesIO(alone.wav)) as b:
        mixed, full = a.readframes(a.getnframes()), b.readframes(b.getnframes())
    pairs = list(zip(struct.iter_unpack("<h", mixed), struct.iter_unpack("<h", full), strict=True))
    assert pairs and all(abs(m - f / 2) <= 1 for (m,), (f,) in pairs)


@pytest.mark.parametrize(
    ("rate", "seconds", "frames"),
    [(8_000, 1.0, 8_000), (11_025, 1.0, 8_000), (44_100, 0.5, 4_000), (48_000, 60.0, 480_000)],
)
def test_every_accepted_rate_becomes_8_khz_of_the_same_length(
    rate: int, seconds: float, frames: int
) -> None:
    kept = rules.for_phone(tone(seconds, rate=rate))
    assert shape(kept.wav) == (1, 2, 8_000, frames)
    assert kept.duration_ms == round(seconds * 1000)


def test_a_wav_already_as_a_phone_plays_it_is_kept_with_its_very_samples() -> None:
    wav = tone(1.0)
    assert rules.for_phone(wav).wav == wav


def test_the_same_file_is_kept_the_same_way() -> None:
    wav = tone(1.0, rate=22_050, channels=2)
    assert rules.for_phone(wav) == rules.for_phone(wav)


@pytest.mark.parametrize(
    ("wav", "why"),
    [
        (tone(0.1, width=1), "must be 16-bit PCM, not 8-bit"),
        (tone(61.0), "must play at most 60 seconds, not 61.0"),
        (tone(0.1, rate=7_999), "must have 8,000 to 48,000 samples a second, not 7,999"),
        (tone(0.1, rate=96_000), "must have 8,000 to 48,000 samples a second, not 96,000"),
        (tone(0.0), "has no sound: its data is empty"),
        (b"", "must be set: a WAV file"),
    ],
)
def test_what_a_phone_cannot_play_is_refused_saying_why(wav: bytes, why: str) -> None:
    assert refusal(wav) == why


def test_more_than_two_channels_are_refused() -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(6)
        writer.setsampwidth(2)
        writer.setframerate(48_000)
        writer.writeframes(b"\x00\x00" * 6 * 480)
    assert refusal(out.getvalue()) == "must have one or two channels, not 6"


def test_a_float_wav_is_not_16_bit_pcm() -> None:
    pcm = tone(0.1)
    # The same file with its format tag set to IEEE float (3).
    as_float = pcm[:20] + struct.pack("<H", 3) + pcm[22:]
    assert refusal(as_float).startswith("must be 16-bit PCM")


@pytest.mark.parametrize(
    "data",
    [
        b"ID3\x04 an mp3 file",
        b"\x00" * 8,
        b"\xff" * 4096,
        b"RIFF\x24\x00\x00\x00WAVE",  # a header and nothing after it
        tone(0.5)[:30],  # cut inside its format chunk
        b"RIFF\x00\x00\x00\x00WAVEdata\x04\x00\x00\x00\x00\x00\x00\x00",  # data before fmt
    ],
)
def test_what_is_not_a_wav_is_refused(data: bytes) -> None:
    assert refusal(data).startswith("not a WAV file")


def test_a_header_that_promises_more_than_follows_is_kept_for_what_follows() -> None:
    wav = tone(1.0)
    cut = wav[: len(wav) - 8_000]  # half its 16,000 bytes of samples
    kept = rules.for_phone(cut)
    assert shape(kept.wav)[3] == 4_000 and kept.duration_ms == 500


def test_name_language_and_wav_are_all_named_at_once() -> None:
    audio = apb.Audio(name="Welcome!", language="EN", wav=b"nope")
    with pytest.raises(InvalidArgument) as caught:
        rules.validate_audio(audio)
    assert {v.field for v in caught.value.violations} == {
        "audio.name",
        "audio.language",
        "audio.wav",
    }


@pytest.mark.parametrize(
    ("name", "language", "ok"),
    [
        ("welcome", "", True),
        ("hold.music_2-b", "zh", True),
        ("a" * 64, "en", True),
        ("a" * 65, "", False),
        ("2fa", "", False),
        ("_x", "", False),
        ("Welcome", "", False),
        ("wel come", "", False),
        ("welcome", "e", False),
        ("welcome", "abcdefghi", False),
        ("welcome", "EN", False),
        ("welcome", "zh-cn", False),
    ],
)
def test_names_and_languages(name: str, language: str, ok: bool) -> None:
    assert rules.could_exist(name, language) is ok
    audio = apb.Audio(name=name, language=language, wav=tone(0.1))
    if ok:
        assert rules.validate_audio(audio).duration_ms == 100
    else:
        with pytest.raises(InvalidArgument):
            rules.validate_audio(audio)
