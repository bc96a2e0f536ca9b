"""A Kafka event round trip through a service (the IVR: interaction.created in, its first
prompt out on ivr.output) as a share of a raw aiokafka consume-then-produce loop.

The raw loop runs as its own process on the same broker, over topics with the same partition
count, driven by the same client in the same run. Run:
    .venv/bin/python loadtest/bench/kafka_roundtrip.py [--burst 2000] [--paced 300 --rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
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

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import envelope_pb2, interaction_pb2, ivr_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.kafka import new_envelope
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

TARGET = 0.5


async def measure(cell_env: dict[str, str], tenants: str, args: argparse.Namespace) -> None:
    bootstrap = cell_env["LIANLUO_KAFKA_BOOTSTRAP_SERVERS"]
    prefix = cell_env["LIANLUO_TOPIC_PREFIX"]
    raw_rate, raw_lat = await raw_limit(bootstrap, prefix, args)
    tenant_id = await _tenant_with_flow(tenants)

    def created(key: str) -> bytes:
        iid = str(uuid.UUID(key))
        it = mpb.Interaction(
            id=iid,
            tenant_id=tenant_id,
            channel=common.CHANNEL_WEB,
            state=mpb.INTERACTION_STATE_CREATED,
            entry_flow="bench",
        )
        event = interaction_pb2.InteractionEvent(interaction_id=iid, created=it)
        return new_envelope("interaction.created", tenant_id, event, "bench").SerializeToString()

    def prompted(value: bytes) -> str | None:
        out = ivr_pb2.IvrOutput()
        envelope_pb2.Envelope.FromString(value).payload.Unpack(out)
        return out.interaction_id.replace("-", "")

    async with Probe(bootstrap, f"{prefix}ivr.output", prompted) as probe:
        progress("waiting until the IVR knows the bench tenant's flow")
        await probe.warm_up(f"{prefix}interaction.event", created, tenant_id.encode())
        svc_rate, svc_lat = await campaign(
            probe, f"{prefix}interaction.event", created, tenant_id.encode(), args, "IVR"
        )
    summary(
        "Kafka round trip through the IVR vs a raw aiokafka consume-then-produce loop",
        [
            (
                "round trips/s (burst)",
                f"{svc_rate:,.0f}",
                f"{raw_rate:,.0f}",
                f"{svc_rate / raw_rate:.2f}",
                f">= {TARGET}",
            ),
            (
                f"round trip p50 / p99 ms at {args.rate}/s",
                f"{percentile(svc_lat, 0.5):.0f} / {percentile(svc_lat, 0.99):.0f}",
                f"{percentile(raw_lat, 0.5):.0f} / {percentile(raw_lat, 0.99):.0f}",
                "",
                "",
            ),
        ],
    )


async def _tenant_with_flow(address: str) -> str:
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    async with grpc.aio.insecure_channel(address) as ch:
        tenant = await rpc.TenantServiceStub(ch).CreateTenant(
            pb.CreateTenantRequest(tenant=bench_tenant("bench-kafka")),
            metadata=admin,
        )
        menu = pb.MenuNode(
            prompt="Sales or support?",
            choices=[
                pb.MenuChoice(digit="1", label="Sales", next="end"),
            ],
            no_match_next="end",
        )
        flow = pb.Flow(
            name="bench",
            entry_node="menu",
            nodes=[
                pb.FlowNode(id="menu", menu=menu),
                pb.FlowNode(id="end", end=pb.EndNode(text="Bye.")),
            ],
        )
        await rpc.FlowServiceStub(ch).PutFlow(
            pb.PutFlowRequest(tenant_id=tenant.id, flow=flow), metadata=admin
        )
        return str(tenant.id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    args = parser.parse_args()
    with own_cell(["tenants", "ivr"], "kafka") as cell:
        asyncio.run(measure(cell.env, cell.address("tenants"), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
