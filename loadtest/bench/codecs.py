"""What a leg's codec costs the voice service: the CPU time to encode and decode 20 ms of a
voice, for G.711 (the standard library's audioop) and for Opus (libopus through PyAV, with the
48 kHz decode brought down to 8 kHz), and how many calls transcoded between the two one core
could carry (a bridged call between a G.711 caller and an Opus phone does one encode and one
decode of each codec every 20 ms: each way, a decode of what came and an encode of it). The
raw limit beside each, in the same run, is copying the frame's bytes: the least any relay
does.

Run:
    .venv/bin/python loadtest/bench/codecs.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from common import percentile, progress, summary

from lianluo.services.voice import codecs, rtp, sdp
from lianluo.services.voice.audio import Speech

FRAME = rtp.SAMPLES * 2


def timed(work: Callable[[bytes], bytes], frames: list[bytes], seconds: float) -> list[float]:
    """Microseconds per call of `work`, one per frame, for about `seconds`."""
    spent: list[float] = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        for frame in frames:
            started = time.perf_counter()
            work(frame)
            spent.append((time.perf_counter() - started) * 1e6)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    voice = asyncio.run(Speech("espeak-ng").say("Hello, I lost my card yesterday.", "en"))
    frames = [voice[i : i + FRAME] for i in range(0, len(voice) - FRAME, FRAME)]
    copy = timed(bytes, frames, args.seconds)
    rows: list[tuple[str, str, str, str, str]] = []
    costs: dict[str, float] = {}
    for format in (sdp.PCMU, sdp.OPUS):
        progress(f"timing {format.name}")
        coder = codecs.codec(format)
        payloads = [coder.encode(f) for f in frames]
        encode = timed(coder.encode, frames, args.seconds)
        decoder = codecs.codec(format)
        decode = timed(decoder.decode, payloads, args.seconds)
        costs[format.name] = percentile(encode, 0.5) + percentile(decode, 0.5)
        for what, spent in (("encode", encode), ("decode", decode)):
            p50, p99 = percentile(spent, 0.5), percentile(spent, 0.99)
            rows.append(
                (
                    f"{format.name} {what} µs / 20 ms (p50 / p99)",
                    f"{p50:.1f} / {p99:.1f}",
                    f"{percentile(copy, 0.5):.2f} (copy)",
                    f"{p50 / percentile(copy, 0.5):.0f}x",
                    "-",
                )
            )
        size = sum(len(p) for p in payloads) / len(payloads)
        rows.append((f"{format.name} payload bytes / 20 ms", f"{size:.0f}", "320 (PCM)", "-", "-"))
    # One transcoded call every 20 ms: the caller's G.711 decoded and encoded as Opus, the
    # phone's Opus decoded and encoded as G.711.
    per_call = costs["PCMU"] + costs["opus"]
    rows.append(
        (
            "transcoded calls one core carries",
            f"{20_000 / per_call:.0f}",
            "-",
            "-",
            "-",
        )
    )
    summary("Codecs: the CPU a 20 ms frame costs", rows)


if __name__ == "__main__":
    main()
