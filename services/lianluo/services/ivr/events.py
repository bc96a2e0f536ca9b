"""What the IVR consumes and produces on Kafka.

In: `interaction.event` (created, message, ended). Out, through the outbox in the transaction
that stores the run: `ivr.output` ("ivr.prompt", "ivr.routed", "ivr.ended") and
`routing.request` ("routing.requested").
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from lianluo.events.v1 import ivr_pb2 as events
from lianluo.runtime import outbox
from lianluo.runtime.kafka import new_envelope

INTERACTION_TOPIC = "interaction.event"
OUTPUT_TOPIC = "ivr.output"
ROUTING_TOPIC = "routing.request"
PRODUCER = "ivr"

CREATED = "interaction.created"
MESSAGE = "interaction.message"
ENDED = "interaction.ended"
ROUTING_REQUESTED = "routing.requested"
# The envelope type of each case of IvrOutput.output.
OUTPUT_TYPES = {"prompt": "ivr.prompt", "routed": "ivr.routed", "ended": "ivr.ended"}


@dataclass(frozen=True)
class Topics:
    """The cell-prefixed names of the topics the IVR writes."""

    output: str
    routing: str


async def publish(
    conn: asyncpg.Connection,
    topics: Topics,
    tenant_id: str,
    outputs: list[events.IvrOutput],
    routing: events.RoutingRequest | None = None,
) -> None:
    """Queue a step's outputs, then its routing request, in the caller's transaction."""
    for output in outputs:
        case = output.WhichOneof("output")
        if case is None:
            continue
        envelope = new_envelope(OUTPUT_TYPES[case], tenant_id, output, PRODUCER)
        await outbox.enqueue(conn, topics.output, envelope)
    if routing is not None:
        envelope = new_envelope(ROUTING_REQUESTED, tenant_id, routing, PRODUCER)
        await outbox.enqueue(conn, topics.routing, envelope)
