"""What the ACD consumes and publishes (docs/events.md), always through the outbox."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from lianluo.events.v1 import agent_pb2
from lianluo.runtime import outbox
from lianluo.runtime.kafka import new_envelope
from lianluo.runtime.settings import ServiceSettings
from lianluo.services.acd.state import Changes

PRODUCER = "acd"

ROUTING_REQUEST = "routing.request"
ROUTING_DECISION = "routing.decision"
AGENT_EVENT = "agent.event"
INTERACTION_EVENT = "interaction.event"
# The topics one consumer reads together: range assignment then gives one replica all of a
# tenant's partitions, which makes it the tenant's single writer.
# In the order a fetched batch is applied: what agents said (presence, answers) and what ended
# before new contacts are routed, so a backlog after an outage never routes to an agent who went
# away meanwhile.
CONSUMED = [AGENT_EVENT, INTERACTION_EVENT, ROUTING_REQUEST]

ROUTING_REQUESTED = "routing.requested"
PRESENCE_CHANGED = "agent.presence_changed"
OFFER_ACCEPTED = "agent.offer_accepted"
OFFER_DECLINED = "agent.offer_declined"
WRAP_UP_DONE = "agent.wrap_up_done"
INTERACTION_ENDED = "interaction.ended"


@dataclass(frozen=True)
class Topics:
    """The cell-prefixed names of the topics the ACD writes and the one that marks ownership."""

    routing_request: str
    routing_decision: str
    agent_event: str

    @classmethod
    def of(cls, settings: ServiceSettings) -> Topics:
        return cls(
            settings.topic(ROUTING_REQUEST),
            settings.topic(ROUTING_DECISION),
            settings.topic(AGENT_EVENT),
        )


async def publish_agent_event(
    conn: asyncpg.Connection,
    topics: Topics,
    tenant_id: str,
    event_type: str,
    event: agent_pb2.AgentEvent,
) -> None:
    envelope = new_envelope(event_type, tenant_id, event, PRODUCER)
    await outbox.enqueue(conn, topics.agent_event, envelope)


async def publish_changes(
    conn: asyncpg.Connection, topics: Topics, tenant_id: str, changes: Changes
) -> None:
    """Queue the decisions and agent events of one step, in the order they were made."""
    for event_type, decision in changes.decisions:
        envelope = new_envelope(event_type, tenant_id, decision, PRODUCER)
        await outbox.enqueue(conn, topics.routing_decision, envelope)
    for event_type, event in changes.agent_events:
        await publish_agent_event(conn, topics, tenant_id, event_type, event)
