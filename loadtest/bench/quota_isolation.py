"""Does one tenant's burst over its quota slow another tenant? The calm tenant reads its queue
figures (AcdService/QueueStats) from 4 concurrent callers, first alone (the raw limit), then
while a noisy tenant, limited to 100 calls/s, calls as fast as 64 concurrent callers can.

Run:
    .venv/bin/python loadtest/bench/quota_isolation.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary

from lianluo.acd.v1 import acd_pb2 as apb
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

NOISY_RATE = 100


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def tenant_with_key(tch: grpc.aio.Channel, name: str, quotas: pb.Quotas | None) -> Any:
    made = bench_tenant(name) if quotas is None else bench_tenant(name, quotas)
    t = await rpc.TenantServiceStub(tch).CreateTenant(
        pb.CreateTenantRequest(tenant=made), metadata=bearer(ADMIN_KEY)
    )
    key = await rpc.ApiKeyServiceStub(tch).CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT),
        metadata=bearer(ADMIN_KEY),
    )
    return t, bearer(key.secret)


async def callers(
    stub: Any, tenant_id: str, md: Any, count: int, until: float, latencies: list[float] | None
) -> tuple[int, int]:
    """`count` callers in a loop until `until`: (answered, throttled)."""
    answered = throttled = 0

    async def one() -> None:
        nonlocal answered, throttled
        request = apb.QueueStatsRequest(tenant_id=tenant_id)
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                await stub.QueueStats(request, metadata=md)
                answered += 1
                if latencies is not None:
                    latencies.append((time.perf_counter() - started) * 1000)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                throttled += 1

    await asyncio.gather(*[one() for _ in range(count)])
    return answered, throttled


async def measure(tenants: str, acd: str, seconds: float) -> None:
    async with (
        grpc.aio.insecure_channel(tenants) as tch,
        grpc.aio.insecure_channel(acd) as ach,
    ):
        calm, calm_md = await tenant_with_key(tch, "bench-calm", None)
        noisy, noisy_md = await tenant_with_key(
            tch, "bench-noisy", pb.Quotas(api_calls_per_second=NOISY_RATE)
        )
        stub = acd_rpc.AcdServiceStub(ach)
        for t, md in ((calm, calm_md), (noisy, noisy_md)):
            while True:  # until the ACD knows the tenant and its key
                try:
                    await stub.QueueStats(apb.QueueStatsRequest(tenant_id=t.id), metadata=md)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        alone: list[float] = []
        await callers(stub, calm.id, calm_md, 4, time.perf_counter() + seconds, alone)
        progress(f"calm alone: {len(alone)} calls")
        beside: list[float] = []
        until = time.perf_counter() + seconds
        (calm_done, calm_throttled), (noisy_done, noisy_throttled) = await asyncio.gather(
            callers(stub, calm.id, calm_md, 4, until, beside),
            callers(stub, noisy.id, noisy_md, 64, until, None),
        )
        progress(f"beside the burst: calm {calm_done}, noisy {noisy_done} + {noisy_throttled}")
    summary(
        f"A burst over one tenant's quota beside another tenant ({seconds:g} s each)",
        [
            (
                "calm tenant's QueueStats p50 / p99 beside the burst",
                f"{percentile(beside, 0.5):.1f} / {percentile(beside, 0.99):.1f} ms",
                f"{percentile(alone, 0.5):.1f} / {percentile(alone, 0.99):.1f} ms alone",
                f"{percentile(alone, 0.99) / percentile(beside, 0.99):.2f}",
                "",
            ),
            (
                "calm tenant's calls refused",
                str(calm_throttled),
                "",
                "",
                "0",
            ),
            (
                f"noisy tenant (quota {NOISY_RATE}/s): answered / refused per second",
                f"{noisy_done / seconds:.0f} / {noisy_throttled / seconds:.0f}",
                "",
                "",
                f"<= {NOISY_RATE} answered",
            ),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    seconds = parser.parse_args().seconds
    with own_cell(["tenants", "acd"], "quotas") as cell:
        asyncio.run(measure(cell.address("tenants"), cell.address("acd"), seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
