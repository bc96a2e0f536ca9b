"""A simple gRPC read (tenants GetTenant) as a share of a raw grpc.aio echo server.

Both servers run as their own processes on this machine and are driven by the same client, in
alternating rounds, so a noisy neighbour hits both alike. Run:
    .venv/bin/python loadtest/bench/grpc_read.py [--seconds 8] [--rounds 3] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary

from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

TARGET = 0.6
ECHO = "/bench.Echo/Echo"
PAYLOAD = b"x" * 200  # the message size of the raw limit in TOOLCHAIN.md


async def serve_echo(port: int) -> None:
    """The raw limit: a grpc.aio server that returns the bytes it is given, nothing else."""

    async def echo(request: bytes, _: object) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def drive(
    call: Callable[[], Awaitable[object]], seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    """Calls per second and latencies (ms) with `concurrency` calls always in flight."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - start), latencies


async def measure(tenants: str, echo_port: int, args: argparse.Namespace) -> None:
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    async with (
        grpc.aio.insecure_channel(tenants) as tch,
        grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as ech,
    ):
        stub = rpc.TenantServiceStub(tch)
        tenant = await stub.CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-read")),
            metadata=admin,
        )
        echo = ech.unary_unary(ECHO)
        read_req = pb.GetTenantRequest(tenant_id=tenant.id)

        def read() -> Awaitable[object]:
            return stub.GetTenant(read_req, metadata=admin)

        def raw() -> Awaitable[object]:
            return echo(PAYLOAD)

        await drive(read, 1, 10)  # warm both paths up
        await drive(raw, 1, 10)
        reads, raws, read_lat, raw_lat = [], [], [], []
        for n in range(args.rounds):
            for name, call, rates, lats in (
                ("raw echo", raw, raws, raw_lat),
                ("GetTenant", read, reads, read_lat),
            ):
                rate, lat = await drive(call, args.seconds, args.concurrency)
                rates.append(rate)
                lats.extend(lat)
                progress(f"round {n + 1}/{args.rounds}: {name} {rate:,.0f} calls/s")
    read_rate, raw_rate = statistics.median(reads), statistics.median(raws)
    summary(
        f"gRPC read vs raw grpc.aio echo ({args.concurrency} concurrent calls, "
        f"{args.rounds} x {args.seconds:g} s each, medians)",
        [
            (
                "tenants GetTenant, calls/s",
                f"{read_rate:,.0f}",
                f"{raw_rate:,.0f} (echo)",
                f"{read_rate / raw_rate:.2f}",
                f">= {TARGET}",
            ),
            (
                "latency p50 / p99, ms",
                f"{percentile(read_lat, 0.5):.1f} / {percentile(read_lat, 0.99):.1f}",
                f"{percentile(raw_lat, 0.5):.1f} / {percentile(raw_lat, 0.99):.1f}",
                "",
                "",
            ),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(serve_echo(args.echo_server))
        return 0
    port = 56000 + os.getpid() % 4000
    echo = subprocess.Popen([sys.executable, __file__, "--echo-server", str(port)])
    try:
        with own_cell(["tenants"], "read") as cell:
            asyncio.run(measure(cell.address("tenants"), port, args))
    finally:
        echo.terminate()
        echo.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
