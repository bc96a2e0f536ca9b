"""How long a revoked API key, or a person's token after EndSessions, keeps working in another
service: the revocation returns, then the media service is asked with the credential every 5 ms
until it answers UNAUTHENTICATED.

The revocation travels as every configuration change does: the tenants service's outbox relay
publishes it on `tenant.config`, and media's view fetches it (LIANLUO_KAFKA_CONFIG_FETCH_WAIT_MS).
The raw limit is the same wait in the tenants service itself, which refuses at once.
Run:
    .venv/bin/python loadtest/bench/revocation.py [--keys 30]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

POLL_SECONDS = 0.005
PASSWORD = secrets.token_urlsafe(12)
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


async def until_known(call: Any) -> None:
    """Until media knows the credential: NOT_FOUND for the missing interaction, not
    UNAUTHENTICATED."""
    while True:
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                return
        await asyncio.sleep(0.02)


async def measure(tenants: str, media: str, count: int) -> None:
    async with (
        grpc.aio.insecure_channel(tenants) as tch,
        grpc.aio.insecure_channel(media) as mch,
    ):
        keys = rpc.ApiKeyServiceStub(tch)
        users = rpc.UserServiceStub(tch)
        admin = bearer(ADMIN_KEY)
        tenant = await rpc.TenantServiceStub(tch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-revocation")), metadata=admin
        )
        stub = media_rpc.MediaServiceStub(mch)
        agents = rpc.AgentServiceStub(tch)
        get = mpb.GetInteractionRequest(tenant_id=tenant.id, interaction_id=MISSING)

        async def key() -> tuple[Any, Any]:
            created = await keys.CreateApiKey(
                pb.CreateApiKeyRequest(tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT),
                metadata=admin,
            )
            return bearer(created.secret), lambda: keys.RevokeApiKey(
                pb.RevokeApiKeyRequest(tenant_id=tenant.id, api_key_id=created.api_key.id),
                metadata=admin,
            )

        async def person() -> tuple[Any, Any]:
            name = f"p{time.perf_counter_ns()}"
            made = await users.CreateUser(
                pb.CreateUserRequest(
                    tenant_id=tenant.id,
                    user=pb.User(name=name, role=pb.ROLE_TENANT_ADMIN),
                    password=PASSWORD,
                ),
                metadata=admin,
            )
            signed = await rpc.AuthServiceStub(tch).Login(
                pb.LoginRequest(tenant=tenant.name, name=name, password=PASSWORD)
            )
            return bearer(signed.access_token), lambda: users.EndSessions(
                pb.EndSessionsRequest(tenant_id=tenant.id, user_id=made.id), metadata=admin
            )

        rows = []
        for label, make in (("a revoked key", key), ("a person's token after EndSessions", person)):
            in_media: list[float] = []
            in_tenants: list[float] = []
            for n in range(count):
                md, revoke = await make()
                await until_known(lambda md=md: stub.GetInteraction(get, metadata=md))
                await revoke()
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
                        lambda md=md: stub.GetInteraction(get, metadata=md), revoked
                    )
                )
                if (n + 1) % 10 == 0:
                    progress(f"{label}: {n + 1}/{count}")
            rows.append(
                (
                    f"{label}: revocation to refusal in media, p50 / p99 / max",
                    f"{percentile(in_media, 0.5):.0f} / {percentile(in_media, 0.99):.0f} / "
                    f"{max(in_media):.0f} ms",
                    f"{percentile(in_tenants, 0.5):.0f} / {max(in_tenants):.0f} ms "
                    "(tenants itself)",
                    "",
                    "documented bound",
                )
            )
    summary(
        f"Revoked credentials, refused in another service ({count} each, polled every 5 ms)", rows
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
