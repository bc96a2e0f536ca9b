"""`lianluo run` (what `make run` calls): the local platform with a short demo, until Ctrl-C.

It starts Postgres and the broker (when not running), every service of one cell as its own
process, waits until each answers health, prints how to reach them, plays the demo, and then
serves until Ctrl-C, when it stops what it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lianluo.devstack import infra
from lianluo.devstack.demo import play_demo
from lianluo.services import SERVICES

FIRST_PORT = 50051
DATABASE = "lianluo"
TOPIC_PREFIX = "cell-local."


@dataclass
class Running:
    name: str
    port: int
    process: subprocess.Popen[bytes]


def admin_key(config: infra.StackConfig) -> str:
    """The local admin key, made once and kept under the state folder."""
    path = config.state_dir / "admin-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def service_env(config: infra.StackConfig, key: str, port: int) -> dict[str, str]:
    base = config.database_url.rsplit("/", 1)[0]
    return {
        **os.environ,
        "LIANLUO_DATABASE_URL": f"{base}/{DATABASE}",
        "LIANLUO_KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap,
        "LIANLUO_ADMIN_KEY": key,
        "LIANLUO_TOPIC_PREFIX": TOPIC_PREFIX,
        "LIANLUO_GRPC_PORT": str(port),
    }


async def wait_serving(port: int, limit_seconds: float = 60) -> None:
    deadline = time.monotonic() + limit_seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing serving on port {port} after {limit_seconds:.0f}s")
            await asyncio.sleep(0.2)


def main(demo: bool = True) -> int:
    config = infra.StackConfig.from_env()
    try:
        started_infra = infra.up(config)
        infra.create_database(config.database_url, DATABASE)
    except infra.InfraError as error:
        print(f"lianluo run: {error}", file=sys.stderr)
        return 1
    key = admin_key(config)
    running: list[Running] = []
    try:
        for i, name in enumerate(SERVICES):
            port = FIRST_PORT + i
            print(f"==> starting {name} on 127.0.0.1:{port}", file=sys.stderr)
            process = subprocess.Popen(
                [sys.executable, "-m", "lianluo.cli", "serve", name],
                env=service_env(config, key, port),
                stderr=open(config.state_dir / f"{name}.log", "ab"),  # noqa: SIM115
            )
            running.append(Running(name, port, process))
        for r in running:
            asyncio.run(wait_serving(r.port))
        print("\nLianluo is running (one local cell):")
        for r in running:
            print(f"  {r.name:14} 127.0.0.1:{r.port}   log: {config.state_dir / (r.name + '.log')}")
        print(f"  {'postgres':14} {config.database_url.rsplit('/', 1)[0]}/{DATABASE}")
        print(f"  {'kafka':14} {config.kafka_bootstrap}   topics prefixed {TOPIC_PREFIX!r}")
        print(f"  admin key in {config.state_dir / 'admin-key'}")
        if demo:
            asyncio.run(play_demo(f"127.0.0.1:{running[0].port}", key))
        print("\nServing until Ctrl-C.")
        _wait_for_interrupt(running)
        return 0
    except (TimeoutError, infra.InfraError) as error:
        print(f"lianluo run: {error}", file=sys.stderr)
        return 1
    finally:
        _stop(running)
        if started_infra:
            infra.down(config, only=started_infra)


def _wait_for_interrupt(running: list[Running]) -> None:
    try:
        while all(r.process.poll() is None for r in running):
            time.sleep(0.5)
        failed = [r.name for r in running if r.process.poll() is not None]
        print(f"lianluo run: {', '.join(failed)} stopped; see its log", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nStopping.", file=sys.stderr)


def _stop(running: list[Running]) -> None:
    for r in running:
        if r.process.poll() is None:
            r.process.send_signal(signal.SIGTERM)
    for r in running:
        try:
            r.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            r.process.kill()
