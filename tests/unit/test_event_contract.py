"""The event contract (lianluo.runtime.contract): one declaration that producers, consumers and
docs/events.md all follow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lianluo.events.v1 import agent_pb2, interaction_pb2, ivr_pb2
from lianluo.media.v1 import media_pb2
from lianluo.runtime import contract
from lianluo.runtime.contract import EVERY, ContractError, Handlers, Topic

DOCS = Path(__file__).parents[2] / "docs" / "events.md"


def test_every_consumed_event_type_has_a_producer() -> None:
    assert contract.unproduced() == []


def test_a_consumer_of_a_type_nobody_produces_is_found() -> None:
    orphan = Topic(
        name="x.event",
        payload=interaction_pb2.InteractionEvent,
        types={"x.created": "created", "x.ended": "ended"},
        producers={"media": frozenset({"x.created"})},
        consumers={"ivr": frozenset({"x.ended"}), "acd": EVERY},
    )
    assert contract.unproduced([orphan]) == ["ivr consumes x.ended"]


def test_the_payload_decides_the_envelope_type() -> None:
    ended = interaction_pb2.InteractionEvent(ended=media_pb2.InteractionEnd())
    made = contract.envelope(contract.INTERACTION_EVENT, "media", "t", ended)
    assert (made.type, made.producer, made.tenant_id) == ("interaction.ended", "media", "t")


@pytest.mark.parametrize(
    ("producer", "payload", "problem"),
    [
        ("ivr", interaction_pb2.InteractionEvent(ended=media_pb2.InteractionEnd()), "ivr is not"),
        ("media", ivr_pb2.IvrOutput(), "carries InteractionEvent, not IvrOutput"),
        ("media", interaction_pb2.InteractionEvent(), "with no declared case"),
        (
            "recording",
            interaction_pb2.InteractionEvent(participant_left=media_pb2.Participant()),
            "recording is not declared to produce 'interaction.participant_left'",
        ),
    ],
)
def test_an_envelope_outside_the_contract_is_refused(
    producer: str, payload: object, problem: str
) -> None:
    with pytest.raises(ContractError, match=re.escape(problem)):
        contract.envelope(contract.INTERACTION_EVENT, producer, "t", payload)  # type: ignore[arg-type]


async def _ignore(*_: object) -> None:
    return None


def test_handlers_take_only_declared_types_and_read_topics_in_registration_order() -> None:
    handlers = Handlers("acd")
    handlers.on_topic(contract.AGENT_EVENT, _ignore)
    handlers.on("interaction.ended", _ignore)
    assert handlers.topics == ["agent.event", "interaction.event"]
    assert "agent.presence_changed" in handlers.types
    refused = re.escape("acd is not declared to consume 'interaction.created'")
    with pytest.raises(ContractError, match=refused):
        handlers.on("interaction.created", _ignore)
    with pytest.raises(ContractError, match="no topic declares"):
        handlers.on("agent.fired", _ignore)


async def test_handlers_dispatch_by_type_with_the_payload_unpacked() -> None:
    seen: list[tuple[str, object]] = []

    async def record(_conn: object, envelope: object, payload: object) -> None:
        seen.append((envelope.type, payload))  # type: ignore[attr-defined]

    handlers = Handlers("acd")
    handlers.on("agent.wrap_up_done", record)
    done = agent_pb2.AgentEvent(agent_id="a", wrap_up_done=agent_pb2.AgentWrapUpDone())
    await handlers(None, contract.envelope(contract.AGENT_EVENT, "acd", "t", done))  # type: ignore[arg-type]
    accepted = agent_pb2.AgentEvent(agent_id="a", offer_accepted=agent_pb2.AgentOfferAnswer())
    await handlers(None, contract.envelope(contract.AGENT_EVENT, "acd", "t", accepted))  # type: ignore[arg-type]
    assert seen == [("agent.wrap_up_done", done)], "an unregistered type is passed over"


def _rows(markdown: str) -> list[list[str]]:
    table = markdown.split("## Topics", 1)[1].split("\n\n", 2)[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_the_docs_list_every_topic_with_its_producers_and_consumers() -> None:
    rows = {row[0].strip("`"): row for row in _rows(DOCS.read_text())}
    assert list(rows) == [t.name for t in contract.TOPICS]
    for topic in contract.TOPICS:
        _, producers, consumers, _key, cleanup = rows[topic.name]
        for service in topic.producers:
            assert service in producers, f"{topic.name}: {service} missing from the producers"
        for service in topic.consumers:
            assert service in consumers, f"{topic.name}: {service} missing from the consumers"
        assert cleanup == ("compact" if topic.compacted else "delete")


def test_the_docs_list_every_envelope_type_of_each_enveloped_topic() -> None:
    text = DOCS.read_text()
    for topic in contract.TOPICS:
        section = text.split(f"### {topic.name}\n", 1)
        assert len(section) == 2, f"docs/events.md has no section for {topic.name}"
        body = section[1].split("\n### ", 1)[0]
        first_cells = re.findall(r"^\| (`[^|]+) \|", body, re.M)
        documented = {t for cell in first_cells for t in re.findall(r"`([a-z_.]+)`", cell)}
        assert documented == set(topic.types), topic.name
