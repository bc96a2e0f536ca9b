"""The terminal clients of `make run` as a new user meets them: a cell that is down is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(state: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lianluo.cli", *command],
        env={**os.environ, "LIANLUO_STATE_DIR": str(state)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["customer"], ["agent", "li.wei"]])
def test_a_cell_that_does_not_answer_is_named_without_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    services = ("tenants", "media", "ivr", "acd", "notification", "recording")
    (tmp_path / "cell.json").write_text(json.dumps({s: "127.0.0.1:1" for s in services}))
    demo = {"tenant_id": "t", "tenant": "demo-bank", "key": "k", "password": "p" * 12}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    done = run_cli(tmp_path, *command)
    assert done.returncode == 1
    assert "the local cell does not answer; start it with `make run`" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_running_platform_is_named(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "customer")
    assert done.returncode == 1
    assert "no running platform found" in done.stderr and "Traceback" not in done.stderr
