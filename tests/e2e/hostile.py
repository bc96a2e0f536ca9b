"""Hostile requests for any gRPC method, built from its descriptor alone.

Each variant is a request with one field (at any depth) set to a value that has broken a service
before or could: NUL characters, 2 MiB strings, the edges of every integer width, NaN, unknown
enum numbers, timestamps outside Python's datetime, too many items, and text that looks like SQL
or a broken URL. The fuzz test sends every variant of every method the cell's reflection lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

F = FieldDescriptor
TWO_MIB = 2 << 20

STRINGS = [
    "a\x00b",
    "x" * TWO_MIB,
    "字" * 300,  # 900 bytes: under the default limit, three times as many bytes as characters
    "http://[::1",
    "' or 1=1; drop table outbox; --",
    "../../../../etc/passwd",
    "\u202e\ud7ff%s%n{{x}}",
]
INTEGERS = {
    F.TYPE_INT32: [-1, -(2**31), 2**31 - 1],
    F.TYPE_SINT32: [-(2**31), 2**31 - 1],
    F.TYPE_SFIXED32: [-(2**31), 2**31 - 1],
    F.TYPE_INT64: [-(2**63), 2**63 - 1],
    F.TYPE_SINT64: [-(2**63), 2**63 - 1],
    F.TYPE_SFIXED64: [-(2**63), 2**63 - 1],
    F.TYPE_UINT32: [2**32 - 1],
    F.TYPE_FIXED32: [2**32 - 1],
    F.TYPE_UINT64: [2**64 - 1],
    F.TYPE_FIXED64: [2**64 - 1],
}
FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e-320]
BYTES = [b"\x00" * 8, b"\xff" * TWO_MIB]
# (seconds, nanos): far outside, at the very edges of, and just inside Timestamp's range.
TIMESTAMPS = [
    (2**62, 0),
    (-(2**62), 0),
    (0, -1),
    (253_402_300_799, 999_999_999),
    (-62_135_596_800, 0),
]
DURATIONS = [(2**62, 0), (-(2**62), 0), (1, -5)]
MAX_DEPTH = 3


@dataclass(frozen=True)
class Variant:
    path: str
    value: str
    build: Callable[[], Message]


def variants(message_class: type[Message], base: Callable[[], Message]) -> Iterator[Variant]:
    """Every hostile variant of a request, each on top of a fresh `base()`."""
    yield from _fields(message_class.DESCRIPTOR, [], base, set())


def _fields(
    descriptor: Descriptor, path: list[FieldDescriptor], base: Callable[[], Message], seen: set[str]
) -> Iterator[Variant]:
    if len(path) >= MAX_DEPTH or descriptor.full_name in seen:
        return
    for field in descriptor.fields:
        here = [*path, field]
        name = ".".join(f.name for f in here)
        if field.type == F.TYPE_MESSAGE:
            assert field.message_type is not None
            entry = field.message_type
            if entry.GetOptions().map_entry:
                for key, value in _map_values(entry):
                    yield Variant(
                        name,
                        f"map {key!r:.20}: {value!r:.20}",
                        _builder(base, here, ("map", key, value)),
                    )
                continue
            special = _well_known(field.message_type.full_name)
            if special:
                for pair in special:
                    yield Variant(name, repr(pair), _builder(base, here, ("wkt", pair)))
                continue
            if field.is_repeated:
                yield Variant(name, "1,001 empty items", _builder(base, here, ("many",)))
            yield from _fields(field.message_type, here, base, seen | {descriptor.full_name})
            continue
        for value in _scalars(field):
            yield Variant(name, f"{value!r:.40}", _builder(base, here, ("set", value)))
        if field.is_repeated:
            yield Variant(name, "1,001 items", _builder(base, here, ("many",)))


def _scalars(field: FieldDescriptor) -> list[Any]:
    if field.type == F.TYPE_STRING:
        return STRINGS
    if field.type == F.TYPE_BYTES:
        return BYTES
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return FLOATS
    if field.type == F.TYPE_BOOL:
        return [True]
    if field.type == F.TYPE_ENUM:
        assert field.enum_type is not None
        return [max(v.number for v in field.enum_type.values) + 1, -1, 999_999]
    return INTEGERS.get(field.type, [])


def _map_values(entry: Descriptor) -> list[tuple[Any, Any]]:
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    keys = _scalars(key_field)[:2] if key_field.type != F.TYPE_BOOL else [True]
    if value_field.type == F.TYPE_MESSAGE:
        return [(k, None) for k in keys]
    ok_key: Any = "k" if key_field.type == F.TYPE_STRING else 1
    return [(k, _default(value_field)) for k in keys] + [(ok_key, v) for v in _scalars(value_field)]


def _default(field: FieldDescriptor) -> Any:
    if field.type == F.TYPE_STRING:
        return "v"
    if field.type == F.TYPE_BYTES:
        return b"v"
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return 1.0
    if field.type == F.TYPE_BOOL:
        return True
    return 1


def _well_known(full_name: str) -> list[tuple[int, int]]:
    if full_name == "google.protobuf.Timestamp":
        return TIMESTAMPS
    if full_name == "google.protobuf.Duration":
        return DURATIONS
    return []


def _builder(
    base: Callable[[], Message], path: list[FieldDescriptor], action: tuple[Any, ...]
) -> Callable[[], Message]:
    def build() -> Message:
        message = base()
        holder: Any = message
        for field in path[:-1]:
            container = getattr(holder, field.name)
            holder = container.add() if field.is_repeated else container
        leaf = path[-1]
        kind = action[0]
        if kind == "set":
            if leaf.is_repeated:
                getattr(holder, leaf.name).append(action[1])
            else:
                setattr(holder, leaf.name, action[1])
        elif kind == "many":
            items = getattr(holder, leaf.name)
            for _ in range(1_001):
                items.add() if leaf.type == F.TYPE_MESSAGE else items.append(_default(leaf))
        elif kind == "map":
            _, key, value = action
            target = getattr(holder, leaf.name)
            if value is None:
                target[key].SetInParent()
            else:
                target[key] = value
        else:
            seconds, nanos = action[1]
            stamp = (
                getattr(holder, leaf.name).add() if leaf.is_repeated else getattr(holder, leaf.name)
            )
            stamp.seconds, stamp.nanos = seconds, nanos
        return message

    return build
