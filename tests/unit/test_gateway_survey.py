"""The satisfaction survey's rules in the channel gateway, without I/O: when a customer is
asked, which texts answer, for how long, and in which language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.services.gateway import domain

S = mpb.InteractionState


@pytest.mark.parametrize(
    ("state", "code", "channel", "asked"),
    [
        (S.INTERACTION_STATE_CLOSED, "resolved", "sms", True),
        (S.INTERACTION_STATE_CLOSED, "", "wechat", True),
        (S.INTERACTION_STATE_CLOSED, "unresolved", "email", True),
        # Self-service or the queue ended it: no person handled it.
        (S.INTERACTION_STATE_CLOSED, "self_service", "sms", False),
        (S.INTERACTION_STATE_CLOSED, "overflow", "sms", False),
        # Not closed normally.
        (S.INTERACTION_STATE_ABANDONED, "resolved", "sms", False),
        (S.INTERACTION_STATE_OVERFLOWED, "resolved", "email", False),
        # The web chat asks in the widget; an unknown or deleted channel is not asked on.
        (S.INTERACTION_STATE_CLOSED, "resolved", "web", False),
        (S.INTERACTION_STATE_CLOSED, "resolved", None, False),
    ],
)
def test_only_a_closed_conversation_a_person_handled_on_a_later_channel_is_surveyed(
    state: int, code: str, channel: str | None, asked: bool
) -> None:
    assert domain.asks_survey(state, code, channel) is asked


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("4", 4),
        (" 1 ", 1),
        ("5\n", 5),
        ("\u3000\uff13\u3000", 3),  # a full-width 3, between ideographic spaces
        ("\uff15", 5),  # a full-width 5
    ],
)
def test_a_single_digit_1_to_5_answers_the_survey(text: str, score: int) -> None:
    assert domain.survey_score(text) == score


@pytest.mark.parametrize(
    "text", ["0", "6", "45", "4.", "4 stars", "four", "", " ", "④", "٤", "-4", "+4", "4/5"]
)
def test_any_other_text_is_no_answer(text: str) -> None:
    assert domain.survey_score(text) is None


def test_a_survey_takes_one_answer_within_a_day() -> None:
    asked = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert domain.survey_answerable(asked, False, asked + timedelta(minutes=5))
    assert domain.survey_answerable(asked, False, asked + timedelta(hours=24))
    assert not domain.survey_answerable(asked, False, asked + timedelta(hours=24, seconds=1))
    assert not domain.survey_answerable(asked, True, asked + timedelta(minutes=5))


def test_the_survey_speaks_the_customers_language_else_english() -> None:
    assert domain.guess_language("我的卡丢了") == "zh"
    assert domain.guess_language("卡 lost") == ""
    assert domain.guess_language("My card is lost") == ""
    assert domain.survey_text("") == "How did we do? Reply 1 (poor) to 5 (great)."
    assert "1" in domain.survey_text("zh") and "5" in domain.survey_text("zh-CN")
    assert domain.survey_thanks("") == "Thank you for your rating."
    assert domain.survey_thanks("zh") == "感谢您的评价。"


def test_an_email_survey_lists_one_link_per_score_in_order() -> None:
    links = [f"https://gw.example/v1/survey/t/i/{n}?sig" for n in range(1, 6)]
    text = domain.survey_text("", links)
    lines = text.splitlines()
    assert lines[0].startswith("How did we do?")
    assert lines[-5:] == [f"{n}: {link}" for n, link in enumerate(links, 1)]
