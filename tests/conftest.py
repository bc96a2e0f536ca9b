"""Shared fixtures. Integration tests run against the real Postgres and Kafka-protocol broker,
started here by the project's own dev stack when they are not running already (and stopped
again at the end if this session started them). Each session gets a fresh database and its own
topic prefix, so runs never see each other's data."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from lianluo.devstack import infra
from lianluo.devstack.cell import Cell
from lianluo.runtime.service import Service

ADMIN_KEY = "test-admin-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Stack:
    config: infra.StackConfig
    database_url: str
    kafka: str
    topic_prefix: str

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a service process of this test session."""
        return {
            "LIANLUO_DATABASE_URL": self.database_url,
            "LIANLUO_KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "LIANLUO_ADMIN_KEY": ADMIN_KEY,
            "LIANLUO_TOPIC_PREFIX": self.topic_prefix,
            "LIANLUO_SHUTDOWN_GRACE_SECONDS": "5",
            **extra,
        }


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    config = infra.StackConfig.from_env()
    started = infra.up(config)
    name = f"test_{uuid.uuid4().hex[:12]}"
    infra.create_database(config.database_url, name)
    base = config.database_url.rsplit("/", 1)[0]
    try:
        yield Stack(config, f"{base}/{name}", config.kafka_bootstrap, f"t{name[5:]}.")
    finally:
        if started:
            infra.down(config, only=started)


@contextlib.contextmanager
def running_cell(
    stack: Stack,
    folder: Path,
    name: str,
    replicas: dict[str, int] | None = None,
    services: list[str] | None = None,
    **env: str,
) -> Iterator[Cell]:
    """Every cell service (or `services`) as its own process, with a database and topics of
    its own."""
    infra.create_database(stack.config.database_url, name)
    base = stack.database_url.rsplit("/", 1)[0]
    settings = stack.env(LIANLUO_DATABASE_URL=f"{base}/{name}", LIANLUO_TOPIC_PREFIX=f"{name}.")
    cell = Cell({**settings, **env}, folder, replicas=dict(replicas or {}))
    try:
        cell.start(services)
        yield cell
    finally:
        cell.stop()


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


ADMIN = bearer(ADMIN_KEY)


@dataclass(frozen=True)
class Served:
    """A service running in this test process."""

    address: str
    service: object


@pytest.fixture(scope="session")
async def tenants_service(stack: Stack) -> AsyncIterator[Served]:
    import asyncio

    from lianluo.services.tenants.app import build
    from lianluo.services.tenants.settings import TenantsSettings

    settings = TenantsSettings(
        **{
            k.removeprefix("LIANLUO_").lower(): v
            for k, v in stack.env(LIANLUO_GRPC_PORT="0").items()
        }
    )
    service = await build(settings)
    task = asyncio.create_task(service.serve())
    while not service.grpc.port:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield Served(f"127.0.0.1:{service.grpc.port}", service)
    service.request_stop()
    await task


@pytest.fixture(scope="session")
async def edge(stack: Stack) -> AsyncIterator[Service]:
    """The edge, following the placements of the global plane (`tenants_service`)."""
    import asyncio

    from lianluo.services.edge.app import build
    from lianluo.services.edge.settings import EdgeSettings

    env = stack.env(LIANLUO_GRPC_PORT="0")
    service = await build(EdgeSettings(**{k[8:].lower(): v for k, v in env.items()}))
    task = asyncio.create_task(service.serve())
    while not service.grpc.port:
        await asyncio.sleep(0.02)
    yield service
    service.request_stop()
    await task


@pytest.fixture
async def channel(tenants_service: Served) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(tenants_service.address) as ch:
        yield ch
