"""A Kafka event round trip through a service (the IVR: interaction.created in, its first
prompt out on ivr.output) as a share of a raw aiokafka consume-then-produce loop.

The raw loop runs as its own process on the same broker, over topics with the same partition
count, driven by the same client in the same run. Run:
    .venv/bin/python loadtest/bench/kafka_roundtrip.py [--burst 2000] [--paced 300 --rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).parent))
import grpc
from common import ADMIN_KEY, bench_tenant, own_cell, percentile, progress, summary

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import envelope_pb2, interaction_pb2, ivr_pb2
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.kafka import FETCH_MAX_WAIT_MS, ensure_topics, new_envelope
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

TARGET = 0.5
PARTITIONS = 8


async def raw_loop(bootstrap: str, source: str, sink: str) -> None:
    """The raw limit: consume a record, produce it again, nothing else (no database)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    parts = [TopicPartition(source, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    print("ready", flush=True)
    while True:
        for records in (await consumer.getmany(timeout_ms=100, max_records=500)).values():
            for record in records:
                await producer.send(sink, record.value, key=record.key)


class Probe:
    """Sends events to one topic and times their answers on another."""

    def __init__(self, bootstrap: str, sink: str, answer_id: Callable[[bytes], str | None]):
        self.bootstrap, self.sink, self.answer_id = bootstrap, sink, answer_id
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}

    async def __aenter__(self) -> Probe:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        await self.producer.start()
        await self.consumer.start()
        parts = [TopicPartition(self.sink, p) for p in range(PARTITIONS)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        self.reader.cancel()
        await self.producer.stop()
        await self.consumer.stop()

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=50)).values():
                for record in records:
                    key = self.answer_id(record.value)
                    if key in self.sent and key not in self.arrived:
                        self.arrived[key] = time.perf_counter()

    async def send(self, topic: str, key: str, value: bytes, tenant: bytes) -> None:
        self.sent[key] = time.perf_counter()
        await self.producer.send(topic, value, key=tenant)

    async def wait(self, keys: list[str], seconds: float) -> float:
        """Seconds until every key was answered (inf if some never were)."""
        start = time.perf_counter()
        while any(k not in self.arrived for k in keys):
            if time.perf_counter() - start > seconds:
                return float("inf")
            await asyncio.sleep(0.02)
        return max(self.arrived[k] for k in keys) - min(self.sent[k] for k in keys)

    def latencies(self, keys: list[str]) -> list[float]:
        return [(self.arrived[k] - self.sent[k]) * 1000 for k in keys if k in self.arrived]


async def campaign(
    probe: Probe,
    topic: str,
    make: Callable[[str], bytes],
    tenant: bytes,
    args: argparse.Namespace,
    label: str,
) -> tuple[float, list[float]]:
    paced = [uuid.uuid4().hex for _ in range(args.paced)]
    progress(f"{label}: {args.paced} events paced at {args.rate}/s")
    for key in paced:
        await probe.send(topic, key, make(key), tenant)
        await asyncio.sleep(1 / args.rate)
    await probe.wait(paced, 60)
    burst = [uuid.uuid4().hex for _ in range(args.burst)]
    progress(f"{label}: burst of {args.burst} events")
    for key in burst:
        await probe.send(topic, key, make(key), tenant)
    took = await probe.wait(burst, 300)
    rate = len(burst) / took
    progress(f"{label}: {rate:,.0f} round trips/s")
    return rate, probe.latencies(paced)


async def measure(cell_env: dict[str, str], tenants: str, args: argparse.Namespace) -> None:
    bootstrap = cell_env["LIANLUO_KAFKA_BOOTSTRAP_SERVERS"]
    prefix = cell_env["LIANLUO_TOPIC_PREFIX"]
    raw_in, raw_out = f"{prefix}raw.in", f"{prefix}raw.out"
    await ensure_topics(bootstrap, [raw_in, raw_out], PARTITIONS)
    loop = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, __file__, "--raw-loop", bootstrap, raw_in, raw_out],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert loop.stdout is not None
        assert loop.stdout.readline().strip() == "ready"
        async with Probe(bootstrap, raw_out, lambda v: v.decode()) as probe:
            raw_rate, raw_lat = await campaign(
                probe, raw_in, lambda k: k.encode(), b"raw", args, "raw loop"
            )
    finally:
        loop.terminate()
        loop.wait()
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
        for _ in range(60):
            key = uuid.uuid4().hex
            await probe.send(f"{prefix}interaction.event", key, created(key), tenant_id.encode())
            if await probe.wait([key], 2) != float("inf"):
                break
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
    parser.add_argument("--raw-loop", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_loop:
        asyncio.run(raw_loop(*args.raw_loop))
        return 0
    with own_cell(["tenants", "ivr"], "kafka") as cell:
        asyncio.run(measure(cell.env, cell.address("tenants"), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
