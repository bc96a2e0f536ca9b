"""What the ACD consumes and publishes (docs/events.md), always through the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from lianluo.events.v1 import agent_pb2
from lianluo.runtime import contract, outbox
from lianluo.runtime.settings import ServiceSettings
from lianluo.services.acd.state import Changes

if TYPE_CHECKING:
    from lianluo.services.acd.router import Router

PRODUCER = "acd"

PRESENCE_CHANGED = "agent.presence_changed"
OFFER_ACCEPTED = "agent.offer_accepted"
OFFER_DECLINED = "agent.offer_declined"


def handlers(router: Router) -> contract.Handlers:
    """In the order a fetched batch is applied: what agents said (presence, answers) and what
    ended before new contacts are routed, so a backlog after an outage never routes to an agent
    who went away meanwhile. The three topics are read together: range assignment then gives
    one replica all of a tenant's partitions, which makes it the tenant's single writer."""
    on = contract.Handlers(PRODUCER)
    on.on_topic(contract.AGENT_EVENT, router.on_agent_event)
    on.on("interaction.ended", router.on_interaction_ended)
    on.on("interaction.rated", router.on_interaction_rated)
    on.on("interaction.participant_left", router.on_participant_left)
    on.on("routing.requested", router.on_routing_requested)
    on.around_run(router.run)
    return on


@dataclass(frozen=True)
class Topics:
    """The cell-prefixed names of the topics the ACD writes and the one that marks ownership."""

    routing_request: str
    routing_decision: str
    agent_event: str

    @classmethod
    def of(cls, settings: ServiceSettings) -> Topics:
        return cls(
            settings.topic(contract.ROUTING_REQUEST.name),
            settings.topic(contract.ROUTING_DECISION.name),
            settings.topic(contract.AGENT_EVENT.name),
        )


async def publish_agent_event(
    conn: asyncpg.Connection,
    topics: Topics,
    tenant_id: str,
    event_type: str,
    event: agent_pb2.AgentEvent,
) -> None:
    envelope = contract.envelope(contract.AGENT_EVENT, PRODUCER, tenant_id, event, event_type)
    await outbox.enqueue(conn, topics.agent_event, envelope)


async def publish_changes(
    conn: asyncpg.Connection, topics: Topics, tenant_id: str, changes: Changes
) -> None:
    """Queue the decisions and agent events of one step, in the order they were made."""
    for event_type, decision in changes.messages():
        envelope = contract.envelope(
            contract.ROUTING_DECISION, PRODUCER, tenant_id, decision, event_type
        )
        await outbox.enqueue(conn, topics.routing_decision, envelope)
    for event_type, event in changes.agent_events:
        await publish_agent_event(conn, topics, tenant_id, event_type, event)
