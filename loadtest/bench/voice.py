"""Phone calls through one voice process: how long a call takes to be answered (the INVITE to
its 200 OK, with the caller's customer, session and interaction made on the way), and how many
calls at once it holds with clean audio: the loss and jitter of the callers' RTP as the voice
service receives it while it also says each caller a prompt. Next to it, the raw limit measured
in the same run: a bare asyncio UDP echo on the same machine, the same number of 50-packet-a-
second streams sent to it and timed back.

SIPp (Debian's sip-tester) places the calls; the voice service runs in this process beside a
cell of its own. Run:
    .venv/bin/python loadtest/bench/voice.py [--levels 10,25,50,100] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary

from lianluo.common.v1 import common_pb2 as common
from lianluo.services.voice import rtp, sdp
from lianluo.services.voice.app import assemble
from lianluo.services.voice.audio import Speech
from lianluo.services.voice.settings import VoiceSettings
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

NUMBER = "+862180009999"
SCENARIO = Path(__file__).parents[2] / "tests/e2e/sipp/hold_and_talk.xml"
CLEAN_LOSS = 0.01  # at most 1% of the callers' packets lost
CLEAN_JITTER_MS = 20.0


async def configure(tenants: str) -> None:
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    async with grpc.aio.insecure_channel(tenants) as tch:
        t = bench_tenant("bench-voice")
        t.channels.append(common.CHANNEL_PHONE)
        tenant = await rpc.TenantServiceStub(tch).CreateTenant(
            pb.CreateTenantRequest(tenant=t), metadata=admin
        )
        flow = pb.Flow(
            name="hold",
            entry_node="hello",
            nodes=[
                pb.FlowNode(
                    id="hello", prompt=pb.PromptNode(text="Thank you for calling.", next="wait")
                ),
                # Nobody answers the menu: the call stays, and its audio is measured.
                pb.FlowNode(
                    id="wait",
                    menu=pb.MenuNode(
                        prompt="Please say what you need.",
                        choices=[pb.MenuChoice(digit="1", label="help", next="bye")],
                        timeout_seconds=300,
                        no_match_next="bye",
                    ),
                ),
                pb.FlowNode(id="bye", end=pb.EndNode(text="Goodbye.")),
            ],
        )
        await rpc.FlowServiceStub(tch).PutFlow(
            pb.PutFlowRequest(tenant_id=tenant.id, flow=flow), metadata=admin
        )
        await rpc.ChannelServiceStub(tch).CreateChannel(
            pb.CreateChannelRequest(
                tenant_id=tenant.id,
                channel=pb.Channel(
                    name="phone", flow="hold", voice=pb.VoiceChannel(numbers=[NUMBER])
                ),
            ),
            metadata=admin,
        )


def sipp(port: int, calls: int, seconds: int, audio: Path, folder: Path) -> tuple[int, int]:
    """Place `calls` calls at once (as fast as SIPp starts them); SIPp's successful and failed
    calls."""
    scenario = folder / "calls.xml"
    scenario.write_text(
        SCENARIO.read_text()
        .replace("[audio]", str(audio))
        .replace("[talk_ms]", str(seconds * 1000))
    )
    done = subprocess.run(
        [
            "sipp",
            "-sf",
            str(scenario),
            f"127.0.0.1:{port}",
            "-s",
            NUMBER,
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-m",
            str(calls),
            "-l",
            str(calls),
            "-r",
            str(calls),
            "-rp",
            "1000",
            "-timeout",
            str(seconds * 4 + 60),
            "-nostdin",
            "-p",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    counts = {}
    for name in ("Successful call", "Failed call"):
        found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", done.stdout)
        counts[name] = int(found[-1]) if found else 0
    if not counts["Successful call"]:
        raise RuntimeError(done.stdout[-2000:])
    return counts["Successful call"], counts["Failed call"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the raw limit


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


def echo_server(port: int) -> None:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port)))
    loop.run_forever()


class Stream(asyncio.DatagramProtocol):
    def __init__(self, started: float) -> None:
        self.figures = rtp.Figures()
        self.started = started

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = rtp.parse(data)
        if packet is not None:
            now = asyncio.get_running_loop().time() - self.started
            self.figures.add(packet, int(now * rtp.RATE))


async def raw_echo(port: int, streams: int, seconds: int) -> tuple[float, float]:
    """Loss and p99 jitter of `streams` 20 ms RTP streams echoed by a bare asyncio process."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    ends = [
        await loop.create_datagram_endpoint(
            lambda: Stream(started), remote_addr=("127.0.0.1", port)
        )
        for _ in range(streams)
    ]
    payload = b"\xff" * rtp.SAMPLES
    tick = loop.time()
    for n in range(seconds * 50):
        for i, (transport, _) in enumerate(ends):
            packet = rtp.Packet(0, n % rtp.SEQ_MOD, n * rtp.SAMPLES, i, payload)
            transport.sendto(rtp.build(packet))
        tick += 0.02
        await asyncio.sleep(max(0.0, tick - loop.time()))
    await asyncio.sleep(0.5)
    received = sum(s.figures.received for _, s in ends)
    sent = streams * seconds * 50
    jitters = [s.figures.jitter_ms() for _, s in ends]
    for transport, _ in ends:
        transport.close()
    return 1 - received / sent, percentile(jitters, 0.99)


# ---------------------------------------------------------------------- the run


async def measure(cell: object, levels: list[int], seconds: int) -> None:
    tenants = cell.address("tenants")  # type: ignore[attr-defined]
    await configure(tenants)
    folder = Path(tempfile.mkdtemp(prefix="lianluo-voice-bench-"))
    env = {k.removeprefix("LIANLUO_").lower(): v for k, v in cell.env.items()}  # type: ignore[attr-defined]
    settings = VoiceSettings(
        **env,
        grpc_port=0,
        voice_sip_port=0,
        voice_rtp_ports="30000-31999",
        voice_max_calls=2000,
        voice_invites_per_second=2000,
        voice_tenants_address=tenants,
        voice_media_address=cell.address("media"),  # type: ignore[attr-defined]
        voice_gateway_address=cell.address("gateway"),  # type: ignore[attr-defined]
        voice_acd_address=cell.address("acd"),  # type: ignore[attr-defined]
        object_store_path=str(folder / "objects"),
    )
    voice, calls = await assemble(settings)
    served = asyncio.create_task(voice.serve())
    async with asyncio.timeout(30):
        while calls._line(NUMBER) is None:  # noqa: ASYNC110 (the channel, from tenant.config)
            await asyncio.sleep(0.2)
    assert calls.endpoint is not None
    said = await Speech(settings.voice_tts_command).say("I would like to talk about my card.", "en")
    audio = folder / "caller.ulaw"
    audio.write_bytes(rtp.encode(said, sdp.PCMU))
    echo_port = _free_port()
    echo = await asyncio.create_subprocess_exec(sys.executable, __file__, "--echo", str(echo_port))
    rows = []
    try:
        for level in levels:
            progress(f"{level} calls at once, {seconds} s of talking each")
            before = calls.ended_count
            ok, failed = await asyncio.to_thread(
                sipp, calls.endpoint.port, level, seconds, audio, folder
            )
            # Each end is told to the platform and its recording kept: that takes a while.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(120):
                    while calls.ended_count - before < ok:  # noqa: ASYNC110 (their BYEs, handled)
                        await asyncio.sleep(0.2)
            ended = list(calls.ended)[-(calls.ended_count - before) :]
            received = sum(c.received for c in ended)
            loss = sum(c.lost for c in ended) / max(1, received + sum(c.lost for c in ended))
            jitter = percentile([c.jitter_ms for c in ended], 0.99)
            setup = [c.setup_ms for c in ended]
            progress(f"raw echo: {level} streams")
            raw_loss, raw_jitter = await raw_echo(echo_port, level, seconds)
            clean = loss <= CLEAN_LOSS and jitter <= CLEAN_JITTER_MS
            rows.append(
                (
                    f"{level} calls: loss / jitter p99",
                    f"{loss * 100:.2f}% / {jitter:.1f} ms{'' if clean else ' (not clean)'}",
                    f"{raw_loss * 100:.2f}% / {raw_jitter:.1f} ms (bare UDP echo)",
                    "",
                    f"<= {CLEAN_LOSS * 100:.0f}% / {CLEAN_JITTER_MS:.0f} ms",
                )
            )
            rows.append(
                (
                    f"{level} calls: set-up p50 / p99",
                    f"{percentile(setup, 0.5):.0f} / {percentile(setup, 0.99):.0f} ms",
                    "",
                    "",
                    f"{ok} answered, {failed} failed",
                )
            )
    finally:
        echo.terminate()
        await echo.wait()
        voice.request_stop()
        await served
    summary(
        f"Calls through one voice process (SIPp callers streaming G.711 for {seconds} s; the "
        "service says each a prompt and receives their audio)",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="10,25,50,100")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        echo_server(args.echo)
        return
    levels = [int(x) for x in args.levels.split(",")]
    with own_cell(["tenants", "media", "ivr", "acd", "gateway"], "voice") as cell:
        asyncio.run(measure(cell, levels, args.seconds))


if __name__ == "__main__":
    main()
