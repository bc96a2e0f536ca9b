"""What the voice service decides without I/O: which tenant a dialled number reaches, the
digits a caller pressed, and what a prompt says aloud."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import tenants_pb2 as pb

DIGIT = re.compile(r"^[0-9*#A-D]$")
# What a Request-URI's user part is when it dials a number (not a colleague by name).
NUMBER = re.compile(r"\+?[0-9*#]+")
# A keyed-in answer (a collect node's: a PIN, an account number) ends with the hash key, or
# when no key comes for this long.
ENTRY_END = "#"
ENTRY_GAP_SECONDS = 3.0
# A phone that handed its call on (REFER) and was told it went is hung up after this long,
# if it has not hung up itself.
LET_GO_SECONDS = 10.0
# espeak-ng's voices for the languages a voice channel may speak.
VOICES = {"": "en", "en": "en", "zh": "cmn"}
CHOICE = {"en": "For {label}, press {digit}.", "zh": "{label}，请按{digit}。"}  # noqa: RUF001
HOLD = {
    "en": "Please hold. We are finding someone to help you.",
    "zh": "请稍候，我们正在为您转接。",  # noqa: RUF001
}


@dataclass(frozen=True)
class Line:
    """A number's owner: the tenant and the voice channel callers reach it through."""

    tenant_id: str
    channel: pb.Channel


def numbers(channels: Iterable[tuple[str, pb.Channel]]) -> dict[str, Line]:
    """Each dialled number to the channel that has it. A number two tenants list stays with
    the channel created first, so that no tenant can take another's calls by naming its
    number."""
    owners: dict[str, Line] = {}
    ordered = sorted(channels, key=lambda tc: (tc[1].create_time.ToNanoseconds(), tc[1].id))
    for tenant_id, channel in ordered:
        if channel.WhichOneof("kind") != "voice":
            continue
        for number in channel.voice.numbers:
            owners.setdefault(number, Line(tenant_id, channel))
    return owners


def dialled(user: str) -> str:
    """The number in a Request-URI's user part: "+8621..." as is; "tel"-style separators out."""
    return re.sub(r"[\s().-]", "", user)


def info_digit(content_type: str, body: bytes) -> str:
    """The digit of a SIP INFO with `application/dtmf-relay` ("Signal=5") or
    `application/dtmf` ("5"); empty when there is none."""
    text = body.decode("utf-8", "replace")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/dtmf-relay":
        found = re.search(r"(?im)^\s*signal\s*=\s*(\S)\s*$", text)
        value = found.group(1).upper() if found else ""
    elif kind == "application/dtmf":
        value = text.strip().upper()
    else:
        return ""
    return value if DIGIT.match(value) else ""


def spoken(text: str, choices: Iterable[tuple[str, str]], language: str) -> str:
    """A prompt as said on the phone: its text, then each choice with its digit."""
    lang = "zh" if language.startswith("zh") else "en"
    said = [text.strip()] if text.strip() else []
    said += [CHOICE[lang].format(label=label, digit=digit) for digit, label in choices if digit]
    return " ".join(said)


def hold_notice(language: str) -> str:
    return HOLD["zh" if language.startswith("zh") else "en"]


def voice_of(language: str) -> str:
    return VOICES.get("zh" if language.startswith("zh") else language, "en")


def keyed(prompt: common.Prompt | None) -> bool:
    """Whether the caller answers `prompt` with several keys (a free answer) rather than one
    (a menu's choice, sent as soon as it is pressed)."""
    return prompt is not None and prompt.expects_answer and not prompt.choices
