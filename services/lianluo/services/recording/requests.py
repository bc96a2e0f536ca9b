"""Checks of RecordingService requests and the page tokens of ListRecordings. No I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime.errors import InvalidArgument, Violations
from lianluo.runtime.paging import DEFAULT_PAGE, MAX_PAGE, decode_token, encode_token

DEFAULT_LINK_TTL_SECONDS = 3600
MAX_LINK_TTL_SECONDS = 604_800
# google.protobuf.Timestamp's own range: 0001-01-01 to 9999-12-31.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


@dataclass(frozen=True)
class ListFilter:
    start_time: datetime | None
    end_time: datetime | None
    customer_id: str
    agent_id: str
    text: str = ""
    queue: str = ""
    channel: int = 0
    resolution: str = ""


@dataclass(frozen=True)
class Page:
    size: int
    # The (start time, interaction id) of the last item of the previous page.
    after: tuple[datetime, str] | None


def require_ids(v: Violations, tenant_id: str, interaction_id: str | None = None) -> None:
    v.check(bool(tenant_id), "tenant_id", "must be set")
    if interaction_id is not None:
        v.check(bool(interaction_id), "interaction_id", "must be set")


def _time(v: Violations, stamp: timestamp_pb2.Timestamp, name: str) -> datetime | None:
    if not v.check(
        _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000,
        name,
        "not a valid time",
    ):
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def list_request(request: pb.ListRecordingsRequest) -> tuple[ListFilter, Page]:
    """The filter and page of a ListRecordings request; every bad field is named at once."""
    v = Violations()
    require_ids(v, request.tenant_id)
    start = _time(v, request.start_time, "start_time") if request.HasField("start_time") else None
    end = _time(v, request.end_time, "end_time") if request.HasField("end_time") else None
    if start is not None and end is not None:
        v.check(end > start, "end_time", "must be after start_time")
    v.check(request.page.page_size >= 0, "page.page_size", "must not be negative")
    flt = ListFilter(
        start,
        end,
        request.customer_id,
        request.agent_id,
        " ".join(request.text.split()),
        request.queue,
        request.channel,
        request.resolution,
    )
    after = None
    if request.page.page_token:
        after = _parse_token(v, request.page.page_token, list_scope(request.tenant_id, flt))
    v.raise_if_any()
    return flt, Page(min(request.page.page_size or DEFAULT_PAGE, MAX_PAGE), after)


def list_scope(tenant_id: str, flt: ListFilter) -> str:
    """What a page token is bound to: the tenant and the filter it was issued for."""
    parts = [
        tenant_id,
        flt.start_time.isoformat() if flt.start_time else "",
        flt.end_time.isoformat() if flt.end_time else "",
        flt.customer_id,
        flt.agent_id,
        flt.text,
        flt.queue,
        str(flt.channel),
        flt.resolution,
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def next_token(scope: str, start_time: datetime, interaction_id: str) -> str:
    return encode_token(scope, [start_time.isoformat(), interaction_id])


def _parse_token(v: Violations, token: str, scope: str) -> tuple[datetime, str] | None:
    try:
        start, interaction_id = decode_token(token, scope)
        return datetime.fromisoformat(start), str(interaction_id)
    except (InvalidArgument, ValueError, TypeError):
        v.add("page.page_token", "not a token from this list")
        return None


def link_ttl_seconds(request: pb.ExportRequest) -> int:
    v = Violations()
    require_ids(v, request.tenant_id, request.interaction_id)
    v.check(
        0 <= request.link_ttl_seconds <= MAX_LINK_TTL_SECONDS,
        "link_ttl_seconds",
        f"must be between 0 and {MAX_LINK_TTL_SECONDS}",
    )
    v.raise_if_any()
    return request.link_ttl_seconds or DEFAULT_LINK_TTL_SECONDS


def legal_hold_request(request: pb.SetLegalHoldRequest) -> None:
    v = Violations()
    require_ids(v, request.tenant_id, request.interaction_id)
    # A hold must be traceable to the case or order that asked for it.
    if request.held:
        v.check(bool(request.reason.strip()), "reason", "must be set to hold a record")
    v.raise_if_any()


def retention_request(request: pb.SetRetentionRequest) -> datetime:
    v = Violations()
    require_ids(v, request.tenant_id, request.interaction_id)
    until = None
    if v.check(request.HasField("retain_until"), "retain_until", "must be set"):
        until = _time(v, request.retain_until, "retain_until")
    v.raise_if_any()
    if until is None:  # unreachable: raise_if_any raised
        raise InvalidArgument(v.items)
    return until


def ids_request(tenant_id: str, interaction_id: str) -> None:
    v = Violations()
    require_ids(v, tenant_id, interaction_id)
    v.raise_if_any()
