"""Composition root of the web console: the pages and their API over HTTP, and a gRPC server
for health only. It keeps no state of its own: no tables, no topics."""

from __future__ import annotations

from lianluo.runtime.http import HttpServer
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.console.service import Console, Platform
from lianluo.services.console.settings import ConsoleSettings

SPEC = ServiceSpec(name="console", settings=ConsoleSettings, migrations=None)


async def build(settings: ConsoleSettings) -> Service:
    service = Service(SPEC, settings)
    console = Console(Platform(settings), settings)
    http = HttpServer(settings.console_http_host, settings.console_http_port)
    http.add_routes(console.routes(), settings.console_max_body_bytes)
    service.add_background(http, "http server")
    return service


async def serve(settings: ConsoleSettings) -> None:
    await (await build(settings)).serve()
