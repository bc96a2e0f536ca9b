"""The terminal clients of `make run` as a new user meets them: a cell that is down is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("command", [["customer"], ["agent", "li.wei"]])
def test_a_cell_that_does_not_answer_is_named_without_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    services = ("tenants", "media", "ivr", "acd", "notification", "recording")
    (tmp_path / "cell.json").write_text(json.dumps({s: "127.0.0.1:1" for s in services}))
    (tmp_path / "demo.json").write_text(json.dumps({"tenant_id": "t", "key": "k"}))
    done = subprocess.run(
        [sys.executable, "-m", "lianluo.cli", *command],
        env={**os.environ, "LIANLUO_STATE_DIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "the local cell does not answer; start it with `make run`" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_running_platform_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lianluo.cli", "customer"],
        env={**os.environ, "LIANLUO_STATE_DIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no running platform found" in done.stderr and "Traceback" not in done.stderr
