"""A local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.

No kubelet runs, so pods stay Pending; the controller manager runs only its garbage collector,
so owner references clean up children while Deployment and Job status stay as written.
Usage: python -m lianluo.devstack.k8s build|tools|up|down|status [--state DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lianluo.devstack import helm, k8s_build

HOST = "127.0.0.1"
_ETCD = Path("/usr/bin/etcd")
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0
# The shell backgrounds the server and exits, so the server outlives a CLI caller.
_LAUNCHER = '"$@" </dev/null >>"$LOG" 2>&1 & echo $!'
_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


class ClusterError(RuntimeError):
    """The local control plane could not be started or stopped."""


@dataclass(frozen=True)
class Cluster:
    """How to reach a running local API server."""

    state_dir: Path
    server: str
    token: str
    kubeconfig: Path

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"


def default_state_dir() -> Path:
    from lianluo.devstack import infra

    return infra.StackConfig.from_env().state_dir / "k8s"


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {result.stderr.decode()[-500:]}")


def _make_pki(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1, and a service-account key pair."""
    if (pki / "apiserver.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-days", "3650", "-subj",
             "/CN=lianluo-local-ca", "-out", "ca.crt", cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "apiserver.key", "2048", cwd=pki)
    _openssl("req", "-new", "-key", "apiserver.key", "-subj", "/CN=kube-apiserver",
             "-out", "apiserver.csr", cwd=pki)  # fmt: skip
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "san.ext", "-out", "apiserver.crt",
             cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, token: str, ca: Path) -> None:
    """A kubeconfig for the API server at `server`, as the holder of `token`."""
    # JSON is valid YAML, and every kubeconfig reader accepts it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def _launch(name: str, argv: list[str], state: Path) -> int:
    log = state / f"{name}.log"
    proc = subprocess.run(
        ["/bin/sh", "-c", _LAUNCHER, "sh", *argv],
        env={**os.environ, "LOG": str(log)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=state,
        start_new_session=True,
        timeout=10,
        check=False,
    )
    try:
        pid = int(proc.stdout.decode().strip())
    except ValueError:
        raise ClusterError(f"could not launch {name}: {proc.stderr.decode()[-500:]}") from None
    (state / f"{name}.pid").write_text(f"{pid}\n")
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return True
    return not stat or stat[0] not in {"Z", "X"}


def _pid(state: Path, name: str) -> int | None:
    try:
        pid = int((state / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # The recorded pid may have been reused by an unrelated process since.
    comm = Path(f"/proc/{pid}/comm")
    with contextlib.suppress(OSError):
        if comm.read_text().strip() != name[:15]:
            return None
    return pid if _alive(pid) else None


def _tail(state: Path, name: str) -> str:
    try:
        lines = (state / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in lines)


def _wait(name: str, state: Path, probe: str, token: str | None, ca: Path | None) -> None:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if _pid(state, name) is None:
            raise ClusterError(f"{name} exited while starting:\n{_tail(state, name)}")
        with contextlib.suppress(OSError):
            request = urllib.request.Request(probe, headers=headers)  # noqa: S310
            with urllib.request.urlopen(request, timeout=2, context=context) as reply:  # noqa: S310
                if reply.status == 200:
                    return
        time.sleep(0.3)
    raise ClusterError(f"{name} not ready after {_READY_TIMEOUT:.0f}s:\n{_tail(state, name)}")


def up(state_dir: Path | None = None, controller_manager: bool = True) -> Cluster:
    """Start the control plane and wait until it is ready; the binaries come from `make install`.

    Nothing is built or downloaded here, so a test never waits on the network or a compiler.
    """
    state = (state_dir or default_state_dir()).absolute()
    running = load(state)
    if running is not None:
        return running
    if not k8s_build.is_built():
        raise ClusterError(
            f"kube-apiserver is not built in {k8s_build.bin_dir()}: run `make install` first"
        )
    state.mkdir(parents=True, exist_ok=True)
    pki = state / "pki"
    _make_pki(pki)
    token = secrets.token_urlsafe(32)
    (state / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    (state / "tokens.csv").chmod(0o600)
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    server = f"https://{HOST}:{api_port}"
    etcd_url = f"http://{HOST}:{etcd_port}"
    peer_url = f"http://{HOST}:{peer_port}"
    kubeconfig = state / "kubeconfig"
    write_kubeconfig(kubeconfig, server, token, pki / "ca.crt")
    _say(f"starting etcd on {etcd_url}")
    _launch("etcd", [str(_ETCD), "--name", "local", "--data-dir", str(state / "etcd"),
                     "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                     "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                     "--initial-cluster", f"local={peer_url}"], state)  # fmt: skip
    _wait("etcd", state, f"{etcd_url}/health", None, None)
    _say(f"starting kube-apiserver on {server}")
    _launch("kube-apiserver", [
        str(k8s_build.binary("kube-apiserver")), f"--etcd-servers={etcd_url}",
        f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={api_port}",
        "--insecure-port=0", f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}", f"--client-ca-file={pki / 'ca.crt'}",
        f"--token-auth-file={state / 'tokens.csv'}", "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
    ], state)  # fmt: skip
    _wait("kube-apiserver", state, f"{server}/readyz", token, pki / "ca.crt")
    if controller_manager:
        # Only the garbage collector: the deployment and job controllers would overwrite the
        # status that tests write in place of the kubelet that is missing here.
        _say("starting kube-controller-manager (garbage collector only)")
        _launch("kube-controller-manager", [
            str(k8s_build.binary("kube-controller-manager")), f"--kubeconfig={kubeconfig}",
            "--controllers=garbagecollector", "--leader-elect=false", "--port=0",
            "--secure-port=0", "--use-service-account-credentials=false",
        ], state)  # fmt: skip
        time.sleep(0.5)
        if _pid(state, "kube-controller-manager") is None:
            raise ClusterError(
                f"kube-controller-manager exited:\n{_tail(state, 'kube-controller-manager')}"
            )
    cluster = Cluster(state, server, token, kubeconfig)
    (state / "cluster.json").write_text(json.dumps({"server": server, "token": token}))
    return cluster


def load(state_dir: Path | None = None) -> Cluster | None:
    """The cluster recorded in `state_dir`, if its API server is still running."""
    state = (state_dir or default_state_dir()).absolute()
    try:
        info = json.loads((state / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    if _pid(state, "kube-apiserver") is None:
        return None
    return Cluster(state, info["server"], info["token"], state / "kubeconfig")


def down(state_dir: Path | None = None) -> None:
    """Stop exactly the processes recorded in `state_dir`, the API server first."""
    state = (state_dir or default_state_dir()).absolute()
    for name in reversed(_COMPONENTS):
        pid = _pid(state, name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_TIMEOUT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        (state / f"{name}.pid").unlink(missing_ok=True)
    (state / "cluster.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lianluo.devstack.k8s", description=__doc__)
    parser.add_argument("action", choices=["build", "tools", "up", "down", "status"])
    parser.add_argument("--state", type=Path, default=None, help="state folder")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(k8s_build.build())
        elif args.action == "tools":
            print(helm.tools())
        elif args.action == "up":
            cluster = up(args.state)
            print(f"API server {cluster.server}\nexport KUBECONFIG={cluster.kubeconfig}")
        elif args.action == "down":
            down(args.state)
        else:
            found = load(args.state)
            print(
                f"running at {found.server} (KUBECONFIG={found.kubeconfig})" if found else "stopped"
            )
    except (ClusterError, k8s_build.BuildError) as error:
        print(f"k8s {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
