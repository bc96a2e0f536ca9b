"""Build a real kube-apiserver and kube-controller-manager once, and fetch kubectl and helm.

The binaries come from Debian's own `kubernetes` source package, built with Debian's Go, and are
cached under ~/.cache/lianluo (never in the checkout). All functions are synchronous.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from lianluo.devstack.helm import cache_dir

KUBE_VERSION = "1.20.2"
_SOURCE_VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
_GO_ROOT = Path("/usr/lib/go-1.19")
_REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
_APT_PACKAGES = {
    # package -> a path that shows it is installed
    "golang-1.19-go": _GO_ROOT / "bin" / "go",
    "golang-github-modern-go-reflect2-dev": _REFLECT2,
    "etcd-server": Path("/usr/bin/etcd"),
    "rsync": Path("/usr/bin/rsync"),
    "jq": Path("/usr/bin/jq"),
    "dpkg-dev": Path("/usr/bin/dpkg-source"),
    "openssl": Path("/usr/bin/openssl"),
    "make": Path("/usr/bin/make"),
}
_SYSTEM_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
_BINARIES = ("kube-apiserver", "kube-controller-manager")
_HEARTBEAT_SECONDS = 20.0


class BuildError(RuntimeError):
    """The Kubernetes toolchain could not be installed, fetched or built."""


def bin_dir() -> Path:
    return cache_dir() / "k8s" / f"v{KUBE_VERSION}" / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name


def is_built() -> bool:
    return all(os.access(binary(name), os.X_OK) for name in _BINARIES)


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _run(argv: list[str], **kwargs: object) -> None:
    result = subprocess.run(argv, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise BuildError(f"{' '.join(argv[:4])} ... exited with {result.returncode}")


def ensure_apt_packages() -> None:
    """apt-get install whatever the build and the local control plane need, if missing."""
    missing = [pkg for pkg, marker in _APT_PACKAGES.items() if not marker.exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(f"missing Debian packages {missing}; install them as root")
    _say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def _source_entries(system_sources: str) -> str:
    """The machine's own deb822 entries, turned into deb-src entries (mirrors stay as they are)."""
    stanzas = []
    for stanza in system_sources.split("\n\n"):
        lines = [line for line in stanza.splitlines() if line and not line.startswith("#")]
        if not any(line.startswith("Types:") for line in lines):
            continue
        lines = ["Types: deb-src" if line.startswith("Types:") else line for line in lines]
        stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas) + "\n"


def _apt_options(apt_root: Path) -> list[str]:
    # A private configuration: the machine's apt setup is left exactly as it was.
    return [
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={apt_root / 'sources.list.d'}",
        "-o",
        f"Dir::State::Lists={apt_root / 'lists'}",
        "-o",
        f"Dir::Cache={apt_root / 'cache'}",
        "-o",
        "APT::Sandbox::User=root",
    ]


def fetch_source(work: Path) -> Path:
    """Download and unpack Debian's kubernetes source package; return its folder."""
    existing = sorted(p for p in work.glob("kubernetes-*") if p.is_dir())
    if existing and (existing[0] / "Makefile").exists():
        return existing[0]
    apt_root = work / "apt"
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (apt_root / sub).mkdir(parents=True, exist_ok=True)
    try:
        system = _SYSTEM_SOURCES.read_text()
    except OSError as exc:
        raise BuildError(f"cannot read {_SYSTEM_SOURCES}: {exc}") from None
    (apt_root / "sources.list.d" / "debian-src.sources").write_text(_source_entries(system))
    options = _apt_options(apt_root)
    _say("reading Debian's source index (private apt configuration)")
    _run(["apt-get", *options, "update", "-q"])
    # apt-get update exits 0 even when no mirror answered; say so instead of letting
    # `apt-get source` blame the sources list.
    if not any((apt_root / "lists").glob("*Sources*")):
        raise BuildError(
            "could not read Debian's source index: is Debian's package network reachable? "
            f"(sources: {apt_root / 'sources.list.d'})"
        )
    _say(f"downloading the kubernetes source package {_SOURCE_VERSION}")
    _run(["apt-get", *options, "source", "-q", f"kubernetes={_SOURCE_VERSION}"], cwd=work)
    found = sorted(p for p in work.glob("kubernetes-*") if p.is_dir())
    if not found:
        raise BuildError(f"apt-get source left no kubernetes-* folder in {work}")
    return found[0]


def _patch_reflect2(source: Path) -> None:
    # The vendored reflect2 1.0.1 crashes at start on Go 1.18 and later; Debian's 1.0.2 does not.
    vendored = source / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not vendored.is_dir():
        raise BuildError(f"no vendored reflect2 at {vendored}")
    if (vendored / ".lianluo-patched").exists():
        return
    shutil.rmtree(vendored)
    shutil.copytree(_REFLECT2, vendored, ignore=shutil.ignore_patterns("*_test.go", "test*"))
    (vendored / ".lianluo-patched").write_text("Debian golang-github-modern-go-reflect2-dev\n")


def _heartbeat(label: str, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(_HEARTBEAT_SECONDS):
        _say(f"{label}: still building, {time.monotonic() - started:.0f}s so far")


def _make(source: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{_GO_ROOT / 'bin'}:{os.environ.get('PATH', '')}",
        "GOROOT": str(_GO_ROOT),
        "CGO_ENABLED": "0",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=vendor",
        "GOCACHE": str(source.parent / "gocache"),
        "KUBE_VERBOSE": "1",
    }
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=("kubernetes", stop), daemon=True)
    beat.start()
    try:
        _run(["make", f"WHAT={' '.join('cmd/' + name for name in _BINARIES)}"], cwd=source, env=env)
    finally:
        stop.set()


def build(force: bool = False) -> Path:
    """Build kube-apiserver and kube-controller-manager into the cache, unless already there."""
    if is_built() and not force:
        return bin_dir()
    ensure_apt_packages()
    work = cache_dir() / "k8s" / "build"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = fetch_source(work)
    _patch_reflect2(source)
    _say(f"building {' and '.join(_BINARIES)} v{KUBE_VERSION} (about 6 minutes on 2 cores)")
    _make(source)
    built = list((source / "_output").rglob("kube-apiserver"))
    if not built:
        raise BuildError(f"the build left no kube-apiserver under {source / '_output'}")
    out = built[0].parent
    bin_dir().mkdir(parents=True, exist_ok=True)
    for name in _BINARIES:
        # Copy then rename, so a half-written binary never looks built.
        tmp = binary(name).with_suffix(".tmp")
        shutil.copy2(out / name, tmp)
        tmp.chmod(0o755)
        tmp.replace(binary(name))
    _say(f"built in {time.monotonic() - started:.0f}s into {bin_dir()}")
    # The unpacked source and Go cache take several GB; the binaries are all that is kept.
    shutil.rmtree(work, ignore_errors=True)
    return bin_dir()
