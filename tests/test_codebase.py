"""Guards on the codebase itself: generated code matches its protos, and the import contracts
(the runtime imports no service, services never import each other) hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_the_protos() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lianluo.devstack.protos", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_hold() -> None:
    done = subprocess.run(
        [str(BIN / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
