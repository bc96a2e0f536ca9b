"""Files sent from the web chat: uploads per second through one gateway process (checked,
stored with their sha256, recorded, and sent into the conversation as a message) and their
latency, next to the raw limit measured in the same run: the same bytes put straight into the
same object store through obstore, with nothing else.

The per-chat flood limit (LIANLUO_GATEWAY_SESSION_MESSAGES_PER_SECOND) is lifted for the run, so
the figure is the gateway's, not the limit's. Run:
    .venv/bin/python loadtest/bench/attachments.py [--files 300] [--kb 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
import uuid
import zlib
from pathlib import Path

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary
from web_sessions import ORIGIN, until_served

from lianluo.runtime.objects import Objects, tenant_key
from lianluo.runtime.settings import ObjectStoreSettings
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc


def png(size: int) -> bytes:
    """A real PNG of about `size` bytes (incompressible pixels, so it stays that large)."""
    width = 256
    rows = max(1, size // (width * 3))
    raw = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, rows, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


async def raw_puts(folder: str, data: bytes, count: int) -> list[float]:
    objects = Objects(ObjectStoreSettings(object_store_path=folder))
    took = []
    for _ in range(count):
        start = time.perf_counter()
        await objects.put(tenant_key("raw", "attachments", str(uuid.uuid4())), data, "image/png")
        took.append(time.perf_counter() - start)
    return took


async def uploads(url: str, data: bytes, count: int) -> list[float]:
    took = []
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            headers = {
                "Origin": ORIGIN,
                "Content-Type": "image/png",
                "X-Filename": f"photo-{n}.png",
                "X-Message-Id": f"b{n}",
            }
            start = time.perf_counter()
            async with http.post(url, data=data, headers=headers) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"upload {n}: {answer.status} {await answer.text()}")
            took.append(time.perf_counter() - start)
            if (n + 1) % 100 == 0:
                progress(f"{n + 1}/{count} uploads")
    return took


async def measure(tenants: str, gateway: str, objects_dir: str, count: int, size: int) -> None:
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    async with grpc.aio.insecure_channel(tenants) as tch:
        tenant = await rpc.TenantServiceStub(tch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-files")), metadata=admin
        )
        await rpc.QueueServiceStub(tch).CreateQueue(
            pb.CreateQueueRequest(
                tenant_id=tenant.id,
                queue=pb.Queue(
                    name="web",
                    priority=5,
                    max_wait_seconds=86_400,
                    media=2,
                    service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
                    overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
                ),
            ),
            metadata=admin,
        )
        channel = await rpc.ChannelServiceStub(tch).CreateChannel(
            pb.CreateChannelRequest(
                tenant_id=tenant.id,
                channel=pb.Channel(
                    name="site", queue="web", web=pb.WebChat(allowed_origins=[ORIGIN])
                ),
            ),
            metadata=admin,
        )
    folder = f"{gateway}/v1/web/{tenant.id}/{channel.id}/"
    await until_served(folder + "widget.js")
    data = png(size)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(folder.replace("http", "ws", 1) + "ws", origin=ORIGIN)
        await ws.send_json({"type": "hello", "name": "bench"})
        welcome = await ws.receive_json(timeout=30)
        upload = gateway + welcome["upload"]
        raw = await raw_puts(objects_dir, data, count)
        through = await uploads(upload, data, count)
        await ws.close()
    ms = 1000.0
    summary(
        f"Files from the web chat through one gateway process ({count} files of "
        f"{len(data) / 1024:.0f} KB, one after another)",
        [
            (
                "files per second",
                f"{count / sum(through):.0f}",
                f"{count / sum(raw):.0f} (obstore put, same store)",
                f"{sum(raw) / sum(through):.2f}",
                "",
            ),
            (
                "latency p50 / p99",
                f"{percentile(through, 0.5) * ms:.1f} / {percentile(through, 0.99) * ms:.1f} ms",
                f"{percentile(raw, 0.5) * ms:.1f} / {percentile(raw, 0.99) * ms:.1f} ms",
                "",
                "",
            ),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--kb", type=int, default=256)
    args = parser.parse_args()
    extra = {"LIANLUO_GATEWAY_SESSION_MESSAGES_PER_SECOND": "1000"}
    with own_cell(["tenants", "media", "gateway"], "files", extra) as cell:
        # The raw limit writes beside the gateway's own store: the same disk.
        objects_dir = str(cell.log_dir.parent / "raw-objects")
        asyncio.run(
            measure(
                cell.address("tenants"),
                cell.replica("gateway").http_url,
                objects_dir,
                args.files,
                args.kb * 1024,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
