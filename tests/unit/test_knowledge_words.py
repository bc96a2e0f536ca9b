"""The knowledge base's words, queries, snippets and rules, without anything running."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lianluo.domain import words as text
from lianluo.runtime.errors import InvalidArgument
from lianluo.services.tenants import knowledge_rules as rules
from lianluo.tenants.v1 import knowledge_pb2 as kpb

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module")
def cut() -> text.Cut:
    return text.segmenter()


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


# ---------------------------------------------------------------- segmenting


@pytest.mark.parametrize(
    ("sentence", "words"),
    [
        # Chinese is cut into words, with the shorter words inside long ones as well.
        ("信用卡到期了怎么办", ["信用", "信用卡", "到期"]),
        ("如何申请退款\uff1f", ["申请", "退款"]),
        ("修改密码", ["修改", "密码"]),
        ("我想把账单分期付款", ["账单", "分期", "付款", "分期付款"]),
        # English loses its stopwords and endings.
        ("My card expired, how do I get a new one?", ["card", "expir", "get", "new", "one"]),
        ("Refunds are processed within 7 days", ["refund", "process", "within", "7", "day"]),
        ("I forgot my password; resetting it", ["forgot", "password", "reset"]),
        # Mixed text: each script as its own words; punctuation and stray letters dropped.
        ("WiFi密码 it's 3.5%", ["wifi", "密码", "3", "5"]),
    ],
)
def test_terms_segment_chinese_and_stem_english(
    cut: text.Cut, sentence: str, words: list[str]
) -> None:
    assert text.terms(cut, sentence) == words


@pytest.mark.parametrize(
    "forms",
    [
        ["refund", "refunds", "refunded", "refunding"],
        ["charge", "charges", "charged", "charging"],
        ["expire", "expires", "expired", "expiring"],
        ["reset", "resets", "resetting"],
        ["reply", "replies", "replied"],
        ["box", "boxes"],
        ["password", "passwords"],
    ],
)
def test_the_forms_of_a_word_share_one_stem(forms: list[str]) -> None:
    assert len({text.stem(f) for f in forms}) == 1, {f: text.stem(f) for f in forms}


@pytest.mark.parametrize("word", ["status", "address", "analysis", "bus", "fee", "pin", "信用卡"])
def test_words_that_only_look_inflected_are_kept(word: str) -> None:
    assert text.stem(word) == word


@PROPERTY
@given(st.text(max_size=200))
def test_a_query_and_an_article_of_the_same_text_have_the_same_words(
    cut: text.Cut, sample: str
) -> None:
    words = text.terms(cut, sample)
    assert words == text.terms(cut, sample)
    assert all(w and w == w.lower() and w not in text.STOPWORDS for w in words)
    assert all(" " not in w for w in words), "a word never holds a space"


# ---------------------------------------------------------------- queries


def test_query_operands_are_distinct_and_quoted_for_tsquery() -> None:
    operands = text.query_terms(["refund", "o'brien", "back\\slash", "refund"])
    assert operands == ["'refund'", "'o''brien'", "'back\\\\slash'"]
    assert text.tsquery_text(operands) == "'refund' | 'o''brien' | 'back\\\\slash'"


def test_a_query_of_only_common_words_has_nothing_to_look_for(cut: text.Cut) -> None:
    assert text.query_terms(text.terms(cut, "how do I ... 怎么办\uff1f")) == []
    assert text.tsquery_text([]) == ""


# ---------------------------------------------------------------- language and snippets


@pytest.mark.parametrize(
    ("texts", "language"),
    [
        (("信用卡到期", "您的信用卡即将到期"), "zh"),
        (("Card expiry", "Your card expires soon"), "en"),
        (("Your Visa 信用卡", ""), "zh"),  # 3 of 11 letters are Chinese
        (("Visa card for travel abroad 卡", ""), "en"),  # 1 of 23
        (("12345", ""), "en"),  # no letters at all
    ],
)
def test_the_language_is_detected_from_the_share_of_chinese(
    texts: tuple[str, str], language: str
) -> None:
    assert text.detect_language(*texts) == language


def test_a_snippet_starts_shortly_before_the_first_match_and_marks_its_cuts() -> None:
    body = "Intro words here. " * 20 + "To get a refund, call us. " + "Closing words. " * 20
    shown = text.snippet(body, ["refund"])
    assert shown.startswith("…") and shown.endswith("…")
    assert "refund" in shown and len(shown) <= text.SNIPPET_CHARS
    assert shown.index("refund") <= 60


def test_a_snippet_without_a_match_is_the_start_and_a_short_body_is_whole() -> None:
    body = "退款通常在7至10个工作日内退回。" * 20
    assert text.snippet(body, ["积分"]).startswith("退款通常")
    assert text.snippet("Short   body\nhere", ["none"]) == "Short body here"


@PROPERTY
@given(st.text(max_size=600), st.lists(st.text(min_size=1, max_size=5), max_size=3))
def test_a_snippet_is_never_longer_than_its_size(body: str, words: list[str]) -> None:
    assert len(text.snippet(body, words)) <= text.SNIPPET_CHARS


# ---------------------------------------------------------------- the segmenter's loading


async def test_the_segmenter_loads_once_in_a_thread_however_many_ask_at_once() -> None:
    loads: list[str] = []

    def load() -> text.Cut:
        loads.append(threading.current_thread().name)
        return lambda s: s.split()

    segmenter = text.Segmenter(load)
    results = await asyncio.gather(*(segmenter.terms("refund the Charges") for _ in range(5)))
    assert results == [["refund", "charg"]] * 5
    assert len(loads) == 1 and loads[0] != threading.main_thread().name


# ---------------------------------------------------------------- rules


def article(**overrides: object) -> kpb.Article:
    fields_ = {"title": "Card expiry", "body": "Your card expires.", "tags": ["cards"]}
    fields_.update(overrides)
    return kpb.Article(**fields_)  # type: ignore[arg-type]


def test_a_valid_article_passes() -> None:
    rules.validate_article(article())
    rules.validate_article(article(language="zh", tags=["信用卡", "到期"]))


def test_a_bad_article_names_every_field() -> None:
    bad = article(title=" ", body="", language="fr", tags=["two words", "ok", "ok"])
    with pytest.raises(InvalidArgument) as error:
        rules.validate_article(bad)
    assert fields(error) == {
        "article.title",
        "article.body",
        "article.language",
        "article.tags[0]",
        "article.tags",
    }
    with pytest.raises(InvalidArgument) as error:
        rules.validate_article(article(title="x" * 201))
    assert fields(error) == {"article.title"}


def test_a_bad_canned_response_names_every_field() -> None:
    rules.validate_canned_response(
        kpb.CannedResponse(shortcut="/refund", title="Refund", text="Sure.", queues=["cards"])
    )
    bad = kpb.CannedResponse(shortcut="refund", title="", text=" ", queues=["Cards!", "a", "a"])
    with pytest.raises(InvalidArgument) as error:
        rules.validate_canned_response(bad)
    assert fields(error) == {
        "canned_response.shortcut",
        "canned_response.title",
        "canned_response.text",
        "canned_response.queues[0]",
        "canned_response.queues",
    }


@pytest.mark.parametrize("shortcut", ["/", "/Refund", "/re fund", "/" + "a" * 41, "//x", "/-x"])
def test_shortcuts_are_a_slash_and_a_short_slug(shortcut: str) -> None:
    assert not rules.SHORTCUT.fullmatch(shortcut)


def test_search_and_list_filters_name_the_field() -> None:
    rules.validate_search("退款", "")
    with pytest.raises(InvalidArgument) as error:
        rules.validate_search("  ", "de")
    assert fields(error) == {"query", "language"}
    with pytest.raises(InvalidArgument) as error:
        rules.validate_search("x" * 201, "")
    assert fields(error) == {"query"}
    rules.validate_canned_filters("/ref", "cards")
    rules.validate_canned_filters("", "")
    with pytest.raises(InvalidArgument) as error:
        rules.validate_canned_filters("ref%", "No Queue")
    assert fields(error) == {"shortcut_prefix", "queue"}


def test_an_empty_language_is_detected_and_a_declared_one_kept() -> None:
    assert rules.language_of("", "退款", "退款多久到账") == "zh"
    assert rules.language_of("en", "退款", "退款多久到账") == "en"
