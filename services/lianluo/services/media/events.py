"""What the media service consumes: IVR output and routing decisions, applied to interactions."""

from __future__ import annotations

import asyncpg

from lianluo.events.v1 import envelope_pb2, ivr_pb2, routing_pb2
from lianluo.runtime.errors import NotFound
from lianluo.runtime.kafka import unpack
from lianluo.runtime.logs import get_logger
from lianluo.services.media.service import MediaService

log = get_logger(__name__)
CONSUMED = ["ivr.output", "routing.decision"]


class MediaEvents:
    def __init__(self, media: MediaService) -> None:
        self._media = media

    async def handle(self, conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        try:
            if envelope.type.startswith("ivr."):
                output = unpack(envelope, ivr_pb2.IvrOutput)
                await self._media.on_ivr_output(conn, envelope.tenant_id, output)
            elif envelope.type.startswith("routing."):
                decision = unpack(envelope, routing_pb2.RoutingDecision)
                await self._media.on_routing_decision(conn, envelope.tenant_id, decision)
        except NotFound:
            # An event for an interaction this cell does not have can never apply; retrying
            # would stall the partition.
            log.warning("event for an unknown interaction; skipped", type=envelope.type)
