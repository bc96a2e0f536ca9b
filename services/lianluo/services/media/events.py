"""What the media service consumes: IVR output and routing decisions, applied to interactions."""

from __future__ import annotations

from typing import Any

import asyncpg

from lianluo.runtime import contract
from lianluo.runtime.errors import NotFound
from lianluo.runtime.kafka import Envelope
from lianluo.runtime.logs import get_logger
from lianluo.services.media.service import PRODUCER, MediaService

log = get_logger(__name__)


def handlers(media: MediaService) -> contract.Handlers:
    on = contract.Handlers(PRODUCER)

    async def ivr_output(conn: asyncpg.Connection, envelope: Envelope, output: Any) -> None:
        await _unless_unknown(envelope, media.on_ivr_output(conn, envelope.tenant_id, output))

    async def decision(conn: asyncpg.Connection, envelope: Envelope, decided: Any) -> None:
        await _unless_unknown(
            envelope, media.on_routing_decision(conn, envelope.tenant_id, decided)
        )

    on.on_topic(contract.IVR_OUTPUT, ivr_output)
    on.on_topic(contract.ROUTING_DECISION, decision)
    return on


async def _unless_unknown(envelope: Envelope, applying: Any) -> None:
    try:
        await applying
    except NotFound:
        # An event for an interaction this cell does not have can never apply; retrying
        # would stall the partition.
        log.warning("event for an unknown interaction; skipped", type=envelope.type)
