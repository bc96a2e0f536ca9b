"""Routing over the real broker through the ACD (routing.request in, the offer out on
routing.decision) as a share of a raw aiokafka consume-then-produce loop.

The second half of the ACD benchmark; the first, acd_decisions.py, decides in-process. Here one
tenant has one chat queue and enough available agents (200 x 10 chats by default) for every
request to get an offer; the bench publishes routing requests as the IVR does and reads the
offers. Offers are never answered, so they would time out after 20 s and be offered again,
work the raw loop does not have: the ACD of this bench runs with the longest offer timeout
(600 s) unless LIANLUO_OFFER_TIMEOUT_SECONDS says otherwise.

The raw loop runs as its own process on the same broker, over topics with the same partition
count, driven by the same client in the same run. Run:
    .venv/bin/python loadtest/bench/acd_routing.py [--burst 1000] [--paced 200 --rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import grpc
from common import (
    ADMIN_KEY,
    Probe,
    bench_tenant,
    campaign,
    own_cell,
    percentile,
    progress,
    raw_limit,
    summary,
)

from lianluo.acd.v1 import acd_pb2 as acd
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import envelope_pb2, ivr_pb2, routing_pb2
from lianluo.runtime.kafka import new_envelope, unpack
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

TARGET = 0.5
QUEUE, SKILL = "chat", "chat"
OFFER = "routing.offer"
WARM_UP_TRIES = 60
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


def chat_queue() -> pb.Queue:
    return pb.Queue(
        name=QUEUE,
        display_name="Chat",
        required_skills=[common.SkillLevel(skill=SKILL, level=3)],
        priority=5,
        service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
        # Nothing overflows during the run.
        max_wait_seconds=3600,
        overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
        media=common.MEDIA_TYPE_CHAT,
    )


def chat_agent(index: int, capacity: int) -> pb.Agent:
    return pb.Agent(
        name=f"bench-agent-{index:04d}",
        display_name=f"Bench agent {index}",
        kind=pb.AGENT_KIND_STAFF,
        skills=[common.SkillLevel(skill=SKILL, level=5 + index % 5)],
        languages=["en"],
        capacity=[pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=capacity)],
    )


async def _tenant_with_agents(tenants: str, acd_address: str, args: argparse.Namespace) -> str:
    """A tenant with one chat queue and `args.agents` agents, every one AVAILABLE in the ACD."""
    async with grpc.aio.insecure_channel(tenants) as ch:
        tenant = await rpc.TenantServiceStub(ch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-acd")), metadata=ADMIN
        )
        await rpc.QueueServiceStub(ch).CreateQueue(
            pb.CreateQueueRequest(tenant_id=tenant.id, queue=chat_queue()), metadata=ADMIN
        )
        progress(f"creating {args.agents} agents x {args.capacity} chats")
        agents = rpc.AgentServiceStub(ch)
        agent_ids = [
            (
                await agents.CreateAgent(
                    pb.CreateAgentRequest(tenant_id=tenant.id, agent=chat_agent(i, args.capacity)),
                    metadata=ADMIN,
                )
            ).id
            for i in range(args.agents)
        ]
    async with grpc.aio.insecure_channel(acd_address) as ch:
        stub = acd_rpc.AcdServiceStub(ch)
        progress("setting every agent AVAILABLE (SetPresence)")
        for agent_id in agent_ids:
            await _available(stub, tenant.id, agent_id)
        progress("waiting until QueueStats shows them available")
        await _until_available(stub, tenant.id, len(agent_ids))
    return str(tenant.id)


async def _available(stub: acd_rpc.AcdServiceStub, tenant_id: str, agent_id: str) -> None:
    """SetPresence AVAILABLE, retried while the ACD has not yet followed the configuration."""
    request = acd.SetPresenceRequest(
        tenant_id=tenant_id, agent_id=agent_id, presence=acd.PRESENCE_AVAILABLE
    )
    async with asyncio.timeout(60):
        while True:
            try:
                await stub.SetPresence(request, metadata=ADMIN)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.2)


async def _until_available(stub: acd_rpc.AcdServiceStub, tenant_id: str, agents: int) -> None:
    request = acd.QueueStatsRequest(tenant_id=tenant_id, queues=[QUEUE])
    available = -1
    async with asyncio.timeout(120):
        while available < agents:
            await asyncio.sleep(0.5)
            try:
                stats = await stub.QueueStats(request, metadata=ADMIN)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            available = stats.queues[0].agents_available


async def measure(
    cell_env: dict[str, str], tenants: str, acd_address: str, args: argparse.Namespace
) -> None:
    bootstrap = cell_env["LIANLUO_KAFKA_BOOTSTRAP_SERVERS"]
    prefix = cell_env["LIANLUO_TOPIC_PREFIX"]
    raw_rate, raw_lat = await raw_limit(bootstrap, prefix, args)
    started = time.perf_counter()
    tenant_id = await _tenant_with_agents(tenants, acd_address, args)
    progress(f"tenant ready in {time.perf_counter() - started:.1f} s")

    def requested(key: str) -> bytes:
        request = ivr_pb2.RoutingRequest(
            interaction_id=str(uuid.UUID(key)),
            requirements=common.RoutingRequirements(queue=QUEUE),
        )
        return new_envelope("routing.requested", tenant_id, request, "bench").SerializeToString()

    seen: Counter[str] = Counter()

    def offered(value: bytes) -> str | None:
        envelope = envelope_pb2.Envelope.FromString(value)
        seen[envelope.type] += 1
        if envelope.type != OFFER:
            return None
        return unpack(envelope, routing_pb2.RoutingDecision).interaction_id.replace("-", "")

    topic = f"{prefix}routing.request"
    async with Probe(bootstrap, f"{prefix}routing.decision", offered) as probe:
        progress("waiting until the ACD consumes routing requests and offers")
        await probe.warm_up(topic, requested, tenant_id.encode(), WARM_UP_TRIES)
        svc_rate, svc_lat = await campaign(probe, topic, requested, tenant_id.encode(), args, "ACD")
        unanswered = len(probe.sent) - len(probe.arrived)
        first, last = _halves(sorted(probe.arrived.values())[-args.burst :])
    progress(f"decisions read: {dict(seen)}; requests without an offer: {unanswered}")
    summary(
        "Routing over the broker through the ACD vs a raw aiokafka consume-then-produce loop",
        [
            (
                "decisions/s (burst)",
                f"{svc_rate:,.0f}",
                f"{raw_rate:,.0f}",
                f"{svc_rate / raw_rate:.3f}",
                f">= {TARGET}",
            ),
            (
                "decisions/s, first / second half of burst",
                f"{first:,.0f} / {last:,.0f}",
                "",
                "",
                "",
            ),
            (
                f"request to offer p50 / p99 ms at {args.rate:g}/s",
                f"{percentile(svc_lat, 0.5):.0f} / {percentile(svc_lat, 0.99):.0f}",
                f"{percentile(raw_lat, 0.5):.0f} / {percentile(raw_lat, 0.99):.0f}",
                "",
                "",
            ),
        ],
    )


def _halves(arrivals: list[float]) -> tuple[float, float]:
    """Offers/s over the first and the second half of the burst's offers: every offer stays
    pending, so the tenant's state grows through the burst. (Halves, not smaller slices:
    offers arrive in the outbox's batches, so a short slice can fall inside one batch.)"""
    half = len(arrivals) // 2
    if half < 2:
        return float("nan"), float("nan")
    return half / (arrivals[half] - arrivals[0]), half / (arrivals[-1] - arrivals[half])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=10, help="chats per agent (1 to 100)")
    args = parser.parse_args()
    if args.agents * args.capacity < args.paced + args.burst + WARM_UP_TRIES:
        parser.error("agents x capacity must cover paced + burst + 60 warm-up requests")
    os.environ.setdefault("LIANLUO_OFFER_TIMEOUT_SECONDS", "600")
    with own_cell(["tenants", "acd"], "acd") as cell:
        asyncio.run(measure(cell.env, cell.address("tenants"), cell.address("acd"), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
