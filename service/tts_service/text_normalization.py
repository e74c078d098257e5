"""Text normalization: turn what people write into what a TTS engine should say.

``wetext`` (the WeTextProcessing runtime, FST grammars) does the heavy lifting for
Chinese and English: "123" -> 一百二十三, phone numbers digit by digit, 25℃, 3.5%,
dates and clock times as words.  A small pre-pass in front of it fixes what its
grammars get wrong or do not see:

* full-width digits and separators (１２３，４５６) become ASCII so the grammars match;
* control characters are dropped and white space folded;
* digit-group separators ("1,234") are resolved here: wetext's Chinese grammar is fine
  without them, but its English one drops the leading "one" ("1,000" -> "thousand")
  and reads some four-digit numbers as years ("1001" -> "ten zero one");
* English money amounts ("$1,200.50") are spelled out here for the same reason.

Text is normalized sentence by sentence: wetext's cost grows faster than linearly with
input length, and one sentence it cannot parse then falls back to itself alone.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import Literal

Language = Literal["zh", "en"]

log = logging.getLogger("tts_service.text")

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_LETTER = re.compile(r"[A-Za-z]")
_FULLWIDTH_DIGITS = str.maketrans({chr(0xFF10 + i): str(i) for i in range(10)} | {"％": "%", "＄": "$"})
# Full-width separators only become ASCII between digits ("10：30"); in prose they stay.
_FULLWIDTH_NUMBER_SEPARATOR = re.compile(r"(?<=\d)[．：](?=\d)")
_ASCII_SEPARATOR = {"．": ".", "：": ":"}
_DIGIT_COMMA = re.compile(r"(?<=\d)[,，](?=\d{3}(?!\d))")
_GROUPED_NUMBER = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_EN_MONEY = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?!\d)")
_EN_AMBIGUOUS_FOUR_DIGITS = re.compile(r"(?<![\d.,:/-])(10\d\d)(?![\d.,:/-])")
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=[.])(?=\s)|\n+")
_SPACES = re.compile(r"[ \t\r\f\v]+")

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def detect_language(text: str) -> Language:
    """The language a text is written in, for choosing a voice and its normalization.

    ``zh`` when Han characters are not outnumbered by Latin letters (four letters count
    as one character), ``en`` when there are Latin letters and few or no Han characters.
    Text with neither (digits, dates, punctuation) is ``zh``, as wetext decides: the
    project serves ChatTTS, a Chinese-first model, and "123" should say 一百二十三.
    """
    han = len(_HAN.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    if han == 0 and latin > 0:
        return "en"
    return "zh" if han >= latin / 4 else "en"


def english_cardinal(n: int) -> str:
    """Spell a non-negative integer the way people read quantities: 1234 -> one thousand ..."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + english_cardinal(rest))
    for scale, word in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return english_cardinal(high) + " " + word + ("" if rest == 0 else " " + english_cardinal(rest))
    raise AssertionError("unreachable")


def clean_text(text: str) -> str:
    """Drop control and format characters, fold spaces, map full-width digits to ASCII."""
    kept = []
    for ch in text:
        if ch == "\n":
            kept.append(ch)
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Co", "Cn") or (category == "Cf" and ch != "\u200d"):
            kept.append(" ")
            continue
        kept.append(ch)
    cleaned = "".join(kept).translate(_FULLWIDTH_DIGITS)
    cleaned = _FULLWIDTH_NUMBER_SEPARATOR.sub(lambda m: _ASCII_SEPARATOR[m.group(0)], cleaned)
    lines = (_SPACES.sub(" ", line).strip() for line in cleaned.split("\n"))
    return "\n".join(line for line in lines if line)


def _english_money(match: re.Match[str]) -> str:
    dollars = int(match.group(1).replace(",", ""))
    words = english_cardinal(dollars) + (" dollar" if dollars == 1 else " dollars")
    if match.group(2):
        cents = int(match.group(2).ljust(2, "0"))
        if cents:
            words += " and " + english_cardinal(cents) + (" cent" if cents == 1 else " cents")
    return words


def _english_prepass(text: str) -> str:
    text = _EN_MONEY.sub(_english_money, text)
    text = _GROUPED_NUMBER.sub(lambda m: english_cardinal(int(m.group(0).replace(",", ""))), text)
    return _EN_AMBIGUOUS_FOUR_DIGITS.sub(lambda m: english_cardinal(int(m.group(1))), text)


def _chinese_prepass(text: str) -> str:
    return _DIGIT_COMMA.sub("", text)


def split_sentences(text: str) -> list[str]:
    """Split after sentence-final punctuation and at line breaks; drop empty pieces."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece and piece.strip()]


class TextNormalizer:
    """Normalizes zh and en text; one instance per engine, safe to call from one thread."""

    def __init__(self) -> None:
        from wetext import Normalizer  # heavy import: keep it off module import

        self._normalizers = {
            "zh": Normalizer(lang="zh", operator="tn"),
            "en": Normalizer(lang="en", operator="tn"),
        }
        self._lock = threading.Lock()

    def normalize(self, text: str, language: Language | None = None) -> str:
        """Normalize ``text``; ``language`` defaults to :func:`detect_language` per sentence."""
        pieces: list[tuple[str, Language]] = []
        for sentence in split_sentences(clean_text(text)):
            lang = language or detect_language(sentence)
            pieces.append((self._normalize_sentence(sentence, lang), lang))
        joined = ""
        for i, (piece, lang) in enumerate(pieces):
            # Chinese needs no space between sentences; English does.
            if i and lang == "en" and pieces[i - 1][1] == "en":
                joined += " "
            joined += piece
        return joined

    def _normalize_sentence(self, sentence: str, language: Language) -> str:
        prepared = _chinese_prepass(sentence) if language == "zh" else _english_prepass(sentence)
        try:
            with self._lock:
                return self._normalizers[language].normalize(prepared)
        except Exception as exc:  # wetext raises RuntimeError when no FST path exists
            log.warning("text normalization failed, speaking the text as written: %s", exc)
            return prepared
