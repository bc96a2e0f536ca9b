"""Concurrent sessions one cell holds: N open customer streams, mostly idle, some active.

Reports the media replica's memory per idle session and the relay latency (a customer's
message back on the customer's own stream, through Postgres, the outbox, Kafka and the relay)
at set message rates. Run:
    .venv/bin/python loadtest/bench/sessions.py [--sessions 5000] [--active 200]
        [--rates 200,2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, rss_kb, summary

from lianluo.common.v1 import common_pb2 as common
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

STREAMS_PER_CHANNEL = 1000  # several HTTP/2 connections, as many clients would have
RAW = "/bench.Relay/Echo"


def serve_raw_relay(port: int) -> None:
    """The raw limit, in a process of its own as media is: a grpc.aio server whose streams
    send back each message they get, with nothing in between."""

    async def echo(requests: object, _: object) -> object:
        async for message in requests:  # type: ignore[attr-defined]
            yield message

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Relay", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


class RawStream:
    """One stream to the raw relay, timed like a Session."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: dict[bytes, float] = {}
        self.relay_ms: list[float] = []
        self.call = channel.stream_stream(RAW)(self._frames())
        self.task = asyncio.create_task(self._read())

    async def _frames(self):  # type: ignore[no-untyped-def]
        while True:
            yield await self.outgoing.get()

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # cancelled when the run ends
            async for message in self.call:
                sent = self.sent.pop(message, None)
                if sent is not None:
                    self.relay_ms.append((time.perf_counter() - sent) * 1000)

    def send(self) -> None:
        message = uuid.uuid4().hex.encode() + b"Is my parcel on its way?"
        self.sent[message] = time.perf_counter()
        self.outgoing.put_nowait(message)

    async def echoed(self) -> None:
        """Send one message and wait for it back: the stream is open on the server."""
        self.send()
        while self.sent:
            if self.task.done():
                raise RuntimeError(f"a raw stream ended: {await self.call.code()}")
            await asyncio.sleep(0.01)


async def pace(streams: list[Any], rate: int, seconds: float) -> tuple[list[float], int]:
    """Send `rate` messages/s round-robin over `streams`; the latencies (ms) and the count sent."""
    for st in streams:
        st.relay_ms.clear()
    begin, sent = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - begin) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            streams[sent % len(streams)].send()
            sent += 1
        await asyncio.sleep(0.005)
    await asyncio.sleep(3)
    return [ms for st in streams for ms in st.relay_ms], sent


class Session:
    """One customer's Connect stream; notes when each of its own messages comes back."""

    def __init__(self, channel: grpc.aio.Channel, md: object, join: mpb.Join) -> None:
        self.outgoing: asyncio.Queue[mpb.ClientFrame] = asyncio.Queue()
        self.outgoing.put_nowait(mpb.ClientFrame(join=join))
        self.joined = asyncio.Event()
        self.sent: dict[str, float] = {}
        self.relay_ms: list[float] = []
        self.call = media_rpc.MediaServiceStub(channel).Connect(self._frames(), metadata=md)
        self.task = asyncio.create_task(self._read())

    async def _frames(self):  # type: ignore[no-untyped-def]
        while True:
            yield await self.outgoing.get()

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # cancelled when the run ends
            async for frame in self.call:
                if frame.WhichOneof("frame") == "joined":
                    self.joined.set()
                sent = self.sent.pop(frame.message.client_message_id, None)
                if sent is not None:
                    self.relay_ms.append((time.perf_counter() - sent) * 1000)

    def send(self) -> None:
        cmid = uuid.uuid4().hex
        self.sent[cmid] = time.perf_counter()
        content = mpb.MessageContent(text="Is my parcel on its way?")
        self.outgoing.put_nowait(
            mpb.ClientFrame(send=mpb.SendMessage(client_message_id=cmid, content=content))
        )


async def setup(tenants: str) -> tuple[str, str]:
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    async with grpc.aio.insecure_channel(tenants) as ch:
        tenant = await rpc.TenantServiceStub(ch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-sessions")),
            metadata=admin,
        )
        key = await rpc.ApiKeyServiceStub(ch).CreateApiKey(
            pb.CreateApiKeyRequest(tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT),
            metadata=admin,
        )
        await rpc.QueueServiceStub(ch).CreateQueue(
            pb.CreateQueueRequest(
                tenant_id=tenant.id,
                queue=pb.Queue(
                    name="hold",
                    priority=5,
                    max_wait_seconds=86400,
                    media=common.MEDIA_TYPE_CHAT,
                    overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
                    service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
                ),
            ),
            metadata=admin,
        )
        return str(tenant.id), str(key.secret)


async def open_session(channel: grpc.aio.Channel, tenant_id: str, md: object, n: int) -> Session:
    media = media_rpc.MediaServiceStub(channel)
    for attempt in range(100):
        try:
            started = await media.StartInteraction(
                mpb.StartInteractionRequest(
                    tenant_id=tenant_id,
                    request_id=f"s{n}",
                    channel=common.CHANNEL_WEB,
                    media=common.MEDIA_TYPE_CHAT,
                    queue="hold",
                    customer=mpb.Customer(id=f"c{n}"),
                ),
                metadata=md,
            )
            break
        except grpc.aio.AioRpcError as error:  # media still learning the tenant
            if attempt == 99 or error.code() not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                raise
            await asyncio.sleep(0.3)
    session = Session(
        channel,
        md,
        mpb.Join(
            tenant_id=tenant_id,
            interaction_id=started.interaction.id,
            role=mpb.PARTICIPANT_ROLE_CUSTOMER,
            subject_id=f"c{n}",
        ),
    )
    await asyncio.wait_for(session.joined.wait(), 30)
    return session


async def measure(
    cell_media: str, media_pid: int, tenants: str, raw_port: int, args: argparse.Namespace
) -> None:
    tenant_id, key = await setup(tenants)
    md = (("authorization", f"Bearer {key}"),)
    channels = [
        grpc.aio.insecure_channel(cell_media, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, args.sessions // STREAMS_PER_CHANNEL))
    ]
    await open_session(channels[0], tenant_id, md, -1)  # warm-up; also waits for the config
    await asyncio.sleep(2)
    before = rss_kb(media_pid)
    sessions: list[Session] = []
    gate = asyncio.Semaphore(40)
    started = time.perf_counter()

    async def one(n: int) -> None:
        async with gate:
            sessions.append(await open_session(channels[n % len(channels)], tenant_id, md, n))
            if len(sessions) % 1000 == 0:
                rate = len(sessions) / (time.perf_counter() - started)
                progress(f"{len(sessions):,}/{args.sessions:,} sessions open ({rate:,.0f}/s)")

    await asyncio.gather(*(one(n) for n in range(args.sessions)))
    await asyncio.sleep(5)
    after = rss_kb(media_pid)
    per_idle = (after - before) / args.sessions
    progress(f"media RSS {before / 1024:,.0f} -> {after / 1024:,.0f} MiB: {per_idle:.1f} KB each")
    rows = [
        (
            "open sessions (one cell)",
            f"{len(sessions):,}",
            "",
            f"{len(sessions) / 50_000:.2f}",
            ">= 50,000",
        ),
        (
            "media memory per idle session",
            f"{per_idle:.1f} KB",
            "raw_stream_memory.py",
            f"{per_idle / 10:.2f}",
            "<= 10 KB",
        ),
    ]
    active = sessions[: args.active]
    raw_channel = grpc.aio.insecure_channel(f"127.0.0.1:{raw_port}")
    raw = [RawStream(raw_channel) for _ in range(len(active))]
    for rate in args.rates:
        progress(f"relay at {rate:,} msg/s over {len(active)} active sessions, {args.seconds:g} s")
        lat, sent = await pace(active, rate, args.seconds)
        progress(f"raw relay at {rate:,} msg/s over {len(raw)} streams, {args.seconds:g} s")
        raw_lat, _ = await pace(raw, rate, args.seconds)
        lost = sent - len(lat)
        p99, raw_p99 = percentile(lat, 0.99), percentile(raw_lat, 0.99)
        rows.append(
            (
                f"relay p50 / p99 at {rate:,} msg/s",
                f"{percentile(lat, 0.5):.0f} / {p99:.0f} ms" + (f" ({lost} late)" if lost else ""),
                f"{percentile(raw_lat, 0.5):.1f} / {raw_p99:.1f} ms (raw grpc.aio relay)",
                f"{raw_p99 / p99:.2f}" if p99 else "",
                "p99 < 50 ms at 2,000 msg/s",
            )
        )
    for st in raw:
        st.call.cancel()
    await raw_channel.close()
    summary(f"Sessions held by one cell ({args.sessions:,} open, {args.active} active)", rows)
    for s in sessions:
        s.call.cancel()
    for ch in channels:
        await ch.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--active", type=int, default=200)
    parser.add_argument("--rates", default="200,2000")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    raw_port = free_port()
    relay = multiprocessing.Process(target=serve_raw_relay, args=(raw_port,), daemon=True)
    relay.start()
    try:
        with own_cell(["tenants", "media"], "sessions") as cell:
            replica = next(r for r in cell.running if r.service == "media")
            media = (replica.address, replica.process.pid, cell.address("tenants"))
            asyncio.run(measure(*media, raw_port, args))
    finally:
        relay.terminate()
        relay.join(10)
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
