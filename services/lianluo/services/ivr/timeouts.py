"""The loop that answers silence: runs whose prompt timed out are stepped with a timeout input.

Every replica runs it. Due runs are locked with `for update skip locked`, so replicas share the
work and a run is never stepped twice; a run a consumer is answering at that moment is skipped
and, if still due, taken on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from lianluo.runtime.logs import get_logger
from lianluo.services.ivr.service import RunService

log = get_logger(__name__)


class TimeoutSweeper:
    def __init__(self, pool: asyncpg.Pool, runs: RunService, poll_seconds: float) -> None:
        self._pool = pool
        self._runs = runs
        self._poll_seconds = poll_seconds
        self._stopping = asyncio.Event()
        self.expired = 0

    async def run(self) -> None:
        """Sweep until stop(); a failed pass is logged and tried again on the next one."""
        while not self._stopping.is_set():
            try:
                swept = await self.sweep_once()
            except (asyncpg.PostgresError, OSError) as error:
                log.warning("timeout sweep failed; retrying", error=repr(error))
                swept = 0
            if swept:
                continue  # a full batch may mean more are due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_seconds)

    async def sweep_once(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            swept = await self._runs.expire_due(conn)
        self.expired += swept
        return swept

    def stop(self) -> None:
        self._stopping.set()
