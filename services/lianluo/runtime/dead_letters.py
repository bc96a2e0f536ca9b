"""Dead letters: the events a consumer cannot apply and the records an outbox cannot publish.

Either would otherwise be retried forever, holding up every later event of its partition, and so
every tenant that shares it. After a bounded number of attempts the record goes to the cell's
`dead-letters` topic, whole, with where it came from and why it failed in its headers. Then its
partition moves on. `lianluo dead-letters list|show|replay` reads them back and re-publishes them
once the cause is fixed; consumers dedupe by event id, so a replay is applied at most once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import metrics

from lianluo.runtime.logs import get_logger

if TYPE_CHECKING:
    from lianluo.runtime.settings import KafkaSecuritySettings

log = get_logger(__name__)

TOPIC = "dead-letters"
# Over this a value is not kept (it could not be published anyway); its size is.
MAX_KEPT_VALUE_BYTES = 900_000
# How many times an event is tried before it is dead-lettered. Outages of Postgres or the broker
# do not count: they are waited out, since every event would fail alike.
DEFAULT_MAX_ATTEMPTS = 5

_PREFIX = "lianluo-dl-"
_counter = metrics.get_meter("lianluo.dead_letters").create_counter(
    "lianluo.dead_letters",
    description="Records moved to the dead-letter topic, by source topic and by who gave up",
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read back from the topic."""

    partition: int
    offset: int
    source_topic: str
    source_partition: int
    source_offset: int
    who: str
    error: str
    attempts: int
    time: str
    key: bytes
    value: bytes
    value_bytes: int
    headers: Headers

    @property
    def ref(self) -> str:
        """How the CLI names it: the dead-letter partition and offset."""
        return f"{self.partition}:{self.offset}"


def failure_headers(
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    who: str,
    error: str,
    attempts: int,
    value_bytes: int,
) -> Headers:
    fields = {
        "topic": source_topic,
        "partition": str(source_partition),
        "offset": str(source_offset),
        "who": who,
        "error": error[:2_000],
        "attempts": str(attempts),
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "value-bytes": str(value_bytes),
    }
    return [(_PREFIX + name, value.encode()) for name, value in fields.items()]


def record_dead_letter(who: str, source_topic: str, error: str, **context: object) -> None:
    """The log line and the metric of one dead letter."""
    _counter.add(1, {"who": who, "topic": source_topic})
    log.error("dead-lettered", who=who, source_topic=source_topic, error=error, **context)


def kept_value(value: bytes) -> bytes:
    return value if len(value) <= MAX_KEPT_VALUE_BYTES else b""


def parse(partition: int, offset: int, key: bytes, value: bytes, headers: Headers) -> DeadLetter:
    ours = {k[len(_PREFIX) :]: v.decode() for k, v in headers if k.startswith(_PREFIX)}
    return DeadLetter(
        partition=partition,
        offset=offset,
        source_topic=ours.get("topic", ""),
        source_partition=int(ours.get("partition", "-1")),
        source_offset=int(ours.get("offset", "-1")),
        who=ours.get("who", ""),
        error=ours.get("error", ""),
        attempts=int(ours.get("attempts", "0")),
        time=ours.get("time", ""),
        key=key,
        value=value,
        value_bytes=int(ours.get("value-bytes", str(len(value)))),
        headers=[(k, v) for k, v in headers if not k.startswith(_PREFIX)],
    )


async def read_all(
    bootstrap_servers: str,
    topic: str,
    wait_seconds: float = 30.0,
    *,
    security: KafkaSecuritySettings | None = None,
) -> list[DeadLetter]:
    """Every dead letter on `topic`, oldest first per partition (no consumer group is used)."""
    # kafka imports this module for its sink
    from lianluo.runtime.kafka import behind, client_security

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        **client_security(security),
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata of every topic, so the partitions below are known
        found = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        letters: list[DeadLetter] = []
        async with asyncio.timeout(wait_seconds):
            while await behind(consumer, end):
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    letters += [
                        parse(
                            tp.partition,
                            r.offset,
                            r.key or b"",
                            r.value or b"",
                            list(r.headers or ()),
                        )
                        for r in records
                    ]
        return letters
    finally:
        await consumer.stop()


def select(letters: Sequence[DeadLetter], refs: Sequence[str]) -> list[DeadLetter]:
    """The letters named `partition:offset`; an unknown name is an error naming it."""
    by_ref = {letter.ref: letter for letter in letters}
    unknown = [ref for ref in refs if ref not in by_ref]
    if unknown:
        raise KeyError(f"no dead letter {', '.join(unknown)} (see `lianluo dead-letters list`)")
    return [by_ref[ref] for ref in refs]
