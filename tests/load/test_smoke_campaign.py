"""The smoke load campaign, headless, against a cell of its own.

Inside `make test` it judges what holds on any machine: no errors (every waiting contact was
offered or overflowed within the harness's waits, every chat message arrived), and every kind of
call was made. Latency SLOs belong to `make loadtest` and the benchmarks.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ADMIN_KEY, Stack, running_cell

from lianluo.devstack.cell import Cell

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")


@pytest.fixture(scope="module")
def cell(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    folder = Path(tmp_path_factory.mktemp("load-cell"))
    with running_cell(stack, folder, f"load_{uuid.uuid4().hex[:10]}") as running:
        yield running


@pytest.mark.timeout(170)
def test_smoke_campaign_has_no_errors_and_every_message_arrives(cell: Cell, tmp_path: Path) -> None:
    (tmp_path / "cell.json").write_text(
        json.dumps({r.service: r.address for r in cell.running if r.index == 0})
    )
    report = tmp_path / "smoke"
    done = subprocess.run(
        [
            str(LOCUST),
            "--config",
            "loadtest/profiles/smoke.conf",
            "--cell",
            str(tmp_path / "cell.json"),
            "--run-time",
            "25s",
            "--csv",
            str(report),
            "--html",
            str(tmp_path / "smoke.html"),
            "--only-summary",
            "--latency-slos",
            "off",
            "--slo-error-percent",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "LIANLUO_ADMIN_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "SLOs met." in done.stderr
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "smoke_stats.csv").open())}
    for name in ("contact to offer", "relay customer to agent", "relay agent to customer"):
        assert int(rows[name]["Request Count"]) > 0, f"nothing measured for {name}"
    failures = {n: r["Failure Count"] for n, r in rows.items() if int(r["Failure Count"]) > 0}
    assert not failures, f"failed calls or journeys: {failures}"
    for call in ("media.StartInteraction", "acd.RespondToOffer", "acd.QueueStats", "media.End"):
        assert int(rows[call]["Request Count"]) > 0, f"no {call} reported"
    assert (tmp_path / "smoke.html").stat().st_size > 10_000, "the HTML report was written"
