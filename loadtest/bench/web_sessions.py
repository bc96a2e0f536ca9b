"""Web chat sessions one gateway process holds, and its memory per idle session, next to a raw
WebSocket echo server (aiohttp, nothing else) holding as many idle sockets in the same run.

Each gateway session is a browser's WebSocket and, behind it, the customer's Connect stream to
media. Run:
    .venv/bin/python loadtest/bench/web_sessions.py [--sessions 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, progress, rss_kb, summary
from sessions import free_port

from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

ORIGIN = "http://bench.example.test"


def serve_raw_echo(port: int) -> None:
    """The raw limit, in a process of its own as the gateway is: an aiohttp WebSocket server
    that sends back what it gets."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def until_served(url: str, accept: tuple[int, ...] = (200,)) -> None:
    """Until `url` answers (the gateway has learnt the channel; the echo server listens)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(150):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                if (await http.get(url)).status in accept:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} does not answer")


async def hold(url: str, pid: int, count: int, hello: bool) -> tuple[float, int]:
    """KB the server's memory grows by per idle socket, and the sockets still open."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        before = rss_kb(pid)
        sockets = []
        for n in range(count):
            ws = await http.ws_connect(url, origin=ORIGIN)
            if hello:
                await ws.send_json({"type": "hello", "name": f"visitor {n}"})
                await ws.receive_json(timeout=30)  # welcome
            else:
                await ws.send_str("ping")
                await ws.receive(timeout=30)
            sockets.append(ws)
            if (n + 1) % 200 == 0:
                progress(f"{n + 1}/{count} sockets open on {url}")
        await asyncio.sleep(2)
        grown = (rss_kb(pid) - before) / count
        open_now = sum(1 for ws in sockets if not ws.closed)
        for ws in sockets:
            await ws.close()
    return grown, open_now


async def measure(
    cell_addresses: dict[str, str], gateway_pid: int, gateway: str, count: int
) -> None:
    async with grpc.aio.insecure_channel(cell_addresses["tenants"]) as tch:
        admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
        tenant = await rpc.TenantServiceStub(tch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-web")), metadata=admin
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
    url = folder.replace("http", "ws", 1) + "ws"
    port = free_port()
    raw = multiprocessing.Process(target=serve_raw_echo, args=(port,), daemon=True)
    raw.start()
    await until_served(f"http://127.0.0.1:{port}/ws", accept=(400, 405))
    try:
        raw_kb, raw_open = await hold(f"ws://127.0.0.1:{port}/ws", raw.pid or 0, count, False)
        gateway_kb, gateway_open = await hold(url, gateway_pid, count, True)
    finally:
        raw.terminate()
    summary(
        f"Web chat sessions held by one gateway process ({count} idle sessions)",
        [
            (
                "sessions open at the end (gateway / raw echo)",
                f"{gateway_open} / {raw_open}",
                "",
                "",
                f"{count}",
            ),
            (
                "memory per idle session",
                f"{gateway_kb:.1f} KB",
                f"{raw_kb:.1f} KB (a bare aiohttp WebSocket)",
                f"{raw_kb / gateway_kb:.2f}" if gateway_kb > 0 else "",
                "",
            ),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    count = parser.parse_args().sessions
    with own_cell(["tenants", "media", "gateway"], "web") as cell:
        gateway = cell.replica("gateway")
        addresses = {s: cell.address(s) for s in ("tenants", "media")}
        asyncio.run(measure(addresses, gateway.process.pid, gateway.http_url, count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
