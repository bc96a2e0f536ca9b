"""Words to search by: Chinese segmented by jieba, English reduced to stems (the knowledge base,
and the recordings of conversations).

The same `terms` function builds an article's words when it is stored and a query's words when
it is searched, so the two sides can never disagree about what a word is. Postgres only stores
the result (a tsvector built with the 'simple' configuration, which changes nothing but case)
and ranks it; docs/knowledge.md says why the segmenting happens here rather than in Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Iterator

import jieba

# What a segmenter does: text in, words out (jieba's search mode, which also yields the
# shorter words inside a long one: 信用卡 -> 信用, 信用卡).
Cut = Callable[[str], Iterable[str]]

# A word is a run of letters or digits (in any script); punctuation and spaces separate words.
_WORD = re.compile(r"[^\W_]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]")
_ASCII_WORD = re.compile(r"[a-z]+")
_VOWEL = re.compile(r"[aeiouy]")
# The share of letters that are Chinese characters from which a text counts as Chinese.
_CHINESE_SHARE = 0.2
SNIPPET_CHARS = 160
_SNIPPET_LEAD = 40

# Words too common to tell one article from another; left out of articles and queries alike.
_STOPWORDS = """
    a an and are as at be been but by can could did do does doing for from had has have how i
    if in into is it its me my no not of on or our please should so that the their them then
    there these they this to us was we were what when where which who why will with would you
    your yours
    的 了 是 在 和 与 及 或 我 我的 我们 你 你的 您 您的 他 她 它 这 那 这个 那个 吗 呢 吧 啊 呀
    也 都 就 还 又 要 想 会 能 可以 请 请问 怎么 怎么办 怎样 如何 什么 为什么 哪里 哪 有 没有
    一个 个 把 被 让 给 对 从 向 到 后 前 时 上 下 中
"""
STOPWORDS = frozenset(_STOPWORDS.split())


def segmenter() -> Cut:
    """jieba with its dictionary loaded: about half a second of CPU and 55 MB, so call it once
    (Segmenter does) and never on the event loop."""
    jieba.setLogLevel(logging.WARNING)  # it announces every load on stderr otherwise
    tokenizer = jieba.Tokenizer()
    # Built from the dictionary inside the package rather than by `initialize()`, which reads
    # and writes a 9 MB marshal cache in the shared temp folder: a file anyone on the host could
    # plant, for no gain (building takes the same 0.4 s as loading it).
    with tokenizer.get_dict_file() as dictionary:
        tokenizer.FREQ, tokenizer.total = tokenizer.gen_pfdict(dictionary)
    tokenizer.initialized = True
    cut: Cut = tokenizer.lcut_for_search
    return cut


class Segmenter:
    """The process's one jieba, loaded on first use.

    Loading reads and parses a 5 MB dictionary: done lazily so a tenants replica that never sees
    a knowledge call never pays for it, and in a thread so the calls the replica is serving
    meanwhile are not held up for half a second. The lock makes concurrent first calls wait for
    one load instead of each starting their own.
    """

    def __init__(self, load: Callable[[], Cut] = segmenter) -> None:
        self._load = load
        self._cut: Cut | None = None
        self._lock = asyncio.Lock()

    async def ready(self) -> Cut:
        if self._cut is None:
            async with self._lock:
                if self._cut is None:
                    self._cut = await asyncio.to_thread(self._load)
        return self._cut

    async def terms(self, text: str) -> list[str]:
        """The words of `text`, segmented in a thread (a long article takes a while)."""
        cut = await self.ready()
        return await asyncio.to_thread(terms, cut, text)


def stem(word: str) -> str:
    """A lower-case English word without its plural or verb ending: refunds, refunded and
    refunding are all "refund"; charge, charges and charging all "charg". Other words as
    they are."""
    if not _ASCII_WORD.fullmatch(word) or len(word) <= 3:
        return word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for ending in ("ing", "ed"):
        base = word[: -len(ending)]
        if word.endswith(ending) and len(base) >= 3 and _VOWEL.search(base):
            word = base
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # resetting -> resett -> reset
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def terms(cut: Cut, text: str) -> list[str]:
    """The searchable words of `text`, in order: lower case, stemmed, without stopwords and
    without single Latin letters (the "s" of "it's")."""
    found = []
    for piece in cut(text.lower()):
        for word in _WORD.findall(piece):
            if word in STOPWORDS or (len(word) == 1 and word.isascii() and word.isalpha()):
                continue
            found.append(stem(word))
    return found


def document_text(words: Iterable[str]) -> str:
    """Words for `to_tsvector('simple', ...)`: separated by spaces, nothing else to parse."""
    return " ".join(words)


def _quoted(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def query_terms(words: Iterable[str]) -> list[str]:
    """The distinct words of a query, in order, each quoted as one tsquery operand."""
    return [_quoted(w) for w in dict.fromkeys(words)]


def tsquery_text(operands: list[str]) -> str:
    """A query matching an article with any of the words (ranking prefers those with more);
    empty when there is nothing to look for."""
    return " | ".join(operands)


def detect_language(*texts: str) -> str:
    """ "zh" when at least a fifth of the letters are Chinese characters, else "en"."""
    letters = han = 0
    for text in texts:
        letters += len(_LETTER.findall(text))
        han += len(_HAN.findall(text))
    return "zh" if letters and han / letters >= _CHINESE_SHARE else "en"


def snippet(body: str, words: Iterable[str], size: int = SNIPPET_CHARS) -> str:
    """Up to `size` characters of `body` around the first place one of `words` (as `terms`
    makes them) occurs, with "…" where it was cut; the start of the body if none occurs."""
    text = " ".join(body.split())
    if len(text) <= size:
        return text
    places = [p for p in _places(text.lower(), words) if p >= 0]
    start = max(0, min(places) - _SNIPPET_LEAD) if places else 0
    start = min(start, len(text) - size + 1)
    if start > 0 and text[start - 1].isascii() and text[start - 1].isalnum():
        # Begin at the next whole English word, if one begins soon enough.
        space = text.find(" ", start, start + _SNIPPET_LEAD // 2)
        start = space + 1 if space >= 0 else start
    head = "…" if start > 0 else ""
    room = size - len(head)
    if len(text) - start <= room:
        return head + text[start:]
    return head + text[start : start + room - 1].rstrip() + "…"


def _places(lowered: str, words: Iterable[str]) -> Iterator[int]:
    # A stem is the start of the word it came from ("expir" of "expired"), so a search for it
    # finds the word; a stem that dropped a final letter for "y" ("policy") may not, and then
    # the snippet starts earlier, which is harmless.
    for word in words:
        yield lowered.find(word)
