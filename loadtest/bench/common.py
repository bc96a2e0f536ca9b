"""What the benchmarks share: a cell of their own, the machine's description, the summary, and
the raw Kafka limit (a consume-then-produce loop) with the probe that times event round trips.

The raw loop runs as a process of its own: python loadtest/bench/common.py --raw-loop BOOTSTRAP
SOURCE SINK (raw_limit starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack import infra
from lianluo.devstack.cell import Cell
from lianluo.runtime.kafka import FETCH_MAX_WAIT_MS, ensure_topics
from lianluo.tenants.v1 import tenants_pb2 as pb

ADMIN_KEY = "bench-admin-" + secrets.token_urlsafe(24)
PARTITIONS = 8


# The benchmarks measure the platform, not a plan: their tenant's quotas are out of reach.
UNBOUNDED = pb.Quotas(
    max_concurrent_interactions=10_000_000,
    max_agents=10_000_000,
    api_calls_per_second=10_000_000,
    events_per_second=10_000_000,
)


def bench_tenant(name: str, quotas: pb.Quotas = UNBOUNDED) -> pb.Tenant:
    return pb.Tenant(
        name=name,
        plan=pb.PLAN_BUSINESS,
        expected_concurrent_sessions=50_000,
        channels=[common.CHANNEL_WEB],
        quotas=quotas,
    )


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} cores, {cpu}, {mem_kb / 1024 / 1024:.1f} GiB, "
        f"Python {platform.python_version()}"
    )


@contextmanager
def own_cell(
    services: list[str], label: str, extra: dict[str, str] | None = None
) -> Iterator[Cell]:
    """The named services of a fresh cell: its own database and topic prefix, real processes
    (`extra`: more LIANLUO_ settings)."""
    config = infra.StackConfig.from_env()
    started = infra.up(config)
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    infra.create_database(config.database_url, name)
    base = config.database_url.rsplit("/", 1)[0]
    env = {
        "LIANLUO_DATABASE_URL": f"{base}/{name}",
        "LIANLUO_KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap,
        "LIANLUO_ADMIN_KEY": ADMIN_KEY,
        "LIANLUO_TOPIC_PREFIX": f"{name}.",
        "LIANLUO_SHUTDOWN_GRACE_SECONDS": "5",
        # Benchmarks measure the path, not the log volume of every call.
        "LIANLUO_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }
    cell = Cell(env, Path(tempfile.mkdtemp(prefix=f"lianluo-{name}-")))
    try:
        progress(f"starting {', '.join(services)} (database {name})")
        cell.start(services)
        yield cell
    finally:
        cell.stop()
        if started:
            infra.down(config, only=started)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(title: str, rows: list[tuple[str, str, str, str, str]]) -> None:
    """figure | measured | raw limit | ratio | target, as a table on stdout."""
    head = ("figure", "measured", "raw limit (same run)", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\nmachine: {machine()}\n")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print()


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

    async def warm_up(
        self, topic: str, make: Callable[[str], bytes], tenant: bytes, tries: int = 60
    ) -> int:
        """Send one event at a time until one is answered within 2 s (the service consumes and
        knows the tenant); return how many were sent."""
        for sent in range(1, tries + 1):
            key = uuid.uuid4().hex
            await self.send(topic, key, make(key), tenant)
            if await self.wait([key], 2) != float("inf"):
                return sent
        return tries

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


async def raw_limit(
    bootstrap: str, prefix: str, args: argparse.Namespace
) -> tuple[float, list[float]]:
    """The raw loop's campaign: the loop in a process of its own, on topics of the cell's prefix
    with the services' partition count; its burst rate and paced latencies."""
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
            return await campaign(probe, raw_in, lambda k: k.encode(), b"raw", args, "raw loop")
    finally:
        loop.terminate()
        loop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the raw consume-then-produce loop")
    parser.add_argument("--raw-loop", nargs=3, required=True)
    asyncio.run(raw_loop(*parser.parse_args().raw_loop))
