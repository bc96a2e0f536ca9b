"""What the IVR consumes and produces on Kafka (docs/events.md).

In: `interaction.event` (created, message, ended) and `ivr.secret` (the answers to prompts for
a secret, which the media service stores masked). Out, through the outbox in the transaction
that stores the run: `ivr.output` (prompt, routed, ended). A routed output carries what the flow
learnt for routing; the media service, which queues the interaction, asks the ACD with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from lianluo.events.v1 import ivr_pb2 as events
from lianluo.runtime import contract, outbox
from lianluo.runtime.settings import ServiceSettings

if TYPE_CHECKING:
    from lianluo.services.ivr.service import RunService

PRODUCER = "ivr"


def handlers(runs: RunService) -> contract.Handlers:
    on = contract.Handlers(PRODUCER)
    on.on("interaction.created", runs.on_created)
    on.on("interaction.message", runs.on_message)
    on.on("interaction.ended", runs.on_ended)
    on.on("ivr.secret.answered", runs.on_secret)
    return on


@dataclass(frozen=True)
class Topics:
    """The cell-prefixed names of the topics the IVR writes."""

    output: str

    @classmethod
    def of(cls, settings: ServiceSettings) -> Topics:
        return cls(settings.topic(contract.IVR_OUTPUT.name))


async def publish(
    conn: asyncpg.Connection, topics: Topics, tenant_id: str, outputs: list[events.IvrOutput]
) -> None:
    """Queue a step's outputs in the caller's transaction."""
    for output in outputs:
        if output.WhichOneof("output") is None:
            continue
        envelope = contract.envelope(contract.IVR_OUTPUT, PRODUCER, tenant_id, output)
        await outbox.enqueue(conn, topics.output, envelope)
