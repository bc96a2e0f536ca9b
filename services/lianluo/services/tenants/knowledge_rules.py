"""What a valid article, canned response and search are: pure checks over the API's messages.

Sizes in bytes are checked at the entry of every RPC from the limits declared in
knowledge.proto; these are the rules a size cannot say.
"""

from __future__ import annotations

import re

from lianluo.domain.words import detect_language
from lianluo.runtime.errors import Violations
from lianluo.services.tenants.domain import RESOURCE_NAME
from lianluo.tenants.v1 import knowledge_pb2 as kpb

LANGUAGES = ("zh", "en")
MAX_TITLE = 200
MAX_QUERY = 200
MAX_TAG = 40
SHORTCUT = re.compile(r"^/[a-z0-9][a-z0-9_-]{0,39}$")
SHORTCUT_PREFIX = re.compile(r"^/[a-z0-9_-]{0,40}$")
_TAG = re.compile(r"^\S{1,40}$")


def _text(v: Violations, value: str, path: str, max_chars: int | None = None) -> None:
    if v.check(bool(value.strip()), path, "must be set (not only spaces)") and max_chars:
        v.check(len(value) <= max_chars, path, f"at most {max_chars} characters")


def _language(v: Violations, value: str, path: str) -> None:
    v.check(value in ("", *LANGUAGES), path, 'must be "zh", "en", or empty to detect it')


def validate_article(a: kpb.Article, p: str = "article") -> None:
    v = Violations()
    _text(v, a.title, f"{p}.title", MAX_TITLE)
    _text(v, a.body, f"{p}.body")
    _language(v, a.language, f"{p}.language")
    for i, tag in enumerate(a.tags):
        v.check(bool(_TAG.fullmatch(tag)), f"{p}.tags[{i}]", "1 to 40 characters, no spaces")
    v.check(len(set(a.tags)) == len(a.tags), f"{p}.tags", "a tag is listed twice")
    v.raise_if_any()


def validate_canned_response(c: kpb.CannedResponse, p: str = "canned_response") -> None:
    v = Violations()
    v.check(
        bool(SHORTCUT.fullmatch(c.shortcut)),
        f"{p}.shortcut",
        '"/" then 1 to 40 of a-z 0-9 - _, for example "/refund"',
    )
    _text(v, c.title, f"{p}.title", MAX_TITLE)
    _text(v, c.text, f"{p}.text")
    _language(v, c.language, f"{p}.language")
    for i, queue in enumerate(c.queues):
        v.check(bool(RESOURCE_NAME.fullmatch(queue)), f"{p}.queues[{i}]", "must be a queue name")
    v.check(len(set(c.queues)) == len(c.queues), f"{p}.queues", "a queue is listed twice")
    v.raise_if_any()


def validate_search(query: str, language: str) -> None:
    v = Violations()
    _text(v, query, "query", MAX_QUERY)
    v.check(language in ("", *LANGUAGES), "language", 'must be "zh", "en", or empty for both')
    v.raise_if_any()


def validate_canned_filters(shortcut_prefix: str, queue: str) -> None:
    v = Violations()
    if shortcut_prefix:
        v.check(
            bool(SHORTCUT_PREFIX.fullmatch(shortcut_prefix)),
            "shortcut_prefix",
            '"/" then up to 40 of a-z 0-9 - _, or empty',
        )
    if queue:
        v.check(bool(RESOURCE_NAME.fullmatch(queue)), "queue", "must be a queue name")
    v.raise_if_any()


def language_of(declared: str, *texts: str) -> str:
    """The declared language, or the one the texts are written in."""
    return declared or detect_language(*texts)
