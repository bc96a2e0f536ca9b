"""Contact to agent offer under the steady campaign, against a cell of its own.

The floor is the same figure on the same cell with one customer at a time (measured first, in
the same run); the steady figure is then taken under the steady profile. Run:
    .venv/bin/python loadtest/bench/contact_offer.py [--run-time 3m] [--floor-time 30s]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ADMIN_KEY, own_cell, progress, summary

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")
TARGET_MS = 150.0
NAME = "contact to offer"


def campaign(cell_file: Path, out: Path, extra: list[str]) -> dict[str, str]:
    """Run the steady profile headless (with overrides); the stats row of contact to offer."""
    command = [
        str(LOCUST),
        "--config",
        "loadtest/profiles/steady.conf",
        "--cell",
        str(cell_file),
        "--csv",
        str(out),
        "--html",
        f"{out}.html",
        *extra,
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "LIANLUO_ADMIN_KEY": ADMIN_KEY},
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    table = done.stderr[done.stderr.rfind("Campaign summary") :]
    print(table, file=sys.stderr)
    with Path(f"{out}_stats.csv").open() as stats:
        rows = {r["Name"]: r for r in csv.DictReader(stats)}
    return rows[NAME]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-time", default="3m")
    parser.add_argument("--floor-time", default="30s")
    parser.add_argument("--reports", default="reports/bench-contact-offer")
    args = parser.parse_args()
    reports = ROOT / args.reports
    reports.mkdir(parents=True, exist_ok=True)
    with own_cell([], "offer") as cell, tempfile.TemporaryDirectory() as tmp:
        cell_file = Path(tmp) / "cell.json"
        cell_file.write_text(json.dumps({r.service: r.address for r in cell.running}))
        progress(f"floor: one customer at a time, two agents, {args.floor_time}")
        floor = campaign(
            cell_file,
            reports / "floor",
            [
                # Two agents and a supervisor leave one customer: one contact at a time.
                "--users",
                "4",
                "--spawn-rate",
                "4",
                "--agents",
                "2",
                "--supervisors",
                "1",
                "--run-time",
                args.floor_time,
            ],
        )
        progress(f"steady profile, {args.run_time} (progress below every few seconds)")
        steady = campaign(cell_file, reports / "steady", ["--run-time", args.run_time])
    p95, floor95 = float(steady["95%"]), float(floor["95%"])
    summary(
        "Contact to agent offer (routing request to the offer on the agent's desk stream)",
        [
            (
                f"p95 under steady ({steady['Request Count']} offers)",
                f"{p95:.0f} ms",
                f"{floor95:.0f} ms (one contact at a time)",
                f"{floor95 / p95:.2f}",
                f"p95 < {TARGET_MS:.0f} ms",
            ),
            (
                "p50 under steady",
                f"{float(steady['50%']):.0f} ms",
                f"{float(floor['50%']):.0f} ms",
                "",
                "",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
