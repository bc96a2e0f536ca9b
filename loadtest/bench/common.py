"""What the benchmarks share: a cell of their own, the machine's description, the summary."""

from __future__ import annotations

import os
import platform
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack import infra
from lianluo.devstack.cell import Cell
from lianluo.tenants.v1 import tenants_pb2 as pb

ADMIN_KEY = "bench-admin-" + secrets.token_urlsafe(24)


def bench_tenant(name: str) -> pb.Tenant:
    return pb.Tenant(
        name=name,
        plan=pb.PLAN_BUSINESS,
        expected_concurrent_sessions=50_000,
        channels=[common.CHANNEL_WEB],
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
def own_cell(services: list[str], label: str) -> Iterator[Cell]:
    """The named services of a fresh cell: its own database and topic prefix, real processes."""
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
