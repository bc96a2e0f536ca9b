"""What a message keeps of a card number or a national id: only what the policy allows."""

from __future__ import annotations

import pytest

from lianluo.domain.redaction import CARD_NUMBER, NATIONAL_ID, Policy, luhn, redact

MASK_ALL = Policy()


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("4111 1111 1111 1111", "**** **** **** 1111"),
        ("4111-1111-1111-1111", "****-****-****-1111"),
        ("5500005555555559", "************5559"),
        ("378282246310005", "***********0005"),  # 15 digits (Amex)
        ("6212345678901265", "************1265"),  # 16 digits (UnionPay), Luhn-valid
    ],
)
def test_a_card_number_keeps_only_its_last_four(typed: str, kept: str) -> None:
    assert luhn(typed.replace(" ", "").replace("-", ""))
    assert redact(f"my card is {typed}, thanks", MASK_ALL) == (
        f"my card is {kept}, thanks",
        [CARD_NUMBER],
    )


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112",  # fails Luhn
        "call me on +86 138 0013 8000",  # a phone number
        "tracking 123456789012",  # 12 digits: too short for a card
        "account 41111111111111111111",  # 20 digits: too long
    ],
)
def test_numbers_that_are_not_cards_pass_untouched(text: str) -> None:
    assert redact(text, MASK_ALL) == (text, [])


def test_a_national_id_with_a_valid_check_character_is_masked() -> None:
    assert redact("id 11010519491231002X", MASK_ALL) == ("id **************002X", [NATIONAL_ID])
    # A wrong check character: not an id.
    assert redact("id 110105194912310021", MASK_ALL)[1] == []


def test_the_tenants_policy_keeps_what_it_says() -> None:
    text = "card 4111111111111111, id 11010519491231002X"
    kept_cards = redact(text, Policy(keep_card_numbers=True))
    assert kept_cards == ("card 4111111111111111, id **************002X", [NATIONAL_ID])
    assert redact(text, Policy(keep_card_numbers=True, keep_national_ids=True)) == (text, [])
