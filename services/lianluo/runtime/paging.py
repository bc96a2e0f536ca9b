"""Pagination as AIP-158 has it: a page size, and opaque tokens bound to the list they came from.

A token carries the position after which the next page starts (for example the last name, or
a time and an id) and the scope it was issued for, so a token of one list, tenant or filter is
refused by another instead of silently returning the wrong rows.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from lianluo.runtime.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE = 50
MAX_PAGE = 500


def page_size(requested: int) -> int:
    """The size to serve: the default for 0, capped at the maximum; negative is refused."""
    if requested < 0:
        raise InvalidArgument([FieldViolation("page.page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def encode_token(scope: str, after: Any) -> str:
    """A token for the page after `after` (any JSON value) in the list named by `scope`."""
    return base64.urlsafe_b64encode(json.dumps({"scope": scope, "after": after}).encode()).decode()


def decode_token(token: str, scope: str) -> Any:
    """The `after` value of a token of this list; INVALID_ARGUMENT on page.page_token else."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        if decoded["scope"] != scope:
            raise ValueError(scope)
        return decoded["after"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument(
            [FieldViolation("page.page_token", "not a token from this list")]
        ) from error
