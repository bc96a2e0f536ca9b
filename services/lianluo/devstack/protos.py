"""Generate the Python code for every .proto under protos/, beside its source.

`python -m lianluo.devstack.protos` writes it; `--check` fails when the committed code drifts
from what the sources generate (the CI guard against forgetting to regenerate).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parents[3] / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _sources() -> list[Path]:
    return sorted(PROTOS.glob("lianluo/**/*.proto"))


def _generated(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.glob("lianluo/**/*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def generate(out: Path) -> None:
    """Run protoc (python, grpc and mypy stubs) for every source into `out`."""
    well_known = resources.files("grpc_tools") / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *[str(p) for p in _sources()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    check = parser.parse_args(argv).check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        wanted, present = _generated(fresh), _generated(PROTOS)
        if check:
            drift = sorted(
                str(p)
                for p in wanted | present
                if p not in wanted
                or p not in present
                or not filecmp.cmp(fresh / p, PROTOS / p, shallow=False)
            )
            if drift:
                print("generated code drifted; run `make protos` and commit:", *drift, sep="\n  ")
                return 1
            print(f"generated code matches {len(wanted)} files")
            return 0
        for stale in present - wanted:
            (PROTOS / stale).unlink()
        for path in wanted:
            (PROTOS / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / path, PROTOS / path)
        print(f"generated {len(wanted)} files from {len(_sources())} protos")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
