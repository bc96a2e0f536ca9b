"""The lifecycle every service shares: start its parts, serve, and stop them in order.

Start: logging and tracing, the Postgres pool, migrations and topics (when auto_migrate),
the producer and outbox relay, the consumers, then the metrics endpoint and the gRPC server,
which turns SERVING last.
Stop (SIGTERM or SIGINT): health NOT_SERVING, the server drains within its grace period,
consumers finish their batch and commit, the outbox flushes, the pool closes, spans flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from lianluo.runtime import contract, dead_letters, kafka, outbox, postgres
from lianluo.runtime.grpc_server import GrpcServer, RegisterFn, server_credentials
from lianluo.runtime.logs import configure_logging, get_logger
from lianluo.runtime.metrics import Figure, MetricsServer
from lianluo.runtime.settings import ServiceSettings
from lianluo.runtime.telemetry import configure_metrics, configure_tracing
from lianluo.runtime.tenant_config import CREDENTIAL_KINDS, Change, TenantConfigView

log = get_logger(__name__)


class Runner(Protocol):
    """A background loop owned by a service."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ServiceSpec:
    """What the platform needs to know of a service before it runs it."""

    # One name everywhere: CLI subcommand, schema, consumer group, OTel service name.
    name: str
    settings: type[ServiceSettings]
    # The service's own SQL migrations; None for a service with no tables of its own.
    migrations: Path | None


class Service:
    """The parts of one running service; its composition root fills it in, then calls serve()."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.name = spec.name
        self.settings = settings
        self.grpc = GrpcServer(
            settings.grpc_host,
            settings.grpc_port,
            settings.admin_key.get_secret_value(),
            server_credentials(settings),
        )
        self._pool: asyncpg.Pool | None = None
        self._producer: kafka.EventProducer | None = None
        self._dead_letters: kafka.DeadLetterSink | None = None
        self._relay: outbox.OutboxRelay | None = None
        self._consumers: list[kafka.EventConsumer] = []
        self._views: list[TenantConfigView] = []
        self._runners: list[Runner] = []
        self.config: TenantConfigView | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._task_of: dict[int, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._tracer_provider = configure_tracing(spec.name)
        self._meter_provider = configure_metrics(spec.name)
        self.metrics = MetricsServer(
            spec.name, settings.grpc_host, settings.metrics_port, lambda: self.grpc.serving
        )
        configure_logging(spec.name, settings.log_level)

    @property
    def consumers(self) -> list[kafka.EventConsumer]:
        return list(self._consumers)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the service is not started")
        return self._pool

    async def start_storage(self) -> None:
        """Connect to Postgres and Kafka; apply migrations and create topics when configured."""
        s = self.settings
        if s.auto_migrate:
            await migrate(self.spec, s)
        self._pool = await postgres.create_pool(
            s.database_url, self.name, min_size=s.db_pool_min, max_size=s.db_pool_max
        )
        self._producer = kafka.EventProducer(
            s.kafka_bootstrap_servers, client_id=self.name, security=s
        )
        await self._producer.start()
        self._dead_letters = kafka.DeadLetterSink(self._producer, s.topic(dead_letters.TOPIC))
        self._relay = outbox.OutboxRelay(self._pool, self._producer, self.name, self._dead_letters)
        self._spawn(self._relay.run(), "outbox relay", self._relay)
        self.metrics.add(
            Figure(
                "lianluo_outbox_backlog",
                "Rows of the service's outbox not yet published (every replica reads the same "
                "table)",
                self._outbox_backlog,
            )
        )
        self.metrics.add(
            Figure(
                "lianluo_outbox_oldest_age_seconds",
                "Age of the oldest row of the service's outbox not yet published; 0 when empty",
                self._outbox_oldest_age,
            )
        )

    def add_grpc(self, register: RegisterFn, servicer: Any, full_name: str) -> None:
        self.grpc.add(register, servicer, full_name)

    async def add_consumer(self, handlers: contract.Handlers) -> kafka.EventConsumer:
        """Consume the topics of the handlers' event types in this service's consumer group."""
        topics = handlers.topics
        consumer = kafka.EventConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            pool=self.pool,
            group_id=self.settings.topic(self.name),
            topics=[self.settings.topic(t) for t in topics],
            handler=handlers,
            consumer_name=self.name,
            dead_letters=self._dead_letters,
            max_attempts=self.settings.consumer_max_attempts,
            fetch_wait_ms=self.settings.kafka_fetch_wait_ms,
            run_scope=_run_scope(handlers),
            security=self.settings,
        )
        await consumer.start()
        if not self._consumers:
            self.metrics.add(
                Figure(
                    "lianluo_kafka_consumer_lag",
                    "Records of an assigned partition not yet handled by this replica's "
                    "consumer groups, by topic and partition",
                    self._consumer_lag,
                    ("topic", "partition"),
                )
            )
        self._consumers.append(consumer)
        self._spawn(consumer.run(), f"consumer {topics}", consumer)
        return consumer

    async def follow_tenant_config(self) -> TenantConfigView:
        """A local copy of all tenant configuration, which also authenticates API keys."""
        view = TenantConfigView(
            self.settings.kafka_bootstrap_servers,
            self.settings.topic(contract.TENANT_CONFIG.name),
            self.settings.kafka_config_fetch_wait_ms,
            security=self.settings,
        )
        await view.start()
        self.config = view
        self.grpc.credentials = view
        view.subscribe(self._credentials_changed)
        self._views.append(view)
        self._spawn(view.run(), "tenant config view", view)
        return view

    def _credentials_changed(self, tenant_id: str, change: Change) -> None:
        if change.kind in CREDENTIAL_KINDS:
            self.grpc.recheck(tenant_id)

    async def _outbox_backlog(self) -> float:
        async with self.pool.acquire() as conn:
            return float(await outbox.backlog(conn))

    async def _outbox_oldest_age(self) -> float:
        async with self.pool.acquire() as conn:
            return await outbox.oldest_age_seconds(conn)

    def _consumer_lag(self) -> dict[tuple[str, ...], float]:
        return {
            (tp.topic, str(tp.partition)): float(lag)
            for consumer in self._consumers
            for tp, lag in consumer.lag().items()
        }

    def add_background(self, runner: Runner, what: str) -> None:
        """Run `runner.run()` until shutdown, when `runner.stop()` is called."""
        self._runners.append(runner)
        self._spawn(runner.run(), what, runner)

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Serve until SIGTERM, SIGINT or request_stop(), then shut down in order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            # Before the gRPC server: a port already taken stops the start, not a scrape.
            log.info("metrics serving", port=await self.metrics.start())
            port = await self.grpc.start()
            log.info("serving", port=port, services=self.grpc.service_names)
            await self._stop.wait()
            log.info("stopping", grace_seconds=self.settings.shutdown_grace_seconds)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.shutdown()

    async def shutdown(self) -> None:
        await self.grpc.stop(self.settings.shutdown_grace_seconds)
        # In waves: what produces events (background loops, then consumers) finishes before
        # the relay's last flush, so nothing they wrote stays behind in the outbox.
        waves: list[list[Runner | kafka.EventConsumer | outbox.OutboxRelay]] = [
            [*self._runners, *self._views],
            list(self._consumers),
            [self._relay] if self._relay is not None else [],
        ]
        for wave in waves:
            for part in wave:
                part.stop()
            tasks = [self._task_of[id(part)] for part in wave if id(part) in self._task_of]
            if not tasks:
                continue
            # A part stuck on a dependency (a frozen broker, a hung query) is cancelled after the
            # grace period: shutdown never waits on it for longer.
            _, stuck = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for task in stuck:
                log.warning("cancelling a stuck part at shutdown", task=task.get_name())
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("background task failed during shutdown", error=repr(result))
        if self._producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.shutdown_grace_seconds):
                    await self._producer.stop()
        if self._pool is not None:
            try:
                async with asyncio.timeout(self.settings.shutdown_grace_seconds):
                    await self._pool.close()
            except TimeoutError:
                self._pool.terminate()
        await self.metrics.stop()
        self._tracer_provider.shutdown()
        self._meter_provider.shutdown()
        log.info("stopped")

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str, owner: object) -> None:
        task = asyncio.create_task(coro, name=f"{self.name}: {what}")
        task.add_done_callback(self._on_task_done)
        self._task_of[id(owner)] = task
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        # A background loop that dies takes the service down: better a restart by the
        # orchestrator than a replica that answers health but no longer relays or consumes.
        if not task.cancelled() and task.exception() is not None and not self._stop.is_set():
            log.error("background task died", task=task.get_name(), error=repr(task.exception()))
            self._stop.set()


def _run_scope(handlers: contract.Handlers) -> contract.RunScope:
    """A run's events enqueue into one outbox batch; the service's own scope, if any, ends
    inside it, so what it publishes on its way out joins the batch."""
    own = handlers.run_scope
    if own is None:
        return outbox.batched

    @contextlib.asynccontextmanager
    async def scope(conn: asyncpg.Connection) -> AsyncIterator[None]:
        async with outbox.batched(conn), own(conn):
            yield

    return scope


async def migrate(spec: ServiceSpec, settings: ServiceSettings) -> list[str]:
    """Apply a service's migrations and create its topics; used at start-up and by the CLI."""
    own = {spec.name: spec.migrations} if spec.migrations is not None else {}
    applied = await postgres.migrate_dsn(settings.database_url, spec.name, own)
    # The topics the contract has the service produce or consume; every service follows
    # tenant.config, so every one can create it.
    topics = [contract.TENANT_CONFIG, *contract.topics_of(spec.name)]
    names = {t.name for t in topics}
    await kafka.ensure_topics(
        settings.kafka_bootstrap_servers,
        [settings.topic(t) for t in [*sorted(names), dead_letters.TOPIC]],
        settings.topic_partitions,
        {settings.topic(t.name): t.configs for t in topics if t.configs},
        security=settings,
    )
    return applied
