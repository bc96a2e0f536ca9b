"""Prometheus figures: what every service counts, and the `GET /metrics` endpoint it serves.

A process serves one service, so the figures live in prometheus_client's process-wide registry,
and the endpoint adds the service's name to every sample as the label `service`. Figures of a
state (consumer lag, the outbox backlog, contacts waiting) are read when Prometheus scrapes,
from the `Figure`s a service registers with its endpoint. No label ever carries a tenant:
tenants are unbounded, and a series per tenant would swamp Prometheus.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lianluo.runtime.logs import get_logger

log = get_logger(__name__)

# The `_created` series of counters and histograms double the series count; nothing reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Every service exposes it, whatever else it counts: which version runs where.
BUILD = Info("lianluo_build", "The Lianluo version this process runs")
BUILD.info({"version": importlib.metadata.version("lianluo")})

# Most calls answer in milliseconds; a stream's whole life (minutes) lands in +Inf.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

GRPC_REQUESTS = Counter(
    "lianluo_grpc_requests",
    "Calls of the service's own gRPC methods that ended, by method and status code",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "lianluo_grpc_request_duration_seconds",
    "How long calls took, by method (for a stream, how long it was open)",
    ["method"],
    buckets=CALL_BUCKETS,
)
GRPC_IN_FLIGHT = Gauge(
    "lianluo_grpc_requests_in_flight",
    "Calls being served, open streams included, by method",
    ["method"],
)
RECORDS_CONSUMED = Counter(
    "lianluo_kafka_records_consumed",
    "Records the service's consumer groups handled (applied, skipped as already applied, or "
    "dead-lettered), by topic",
    ["topic"],
)
HANDLER_FAILURES = Counter(
    "lianluo_kafka_handler_failures",
    "Failed attempts to apply a consumed event, by topic and cause: outage (Postgres away, "
    "waited out), error (counts toward the dead letters), poison (dead-lettered at once)",
    ["topic", "cause"],
)
DEAD_LETTERS = Counter(
    "lianluo_dead_letters",
    "Records moved to the dead-letter topic, by who gave up (consumer or outbox) and source topic",
    ["source", "topic"],
)


def _code_name(code: object) -> str:
    # A call that returned without setting a code ended OK.
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


@asynccontextmanager
async def observe_call(
    method: str, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[None]:
    """Count one call by its final status code and time it; outside every other interceptor,
    so a refusal by the auth or the error interceptor is counted with the code it sent."""
    name = method.lstrip("/")
    in_flight = GRPC_IN_FLIGHT.labels(name)
    in_flight.inc()
    started = time.monotonic()
    code = "UNKNOWN"
    try:
        yield
        code = _code_name(context.code())
    except grpc.aio.AbortError:
        code = _code_name(context.code())
        raise
    except (asyncio.CancelledError, GeneratorExit):
        # The client went away, its deadline passed, or the server stopped.
        remaining = context.time_remaining()
        code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
        raise
    finally:
        in_flight.dec()
        GRPC_REQUESTS.labels(name, code).inc()
        GRPC_DURATION.labels(name).observe(time.monotonic() - started)


# A figure's value, or its values by label values; None when it is not known now.
Reading = float | Mapping[tuple[str, ...], float] | None


@dataclass(frozen=True)
class Figure:
    """A gauge read at each scrape, by a function or a coroutine function (a query)."""

    name: str
    documentation: str
    read: Callable[[], Reading | Awaitable[Reading]]
    labels: tuple[str, ...] = ()


class _ServiceLabelled:
    """The samples of `sources`, each with the label `service` added."""

    def __init__(self, service: str, sources: Sequence[Collector]) -> None:
        self._service = service
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            for family in source.collect():
                labelled = Metric(family.name, family.documentation, family.type, family.unit)
                labelled.samples = [
                    s._replace(labels={"service": self._service, **s.labels})
                    for s in family.samples
                ]
                yield labelled


class _Read:
    """Figures already read for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class MetricsServer:
    """Serves one service's figures on http://host:port/metrics (port 0: any free one), and
    `/healthz`: 200 while the service serves, 503 before and from the start of its shutdown
    (what a kubelet's HTTP readiness probe reads on any Kubernetes version, where a gRPC probe
    needs 1.24)."""

    # A figure slower than this (a query waiting on a busy pool) is left out of that scrape,
    # rather than holding the scrape past Prometheus's own timeout (10 s by default).
    READ_TIMEOUT_SECONDS = 3.0
    # Figures are read at most this often, however often the endpoint is asked: its port may
    # be reachable by more than Prometheus, and some figures are queries.
    READ_INTERVAL_SECONDS = 1.0

    def __init__(
        self, service: str, host: str, port: int, serving: Callable[[], bool] = lambda: True
    ) -> None:
        self._service = service
        self._serving = serving
        # The gRPC host setting may be an IPv6 literal in brackets; aiohttp takes it bare.
        self._host = host.strip("[]")
        self.port = port
        self._figures: list[Figure] = []
        self._runner: web.AppRunner | None = None
        self._reading = asyncio.Lock()
        self._read: list[Metric] = []
        self._read_at: float | None = None

    def add(self, figure: Figure) -> None:
        self._figures.append(figure)

    async def start(self) -> int:
        """Listen; the port it listens on."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/healthz", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, self._host, self.port).start()
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        if self._serving():
            return web.Response(text="serving\n")
        return web.Response(status=503, text="not serving\n")

    async def _scrape(self, request: web.Request) -> web.StreamResponse:
        families = _Read(await self._read_figures())
        exposed = _ServiceLabelled(self._service, [REGISTRY, families])
        return await make_aiohttp_handler(exposed)(request)

    async def _read_figures(self) -> list[Metric]:
        """The figures, read again when the last reading is older than the interval; scrapes
        that come meanwhile share it."""
        async with self._reading:
            at = self._read_at
            if at is None or time.monotonic() - at >= self.READ_INTERVAL_SECONDS:
                read = await asyncio.gather(*(self._read_one(f) for f in self._figures))
                self._read = [family for family in read if family is not None]
                self._read_at = time.monotonic()
            return self._read

    async def _read_one(self, figure: Figure) -> Metric | None:
        """The figure as a gauge family; None when it cannot be read now. A figure left out
        is absent from the scrape (a gap, not a stale value)."""
        try:
            async with asyncio.timeout(self.READ_TIMEOUT_SECONDS):
                reading = figure.read()
                if inspect.isawaitable(reading):
                    reading = await reading
        except Exception as error:
            log.warning("a figure could not be read", figure=figure.name, error=repr(error))
            return None
        if reading is None:
            return None
        family = GaugeMetricFamily(figure.name, figure.documentation, labels=figure.labels)
        if isinstance(reading, Mapping):
            for values, value in reading.items():
                family.add_metric(list(values), value)
        else:
            family.add_metric([], reading)
        return family
