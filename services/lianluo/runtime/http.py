"""An HTTP server a service runs beside its gRPC server until shutdown (the gateway's channels,
the console's pages and API): aiohttp, started and stopped as a background runner."""

from __future__ import annotations

import asyncio

from aiohttp import web

from lianluo.runtime.logs import get_logger

log = get_logger(__name__)


class HttpServer:
    """Serves its routes on host:port (port 0: any free one, then in `port`)."""

    def __init__(self, host: str, port: int) -> None:
        self._app: web.Application | None = None
        self._host = host
        self.port = port
        self._stopping = asyncio.Event()

    def add_routes(self, routes: list[web.AbstractRouteDef], max_body: int) -> None:
        """`max_body` bounds what a handler may read whole (request.read, post, json)."""
        self._app = web.Application(client_max_size=max_body)
        self._app.add_routes(routes)

    @property
    def url(self) -> str:
        """The server's own URL, for links when no public URL is set."""
        return f"http://{self._host}:{self.port}"

    async def run(self) -> None:
        if self._app is None:
            raise RuntimeError("no routes to serve: add_routes first")
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("http serving", host=self._host, port=self.port)
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        self._stopping.set()
