"""How long a revoked API key keeps working in another service: RevokeApiKey returns, then the
media service is asked with the key every 5 ms until it answers UNAUTHENTICATED.

The revocation travels as every configuration change does: the tenants service's outbox relay
publishes it on `tenant.config`, and media's view fetches it (LIANLUO_KAFKA_CONFIG_FETCH_WAIT_MS).
The raw limit is the same wait in the tenants service itself, which refuses the key at once.
Run:
    .venv/bin/python loadtest/bench/revocation.py [--keys 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

POLL_SECONDS = 0.005
MISSING = "00000000-0000-0000-0000-000000000000"


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def refused_after(call: object, started: float) -> float:
    """Milliseconds from `started` until `call()` is refused as UNAUTHENTICATED."""
    while True:
        try:
            await call()  # type: ignore[operator]
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                return (time.perf_counter() - started) * 1000
        await asyncio.sleep(POLL_SECONDS)


async def measure(tenants: str, media: str, count: int) -> None:
    async with (
        grpc.aio.insecure_channel(tenants) as tch,
        grpc.aio.insecure_channel(media) as mch,
    ):
        keys = rpc.ApiKeyServiceStub(tch)
        tenant = await rpc.TenantServiceStub(tch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-revocation")),
            metadata=bearer(ADMIN_KEY),
        )
        stub = media_rpc.MediaServiceStub(mch)
        agents = rpc.AgentServiceStub(tch)
        in_media: list[float] = []
        in_tenants: list[float] = []
        for n in range(count):
            created = await keys.CreateApiKey(
                pb.CreateApiKeyRequest(tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT),
                metadata=bearer(ADMIN_KEY),
            )
            md = bearer(created.secret)
            get = mpb.GetInteractionRequest(tenant_id=tenant.id, interaction_id=MISSING)
            # Until media knows the key: NOT_FOUND for the missing interaction, not UNAUTHENTICATED.
            while True:
                try:
                    await stub.GetInteraction(get, metadata=md)
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                        break
                await asyncio.sleep(0.02)
            await keys.RevokeApiKey(
                pb.RevokeApiKeyRequest(tenant_id=tenant.id, api_key_id=created.api_key.id),
                metadata=bearer(ADMIN_KEY),
            )
            revoked = time.perf_counter()
            in_tenants.append(
                await refused_after(
                    lambda md=md: agents.ListAgents(
                        pb.ListAgentsRequest(tenant_id=tenant.id), metadata=md
                    ),
                    revoked,
                )
            )
            in_media.append(
                await refused_after(
                    lambda get=get, md=md: stub.GetInteraction(get, metadata=md), revoked
                )
            )
            if (n + 1) % 10 == 0:
                progress(f"{n + 1}/{count} keys revoked")
    summary(
        f"A revoked key, refused in another service ({count} keys, polled every 5 ms)",
        [
            (
                "revocation to refusal in media, p50 / p99 / max",
                f"{percentile(in_media, 0.5):.0f} / {percentile(in_media, 0.99):.0f} / "
                f"{max(in_media):.0f} ms",
                f"{percentile(in_tenants, 0.5):.0f} / {max(in_tenants):.0f} ms (tenants itself)",
                "",
                "documented bound",
            )
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=30)
    count = parser.parse_args().keys
    with own_cell(["tenants", "media"], "revocation") as cell:
        asyncio.run(measure(cell.address("tenants"), cell.address("media"), count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
