"""Page requests and resource ids as a client sends them (tenants repository helpers, no I/O)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lianluo.runtime.errors import InvalidArgument
from lianluo.services.tenants.repository import Page, next_token, parse_id, parse_page

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("asked", "given_size"),
    [(0, 50), (1, 1), (50, 50), (499, 499), (500, 500), (501, 500), (2**31 - 1, 500)],
)
def test_page_size_defaults_to_50_and_is_capped_at_500(asked: int, given_size: int) -> None:
    assert parse_page(asked, "", "queue:t1") == Page(given_size, None)


def test_a_negative_page_size_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_page(-1, "", "queue:t1")

    assert [v.field for v in raised.value.violations] == ["page.page_size"]


def test_the_next_token_continues_after_the_last_item_of_the_same_list() -> None:
    token = next_token("queue:t1", "cards")

    assert parse_page(10, token, "queue:t1") == Page(10, "cards")


def test_a_token_from_another_list_is_refused() -> None:
    token = next_token("queue:tenant-a", "cards")

    with pytest.raises(InvalidArgument) as raised:
        parse_page(10, token, "queue:tenant-b")

    assert [v.field for v in raised.value.violations] == ["page.page_token"]


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "AAAA",
        "e30",
        _token({"after": "cards"}),
        _token({"scope": "queue:t1"}),
        _token(["queue:t1", "cards"]),
        _token("queue:t1"),
        _token(None),
        base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
    ],
    ids=[
        "not base64",
        "not json",
        "bad padding",
        "no scope",
        "no after",
        "a list",
        "a string",
        "null",
        "binary",
    ],
)
def test_a_garbage_token_names_the_token_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_page(10, token, "queue:t1")

    assert [v.field for v in raised.value.violations] == ["page.page_token"]


@PROPERTY
@given(scope=st.text(), last=st.text(), size=st.integers(0, 10_000))
def test_any_token_round_trips_within_its_list(scope: str, last: str, size: int) -> None:
    page = parse_page(size, next_token(scope, last), scope)

    assert page.after == last
    assert 1 <= page.size <= 500


@PROPERTY
@given(st.binary(min_size=1, max_size=64))
def test_any_other_bytes_as_a_token_are_refused_on_the_token_field(raw: bytes) -> None:
    token = base64.urlsafe_b64encode(raw).decode()

    with pytest.raises(InvalidArgument) as raised:
        parse_page(10, token, "queue:t1")

    assert [v.field for v in raised.value.violations] == ["page.page_token"]


def test_an_empty_id_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_id("", "queue_id")

    assert [(v.field, v.description) for v in raised.value.violations] == [
        ("queue_id", "must be set")
    ]


@pytest.mark.parametrize("value", ["cards", " ", "1234", "0b6e8c1e-0000-4000-8000"])
def test_an_id_that_cannot_be_a_uuid_reads_as_not_found(value: str) -> None:
    assert parse_id(value, "queue_id") is None


def test_a_uuid_id_is_parsed() -> None:
    value = uuid.UUID("0b6e8c1e-5d2a-4f3e-9b7c-2a1d3e4f5a6b")

    assert parse_id(str(value), "queue_id") == value
