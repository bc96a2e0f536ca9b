"""The event contract of a cell: every topic declared once, as data.

Each topic names its payload type, its envelope types, which service produces which of them and
which service consumes which. The rest follows from it and is checked against it:
- a producer builds its envelopes with `envelope()`, which refuses a type, a payload or a
  producer that the topic does not declare;
- a consumer registers its handlers by envelope type (`Handlers`), which refuses a type the
  service is not declared to consume, subscribes to the topics of those types and dispatches
  each event, its payload unpacked, to its handler;
- tests/unit/test_event_contract.py fails when a consumed type has no producer, and when
  docs/events.md does not list what is declared here.

An envelope type is `<prefix>.<case>` for a payload with a `oneof` (the case that is set), so the
payload decides its type and a producer never spells one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from google.protobuf.message import Message

from lianluo.events.v1 import (
    agent_pb2,
    envelope_pb2,
    interaction_pb2,
    ivr_pb2,
    notification_pb2,
    recording_pb2,
    routing_pb2,
    tenant_config_pb2,
)
from lianluo.media.v1 import media_pb2
from lianluo.runtime.kafka import PoisonEvent, new_envelope, unpack

EVERY = frozenset({"*"})  # a consumer of every type produced on a topic


class ContractError(Exception):
    """Code that breaks the event contract: a defect, found when it runs the first time."""


@dataclass(frozen=True)
class Topic:
    """One logical topic (the cell's prefix is added by the settings)."""

    name: str
    payload: type[Message]
    # Envelope type -> the payload's oneof case it carries ("" when the payload has no oneof).
    types: Mapping[str, str]
    # Service -> the envelope types it produces.
    producers: Mapping[str, frozenset[str]]
    # Service -> the envelope types it consumes (EVERY for all that are produced).
    consumers: Mapping[str, frozenset[str]]
    key: str = "tenant id"
    compacted: bool = False
    # How long the broker keeps a record, when it must be shorter than its default (a topic of
    # secrets); None leaves the broker's.
    retention_ms: int | None = None
    # Readers outside the cell's services, for the docs.
    also_read_by: str = ""

    @property
    def configs(self) -> dict[str, str]:
        """The topic's own settings, given when it is created."""
        found = {"cleanup.policy": "compact"} if self.compacted else {}
        if self.retention_ms is not None:
            found["retention.ms"] = str(self.retention_ms)
        return found

    def consumed_by(self, service: str) -> frozenset[str]:
        wanted = self.consumers.get(service, frozenset())
        return self.produced() if wanted == EVERY else wanted

    def produced(self) -> frozenset[str]:
        return frozenset().union(*self.producers.values())


def _cases(payload: type[Message], prefix: str) -> dict[str, str]:
    """`prefix.case` for every case of the payload's one oneof."""
    [oneof] = payload.DESCRIPTOR.oneofs
    return {f"{prefix}.{f.name}": f.name for f in oneof.fields}


def _only(*types: str) -> frozenset[str]:
    return frozenset(types)


def _named(*types: str) -> dict[str, str]:
    """Envelope types of a payload with no oneof to tell them apart."""
    return {t: "" for t in types}


def _made_by(
    producer: str,
    name: str,
    payload: type[Message],
    types: Mapping[str, str],
    consumers: Mapping[str, frozenset[str]],
    **more: Any,
) -> Topic:
    """A topic whose every envelope type is made by one producer."""
    return Topic(
        name=name,
        payload=payload,
        types=types,
        producers={producer: frozenset(types)},
        consumers=consumers,
        **more,
    )


TENANT_CONFIG = _made_by(
    "tenants",
    "tenant.config",
    tenant_config_pb2.TenantConfigChanged,
    _named("tenant.config.changed"),
    # Read whole by each service's TenantConfigView, without a consumer group.
    {},
    key="<tenant_id>/<kind>/<resource_id>",
    compacted=True,
    also_read_by="media, ivr, acd, recording, notification, edge (each through its "
    "`TenantConfigView`, without a consumer group)",
)
INTERACTION_EVENT = _made_by(
    "media",
    "interaction.event",
    interaction_pb2.InteractionEvent,
    _cases(interaction_pb2.InteractionEvent, "interaction"),
    {
        "ivr": _only("interaction.created", "interaction.message", "interaction.ended"),
        "acd": _only("interaction.ended", "interaction.rated", "interaction.participant_left"),
        "recording": EVERY,
        "notification": _only("interaction.created", "interaction.ended"),
        "gateway": _only("interaction.message", "interaction.ended"),
    },
)
IVR_OUTPUT = _made_by(
    "ivr",
    "ivr.output",
    ivr_pb2.IvrOutput,
    _cases(ivr_pb2.IvrOutput, "ivr"),
    {"media": EVERY, "recording": EVERY},
)
IVR_SECRET = _made_by(
    # The answer to a sensitive prompt, which nothing but the IVR may keep or see.
    "media",
    "ivr.secret",
    ivr_pb2.SecretAnswer,
    _named("ivr.secret.answered"),
    {"ivr": EVERY},
    retention_ms=3_600_000,
)
ROUTING_REQUEST = _made_by(
    # One producer, in the transaction that queues the interaction: no offer can overtake it.
    "media",
    "routing.request",
    ivr_pb2.RoutingRequest,
    _named("routing.requested"),
    {"acd": EVERY, "recording": EVERY},
)
ROUTING_DECISION = _made_by(
    "acd",
    "routing.decision",
    routing_pb2.RoutingDecision,
    _cases(routing_pb2.RoutingDecision, "routing"),
    {"media": EVERY, "recording": EVERY},
)
AGENT_EVENT = _made_by(
    "acd",
    "agent.event",
    agent_pb2.AgentEvent,
    _cases(agent_pb2.AgentEvent, "agent"),
    {"acd": EVERY, "recording": EVERY},
)
RECORDING_EVENT = _made_by(
    "recording",
    "recording.event",
    recording_pb2.RecordingEvent,
    _cases(recording_pb2.RecordingEvent, "recording"),
    # The tenant's audit log records every purge.
    {"tenants": _only("recording.purged", "recording.objects_deleted")},
    also_read_by="integrators",
)
NOTIFICATION_STATUS = _made_by(
    "notification",
    "notification.status",
    notification_pb2.DeliveryStatusChanged,
    # One type per status a delivery enters.
    _named(
        "notification.pending",
        "notification.sending",
        "notification.delivered",
        "notification.failed",
    ),
    {},
    also_read_by="integrators",
)
BUSINESS_EVENT = _made_by(
    # PublishBusinessEvent; a tenant's own systems may write the same envelope.
    "notification",
    "business.event",
    notification_pb2.BusinessEvent,
    _named("business.event.published"),
    {"notification": EVERY},
)
NOTICE_RECEIPT = _made_by(
    "gateway",
    "notice.receipt",
    notification_pb2.NoticeReceipt,
    _named("notice.receipt.received"),
    {"notification": EVERY},
)
MEDIA_TIMELINE = _made_by(
    "media",
    "media.timeline",
    media_pb2.ServerFrame,
    _named("media.frame", "media.frame.staff", "media.desk"),
    # Read by every media replica from its end, without a consumer group.
    {},
    key="tenant id; `<tenant_id>/desk/<agent_id>` for desk frames",
    also_read_by="media (private), every replica, without a consumer group",
)

TOPICS: tuple[Topic, ...] = (
    TENANT_CONFIG,
    INTERACTION_EVENT,
    IVR_OUTPUT,
    IVR_SECRET,
    ROUTING_REQUEST,
    ROUTING_DECISION,
    AGENT_EVENT,
    RECORDING_EVENT,
    NOTIFICATION_STATUS,
    BUSINESS_EVENT,
    NOTICE_RECEIPT,
    MEDIA_TIMELINE,
)
_BY_TYPE = {t: topic for topic in TOPICS for t in topic.types}


def unproduced(topics: Iterable[Topic] = TOPICS) -> list[str]:
    """`service consumes type` for each consumed type that no service produces."""
    return [
        f"{service} consumes {t}"
        for topic in topics
        for service in sorted(topic.consumers)
        for t in sorted(topic.consumed_by(service) - topic.produced())
    ]


def topics_of(service: str) -> list[Topic]:
    """The topics `service` produces or consumes (in a group)."""
    return [t for t in TOPICS if service in t.producers or service in t.consumers]


def topic_of(event_type: str) -> Topic:
    try:
        return _BY_TYPE[event_type]
    except KeyError:
        raise ContractError(f"no topic declares the event type {event_type!r}") from None


def _derived_type(topic: Topic, payload: Message) -> str | None:
    """The envelope type the payload decides on `topic`: the topic's only one, or its set oneof
    case's; None where the types are named and the payload cannot tell them apart."""
    if len(topic.types) == 1:
        return next(iter(topic.types))
    if not any(topic.types.values()):
        return None
    [oneof] = payload.DESCRIPTOR.oneofs
    case = payload.WhichOneof(oneof.name)
    found = [t for t, c in topic.types.items() if c == case]
    if not found:
        raise ContractError(f"{topic.name}: a {payload.DESCRIPTOR.name} with no declared case")
    return found[0]


def envelope(
    topic: Topic,
    producer: str,
    tenant_id: str,
    payload: Message,
    type_: str | None = None,
) -> envelope_pb2.Envelope:
    """The envelope `producer` publishes on `topic`, checked against the contract.

    `type_` is needed only where the payload has no oneof to decide it; given anyway, it must
    agree with the payload.
    """
    if not isinstance(payload, topic.payload):
        raise ContractError(
            f"{topic.name} carries {topic.payload.DESCRIPTOR.name}, not {payload.DESCRIPTOR.name}"
        )
    derived = _derived_type(topic, payload)
    if type_ is not None and derived is not None and type_ != derived:
        raise ContractError(f"{topic.name}: this {payload.DESCRIPTOR.name} is {derived!r}")
    chosen = type_ or derived
    if chosen is None:
        raise ContractError(f"{topic.name}: a {payload.DESCRIPTOR.name} needs its type named")
    if chosen not in topic.producers.get(producer, frozenset()):
        raise ContractError(f"{producer} is not declared to produce {chosen!r} on {topic.name}")
    return new_envelope(chosen, tenant_id, payload, producer)


Handler = Callable[[asyncpg.Connection, envelope_pb2.Envelope, Any], Awaitable[None]]
RunScope = Callable[[asyncpg.Connection], AbstractAsyncContextManager[None]]


@dataclass
class Handlers:
    """A service's handlers by envelope type; the consumer's single entry.

    Register in the order a fetched batch is to be applied: the topics are read in the order
    their first type was registered.
    """

    service: str
    _by_type: dict[str, Handler] = field(default_factory=dict)
    _topics: list[Topic] = field(default_factory=list)
    # Wraps the handlers of one run of events inside its transaction; see `around_run`.
    run_scope: RunScope | None = None

    def on(self, types: str | Iterable[str], handler: Handler) -> None:
        """Call `handler(conn, envelope, payload)` for each event of these types."""
        for t in [types] if isinstance(types, str) else list(types):
            topic = topic_of(t)
            if t not in topic.consumed_by(self.service):
                raise ContractError(f"{self.service} is not declared to consume {t!r}")
            self._by_type[t] = handler
            if topic not in self._topics:
                self._topics.append(topic)

    def on_topic(self, topic: Topic, handler: Handler) -> None:
        """The handler of every type this service consumes on `topic`."""
        self.on(sorted(topic.consumed_by(self.service)), handler)

    def around_run(self, scope: RunScope) -> None:
        """Open `scope(conn)` around each run of events the consumer applies in one
        transaction: a service can then lock, load and save once per run instead of once per
        event. It ends before the transaction commits, and not at all if a handler failed."""
        self.run_scope = scope

    @property
    def topics(self) -> list[str]:
        """The logical topics to consume, in the order to apply them."""
        return [t.name for t in self._topics]

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    async def __call__(self, conn: asyncpg.Connection, envelope: envelope_pb2.Envelope) -> None:
        handler = self._by_type.get(envelope.type)
        if handler is None:
            return  # a type this service has no use for
        topic = _BY_TYPE[envelope.type]
        try:
            payload = unpack(envelope, topic.payload)
        except Exception as error:
            expected = topic.payload.DESCRIPTOR.full_name
            raise PoisonEvent(f"{envelope.type} does not carry a {expected}") from error
        await handler(conn, envelope, payload)
