"""Masking what a message must not keep: payment card numbers and national identity numbers.

Pure. A candidate is masked only when its check digit holds (Luhn for cards, ISO 7064 MOD 11-2
for the 18-character resident id), so order numbers and phone numbers pass untouched. What is
masked keeps its last four characters and its separators, so a person can still say "the card
ending 1111".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CARD_NUMBER = "card_number"
NATIONAL_ID = "national_id"
# A whole answer to an IVR prompt for a secret (a PIN, a card's security code): the IVR gets it
# on its own topic, and every copy kept or relayed says only this.
IVR_SECRET = "ivr_secret"  # noqa: S105 - a name, not a secret
SECRET_MASK = "••••••"  # noqa: S105 - what replaces one

# 13 to 19 digits, optionally grouped by single spaces or dashes, not inside a longer number.
_CARD = re.compile(r"(?<![\d*])\d(?:[ -]?\d){12,18}(?![\d*])")
# 17 digits and a check character (a digit or X), not inside a longer number.
_NATIONAL_ID = re.compile(r"(?<![\dXx*])\d{17}[\dXx](?![\dXx*])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_KEPT = 4


@dataclass(frozen=True)
class Policy:
    keep_card_numbers: bool = False
    keep_national_ids: bool = False


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def national_id_valid(value: str) -> bool:
    body, check = value[:17], value[17].upper()
    return _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11] == check


def _mask(found: str) -> str:
    """Every letter and digit but the last four replaced by '*'; separators stay."""
    positions = [i for i, ch in enumerate(found) if ch.isalnum()]
    hidden = set(positions[:-_KEPT])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(found))


def redact(text: str, policy: Policy) -> tuple[str, list[str]]:
    """The text with what the policy masks masked, and the kinds it masked (in that order)."""
    kinds: list[str] = []

    def masked(kind: str, valid: bool, found: str) -> str:
        if not valid:
            return found
        if kind not in kinds:
            kinds.append(kind)
        return _mask(found)

    if not policy.keep_national_ids:
        text = _NATIONAL_ID.sub(
            lambda m: masked(NATIONAL_ID, national_id_valid(m.group()), m.group()), text
        )
    if not policy.keep_card_numbers:

        def card(m: re.Match[str]) -> str:
            digits = re.sub(r"[ -]", "", m.group())
            return masked(CARD_NUMBER, 13 <= len(digits) <= 19 and luhn(digits), m.group())

        text = _CARD.sub(card, text)
    return text, kinds
