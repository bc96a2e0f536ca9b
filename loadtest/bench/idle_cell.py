"""What an idle cell costs in CPU, with the development fetch waits and with Kafka's default.

Run: .venv/bin/python loadtest/bench/idle_cell.py [--seconds 20]

Starts every cell service (one replica each, no tenant, no traffic) with the fetch wait set, lets
it settle, then reads the CPU time each process (and the broker and Postgres) used over the
window from /proc. The raw limit is the broker and Postgres alone over the same window, before
the cell starts: what the machine spends with no cell at all. The development defaults: 20 ms
on the per-contact path and for the tenant configuration (a hop's latency on the local broker is
about half of it), 250 ms for the recording and notification consumers. Then 500 ms for every
consumer, Kafka's default.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import own_cell, progress, summary

from lianluo.devstack import infra
from lianluo.services import CELL_SERVICES

TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cores(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """The share of one core each process used over `seconds`."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


def infra_pids() -> dict[str, int]:
    config = infra.StackConfig.from_env()
    return {s.name: s.pid for s in infra.status(config) if s.pid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    seconds = parser.parse_args().seconds
    config = infra.StackConfig.from_env()
    started = infra.up(config)
    try:
        base = infra_pids()
        progress(f"the broker and Postgres alone, {seconds:.0f}s")
        alone = sum(cores(base, seconds).values())
        rows = [measure(wait, seconds, base, alone) for wait in (None, 500)]
    finally:
        if started:
            infra.down(config, only=started)
    summary("Idle cell", rows)


def measure(
    wait: int | None, seconds: float, base: dict[str, int], alone: float
) -> tuple[str, str, str, str, str]:
    """With `wait` ms for every event consumer, or the development defaults when None."""
    env = (
        {}
        if wait is None
        else {
            "LIANLUO_KAFKA_FETCH_WAIT_MS": str(wait),
            "LIANLUO_KAFKA_CONFIG_FETCH_WAIT_MS": str(wait),
        }
    )
    label = "development defaults" if wait is None else f"{wait} ms"
    with own_cell(CELL_SERVICES, f"idle{wait or 'dev'}", env) as cell:
        time.sleep(SETTLE_SECONDS)
        pids = {**base, **{f"{r.service}#{r.index + 1}": r.process.pid for r in cell.running}}
        progress(f"fetch wait {label}: measuring {len(pids)} processes for {seconds:.0f}s")
        used = cores(pids, seconds)
    detail = ", ".join(f"{k} {v:.2f}" for k, v in sorted(used.items(), key=lambda i: -i[1]))
    progress(f"fetch wait {label}: {detail}")
    total = sum(used.values())
    services = sum(v for k, v in used.items() if "#" in k)
    return (
        f"idle cell, fetch wait {label} (cores)",
        f"{total:.2f} (services {services:.2f}, broker {used.get('kafka', 0):.2f})",
        f"{alone:.2f} (broker and Postgres alone)",
        "",
        "≤ 0.2 on the local broker" if wait is None else "",
    )


if __name__ == "__main__":
    main()
