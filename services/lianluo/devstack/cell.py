"""One local cell: every service of the platform as its own process, some in several replicas.

Used by `lianluo run` and by the end-to-end tests, so both exercise the same thing: real
processes, talking over the real broker and Postgres.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lianluo.services import LOCAL_SERVICES

# Where `lianluo run` serves the web chat and takes e-mail (other local cells take free ports).
GATEWAY_HTTP_PORT = 8088
GATEWAY_SMTP_PORT = 2525
CONSOLE_HTTP_PORT = 8089
# Where `lianluo run` takes phone calls (SIP over UDP and TCP) and their audio (RTP).
VOICE_SIP_PORT = 5060
VOICE_RTP_PORTS = "20000-20999"


@dataclass
class Replica:
    service: str
    index: int
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    # The HTTP port of the gateway (its customers' channels) and of the console (people's
    # pages), the voice service's SIP port, and the gateway's SMTP port; 0 for the others.
    http_port: int = 0
    smtp_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class Cell:
    """Processes of one cell; `env` holds the LIANLUO_ settings they share."""

    env: dict[str, str]
    log_dir: Path
    first_port: int = 0
    replicas: dict[str, int] = field(default_factory=dict)
    running: list[Replica] = field(default_factory=list)
    # The ports (gRPC, HTTP, SMTP) of each service's first replica, known before any starts.
    _first: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def start(self, services: list[str] | None = None) -> None:
        """Start every service (or the named ones); wait until each answers health."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        names = list(services or LOCAL_SERVICES)
        if not self.first_port and "gateway" in names:
            # Free ports are taken as each service starts (one chosen earlier could be taken
            # meanwhile by a connection's own port), so the gateway, which notification and
            # recording name, starts right after the services it calls itself.
            names.remove("gateway")
            calls = [names.index(n) + 1 for n in ("tenants", "media") if n in names]
            names.insert(max(calls, default=0), "gateway")
        fixed = {"gateway": GATEWAY_HTTP_PORT, "console": CONSOLE_HTTP_PORT}
        # The voice service's SIP port is kept where the others keep HTTP.
        fixed["voice"] = VOICE_SIP_PORT
        if self.first_port:
            # Fixed ports follow the list's order, so a service may name one started after it.
            port = self.first_port
            for name in names:
                smtp = GATEWAY_SMTP_PORT if name == "gateway" else 0
                self._first[name] = (port + 1, fixed.get(name, 0), smtp)
                port += self.replicas.get(name, 1)
        port = self.first_port
        for name in names:
            for i in range(self.replicas.get(name, 1)):
                port = port + 1 if self.first_port else _free_port()
                http = smtp = 0
                if name in fixed:
                    http = fixed[name] if self.first_port else _free_port()
                if name == "gateway":
                    smtp = GATEWAY_SMTP_PORT if self.first_port else _free_port()
                if i == 0:
                    self._first.setdefault(name, (port, http, smtp))
                log = self.log_dir / f"{name}-{i}.log"
                print(
                    f"==> starting {name}{f' #{i + 1}' if i else ''} on 127.0.0.1:{port}",
                    file=sys.stderr,
                )
                process = self._spawn(name, port, log, http, smtp)
                self.running.append(Replica(name, i, port, process, log, http, smtp))
        for replica in self.running:
            asyncio.run(wait_serving(replica.port, 90, replica))

    def _spawn(
        self, name: str, port: int, log: Path, http_port: int, smtp_port: int
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "LIANLUO_GRPC_PORT": str(port)}
        # One object store for the cell (a bucket in production): a directory beside the logs,
        # where the gateway keeps files, voice keeps calls, and recording purges both.
        env.setdefault("LIANLUO_OBJECT_STORE_PATH", str(self.log_dir.parent / "objects"))
        if name == "gateway":
            # The gateway calls the cell's tenants and media services, started before it.
            env |= {
                "LIANLUO_GATEWAY_HTTP_PORT": str(http_port),
                "LIANLUO_GATEWAY_SMTP_PORT": str(smtp_port),
                "LIANLUO_GATEWAY_TENANTS_ADDRESS": self.address("tenants"),
                "LIANLUO_GATEWAY_MEDIA_ADDRESS": self.address("media"),
            }
        gateway = self._first.get("gateway")
        if name == "notification" and gateway:
            env["LIANLUO_NOTIFICATION_GATEWAY_ADDRESS"] = f"127.0.0.1:{gateway[0]}"
        if name == "recording" and gateway:
            env["LIANLUO_RECORDING_LINK_BASE_URL"] = f"http://127.0.0.1:{gateway[1]}"
        if name == "console":
            # The console calls the cell's services with the signed-in person's token; on
            # http://127.0.0.1 its cookie cannot be Secure.
            env |= {
                "LIANLUO_CONSOLE_HTTP_PORT": str(http_port),
                "LIANLUO_CONSOLE_TENANTS_ADDRESS": self.address("tenants"),
                "LIANLUO_CONSOLE_MEDIA_ADDRESS": self.address("media"),
                "LIANLUO_CONSOLE_IVR_ADDRESS": self.address("ivr"),
                "LIANLUO_CONSOLE_ACD_ADDRESS": self.address("acd"),
                "LIANLUO_CONSOLE_GATEWAY_ADDRESS": self.address("gateway"),
                "LIANLUO_CONSOLE_SECURE_COOKIES": "false",
            }
            # The phone in the browser, where the cell runs voice (started after the console
            # in `lianluo run`, whose ports are known before any service starts).
            voice = self._first.get("voice")
            if voice:
                env["LIANLUO_CONSOLE_VOICE_ADDRESS"] = f"127.0.0.1:{voice[0]}"
        if name == "voice":
            env |= {
                "LIANLUO_VOICE_SIP_PORT": str(http_port),
                "LIANLUO_VOICE_RTP_PORTS": VOICE_RTP_PORTS,
                "LIANLUO_VOICE_TENANTS_ADDRESS": self.address("tenants"),
                "LIANLUO_VOICE_MEDIA_ADDRESS": self.address("media"),
                "LIANLUO_VOICE_GATEWAY_ADDRESS": self.address("gateway"),
                "LIANLUO_VOICE_ACD_ADDRESS": self.address("acd"),
            }
        return subprocess.Popen(
            [sys.executable, "-m", "lianluo.cli", "serve", name],
            env=env,
            stderr=log.open("ab"),
            stdout=subprocess.DEVNULL,
        )

    def replica(self, service: str, index: int = 0) -> Replica:
        return next(r for r in self.running if r.service == service and r.index == index)

    def kill(self, service: str, index: int = 0) -> Replica:
        """SIGKILL one replica, as a node failure would; `restart` brings it back."""
        replica = self.replica(service, index)
        replica.process.kill()
        replica.process.wait()
        return replica

    async def restart(self, replica: Replica, limit_seconds: float = 120) -> None:
        """Start a stopped replica again on its port and wait until it serves."""
        replica.process = self._spawn(
            replica.service, replica.port, replica.log, replica.http_port, replica.smtp_port
        )
        await wait_serving(replica.port, limit_seconds, replica)

    def address(self, service: str, index: int = 0) -> str:
        return next(r.address for r in self.running if r.service == service and r.index == index)

    def addresses(self, service: str) -> list[str]:
        return [r.address for r in self.running if r.service == service]

    def failed(self) -> list[Replica]:
        return [r for r in self.running if r.process.poll() is not None]

    def stop(self, grace: float = 20) -> None:
        for r in self.running:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        for r in self.running:
            try:
                r.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait()
        self.running.clear()


# The ports _free_port has handed out in this process.
_handed: set[int] = set()


def _free_port() -> int:
    """A free loopback port, never one handed out before by this process: the kernel may give
    a port just closed again, and a cell takes several (a gateway's HTTP and SMTP) before any
    is bound."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed:
            _handed.add(port)
            return port


async def wait_serving(
    port: int, limit_seconds: float = 60, replica: Replica | None = None
) -> None:
    """Wait until the server on `port` answers SERVING; fail early if its process died."""
    deadline = time.monotonic() + limit_seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if replica is not None and replica.process.poll() is not None:
                tail = replica.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{replica.service} exited while starting:\n{tail}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing serving on port {port} after {limit_seconds:.0f}s")
            await asyncio.sleep(0.2)
