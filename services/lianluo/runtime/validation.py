"""The limits every request meets before a handler sees it: one layer, at the entry of every RPC
and of every consumer.

The limits are declared beside each field in the .proto (`lianluo.common.v1.limits`, see
limits.proto), with defaults for the rest, and derived from what the parts behind the entry
hold: the broker's record size, a Postgres index row, a SQL integer, Python's datetime. So a
request that passes can always be stored, published and replayed, and no tenant's input can make
a consumer retry forever.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from lianluo.common.v1 import limits_pb2
from lianluo.runtime.errors import FieldViolation, InvalidArgument

# The broker's default record limit (max.message.bytes); an event must fit in one record.
RECORD_BYTES = 1_048_576
# A request becomes at most one event's payload plus an envelope and derived fields.
MAX_REQUEST_BYTES = RECORD_BYTES // 4
# Ids, names and short texts: well within one btree index row (2,704 bytes).
DEFAULT_MAX_BYTES = 1_024
DEFAULT_MAX_ITEMS = 1_000
# Deeper nesting than any API declares is an attack on the parser, not a request.
MAX_DEPTH = 32
# An error reply shows a value cut to this many characters, with its full size.
PREVIEW_CHARS = 32
# An event names at most this many of its problems in its dead letter.
MAX_REPORTED = 5

_UNSIZED = 2**62  # no size limit: an event's sizes were checked where it entered
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999

_FD = FieldDescriptor
_UNSIGNED_32 = {_FD.TYPE_UINT32, _FD.TYPE_FIXED32}
_UNSIGNED_64 = {_FD.TYPE_UINT64, _FD.TYPE_FIXED64}
_FLOATS = {_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT}


def preview(value: object) -> str:
    """The value as a client may see it in an error: cut short, with its full size."""
    if isinstance(value, bytes):
        return f"{len(value):,} bytes"
    text = str(value)
    if len(text) <= PREVIEW_CHARS:
        return repr(text)
    return f"{text[:PREVIEW_CHARS]!r}… ({len(text.encode('utf-8', 'replace')):,} bytes)"


def check_request(message: Message) -> None:
    """Raise InvalidArgument naming the fields that break their limits (the first twenty)."""
    problems = list(_violations(message))
    if not problems:
        size, limit = message.ByteSize(), request_limit(message.DESCRIPTOR)
        if size > limit:
            problems.append(FieldViolation("request", f"is {size:,} bytes; at most {limit:,}"))
    if problems:
        raise InvalidArgument(problems)


def parse_request(deserialize: Any, body: bytes, type_name: str) -> Message:
    """Decode a request body; one that does not decode is the client's error, never ours."""
    try:
        message: Message = deserialize(body)
    except Exception:
        # The parser's own message names its internals; the client needs only the verdict.
        raise InvalidArgument(
            [FieldViolation("request", f"the body is not a valid {type_name}")]
        ) from None
    return message


def event_violations(envelope: Message) -> list[FieldViolation]:
    """What in an event (its payload included) no consumer can store: the rules of a request
    but its sizes, which its producer checked and the broker's record limit bounds."""
    return list(_walk(envelope, "", 0, sized=False))[:MAX_REPORTED]


def _violations(message: Message) -> Iterator[FieldViolation]:
    yield from _walk(message, "", 0)


def _walk(message: Message, path: str, depth: int, sized: bool = True) -> Iterator[FieldViolation]:
    if depth > MAX_DEPTH:
        yield FieldViolation(path or "request", f"nested deeper than {MAX_DEPTH} levels")
        return
    name_of_type = message.DESCRIPTOR.full_name
    special = _WELL_KNOWN.get(name_of_type)
    if special is not None:
        yield from special(message, path)
        return
    if name_of_type == "google.protobuf.Any" and not sized:
        yield from _packed(message, path, depth)
        return
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        max_bytes, max_items = _limits(field) if sized else (_UNSIZED, _UNSIZED)
        if field.is_repeated:
            if len(value) > max_items:
                yield FieldViolation(name, f"has {len(value):,} items; at most {max_items:,}")
                continue
            entry = _map_entry(field)
            if entry is not None:
                key_field, value_field = entry
                for key, item in value.items():
                    at = f"{name}[{preview(key)}]"
                    yield from _value(key_field, key, at, max_bytes, depth, sized)
                    yield from _value(value_field, item, at, max_bytes, depth, sized)
            else:
                for index, item in enumerate(value):
                    yield from _value(field, item, f"{name}[{index}]", max_bytes, depth, sized)
        else:
            yield from _value(field, value, name, max_bytes, depth, sized)


def _packed(message: Any, path: str, depth: int) -> Iterator[FieldViolation]:
    """The message inside an Any, when this process knows its type (else its consumer ignores
    it or fails on it, and the failure is dead-lettered in turn)."""
    packed: any_pb2.Any = message
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return
    inner = message_factory.GetMessageClass(descriptor)()
    try:
        inner.ParseFromString(packed.value)
    except DecodeError:
        yield FieldViolation(path, f"does not decode as {packed.TypeName()}")
        return
    yield from _walk(inner, path, depth + 1, sized=False)


def _value(
    field: FieldDescriptor, value: Any, name: str, max_bytes: int, depth: int, sized: bool
) -> Iterator[FieldViolation]:
    kind = field.type
    if kind == _FD.TYPE_MESSAGE:
        yield from _walk(value, name, depth + 1, sized)
    elif kind == _FD.TYPE_STRING:
        if "\x00" in value:
            yield FieldViolation(name, f"must not contain NUL characters: {preview(value)}")
        elif len(value) > max_bytes // 4 and len(value.encode()) > max_bytes:
            yield FieldViolation(name, f"is longer than {max_bytes:,} bytes: {preview(value)}")
    elif kind == _FD.TYPE_BYTES:
        if len(value) > max_bytes:
            yield FieldViolation(name, f"is {len(value):,} bytes; at most {max_bytes:,}")
    elif kind == _FD.TYPE_ENUM:
        enum = field.enum_type
        if enum is not None and enum.values_by_number.get(value) is None:
            yield FieldViolation(name, f"{value} is not a value of {enum.full_name}")
    elif kind in _FLOATS:
        if not math.isfinite(value):
            yield FieldViolation(name, f"must be a finite number, not {value}")
    elif kind in _UNSIGNED_32 and value > _INT32_MAX:
        yield FieldViolation(name, f"{value} is over {_INT32_MAX:,}")
    elif kind in _UNSIGNED_64 and value > _INT64_MAX:
        yield FieldViolation(name, f"{value} is over {_INT64_MAX:,}")


def _timestamp(message: Any, path: str) -> Iterator[FieldViolation]:
    low, high = _TIMESTAMP_SECONDS
    if not (low <= message.seconds <= high and 0 <= message.nanos <= _NANOS):
        yield FieldViolation(path, "must be a time between the years 1 and 9999")


def _duration(message: Any, path: str) -> Iterator[FieldViolation]:
    seconds, nanos = message.seconds, message.nanos
    same_sign = seconds == 0 or nanos == 0 or (seconds > 0) == (nanos > 0)
    if not (abs(seconds) <= _DURATION_SECONDS and abs(nanos) <= _NANOS and same_sign):
        yield FieldViolation(path, "must be a duration within 10,000 years")


_WELL_KNOWN = {
    "google.protobuf.Timestamp": _timestamp,
    "google.protobuf.Duration": _duration,
}


@functools.cache
def request_limit(descriptor: Descriptor) -> int:
    """How large a request may be: MAX_REQUEST_BYTES, plus the declared size of any file it
    carries (a bytes field declared larger than that, such as a recorded prompt's WAV), which
    is stored as it is and never becomes an event."""
    return MAX_REQUEST_BYTES + _files(descriptor, 3)


def _files(descriptor: Descriptor, depth: int) -> int:
    total = 0
    for field in descriptor.fields:
        if field.type == _FD.TYPE_BYTES and _limits(field)[0] > MAX_REQUEST_BYTES:
            total += _limits(field)[0]
        elif field.message_type is not None and depth > 0:
            total += _files(field.message_type, depth - 1)
    return total


@functools.cache
def _limits(field: FieldDescriptor) -> tuple[int, int]:
    options = field.GetOptions()
    declared = (
        options.Extensions[limits_pb2.limits]
        if options.HasExtension(limits_pb2.limits)
        else limits_pb2.FieldLimits()
    )
    return declared.max_bytes or DEFAULT_MAX_BYTES, declared.max_items or DEFAULT_MAX_ITEMS


@functools.cache
def _map_entry(field: FieldDescriptor) -> tuple[FieldDescriptor, FieldDescriptor] | None:
    """The key and value fields of a map field; None for any other field."""
    entry: Descriptor | None = field.message_type
    if entry is None or not entry.GetOptions().map_entry:
        return None
    return entry.fields_by_name["key"], entry.fields_by_name["value"]
