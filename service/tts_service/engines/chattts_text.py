"""Text as ChatTTS's tokenizer should get it: normalized, its control tokens intact, and
every character in the small set ChatTTS accepts.

ChatTTS (``ChatTTS/norm.py``) speaks Han characters, ASCII letters, spaces and ``，。、,.``
only.  Anything else it logs as "found invalid characters", maps a few (``！`` -> ``。``,
``：`` -> ``，``) and deletes the rest: a question mark simply vanishes, so "Really? Yes."
runs two sentences into one, and for Chinese it first turns every ASCII mark into its
full-width form (``?`` -> ``？``), which it then deletes.  So the service maps every
character on purpose before ChatTTS sees the text:

* sentence ends (``。.！!？?…``) become ``。`` (zh) or ``.`` (en): a question keeps its stop;
* clause marks, dashes, colons, semicolons and brackets become ``，`` / ``,`` (``、`` stays
  in Chinese): a pause where the writer put one;
* quotes and apostrophes are not spoken and leave no pause ("don't" -> "dont", as ChatTTS's
  English tokenizer reads it anyway);
* ``& + = % @`` are spelled (and / plus / equals / percent / at, or 和 加 等于 百分之 艾特);
  digits the normalizer left (rare) are read one by one;
* a dot inside a word is read (example.com -> "example dot com", 点 in Chinese);
* accented Latin letters lose their accents (café -> cafe), full-width letters become ASCII;
* other symbols and emoji are dropped without a sound; letters of scripts ChatTTS cannot
  speak (Cyrillic, kana...) are dropped too, and that is logged with the characters.

Runs of marks collapse into the strongest one, so "Wait... what?!" is "Wait. what." and
not a string of stops.  Control tokens (:mod:`tts_service.control_tokens`) pass through.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable

from ..control_tokens import split_tokens
from ..text_normalization import Language

log = logging.getLogger("tts_service.engines.chattts")

# ChatTTS's accepted characters (norm.py's reject_pattern, inverted).
ACCEPTED = re.compile(r"[\u4e00-\u9fffA-Za-z，。、,. ]")

_SENTENCE_ENDS = set("。.！!？?…‥⋯‼⁇⁈⁉︒｡")
_CLAUSE_MARKS = set("，,：:；;—–‐‑‒―-~～|·・()（）[]［］【】{}｛｝〈〉《》「」『』〔〕〖〗<>＜＞﹐﹑")
_SILENT = set("\"'“”‘’„‚«»‹›`´＂＇")
_SPELLED: dict[str, tuple[str, str]] = {  # char -> (zh, en)
    "&": ("和", " and "),
    "+": ("加", " plus "),
    "=": ("等于", " equals "),
    "%": ("百分之", " percent "),
    "@": ("艾特", " at "),
}
_SPELLED |= {chr(ord(ch) + 0xFEE0): spoken for ch, spoken in _SPELLED.items()}  # full-width ＆ ＋ ＝ ％ ＠
_SPELLED |= {"/": (" ", " "), "_": (" ", " ")}
_INNER_DOT = re.compile(r"(?<=[A-Za-z0-9])\.(?=[A-Za-z0-9])")
_ZH_DIGITS = "零一二三四五六七八九"
_EN_DIGITS = "zero one two three four five six seven eight nine".split()
# Strength of a mark when several meet: the strongest one stays.
_CLAUSE, _SENTENCE = 1, 2
_MARKS = {"zh": {_CLAUSE: "，", _SENTENCE: "。"}, "en": {_CLAUSE: ",", _SENTENCE: "."}}


def for_chattts(text: str, language: Language, normalize: Callable[[str, Language], str]) -> str:
    """``text`` normalized (by ``normalize``) around its control tokens, mapped to ChatTTS's set."""
    unspeakable: set[str] = set()
    pieces = [
        (piece if is_token else normalize(piece, language), is_token)
        for piece, is_token in split_tokens(text)
    ]
    mapped = _map(pieces, language, unspeakable)
    if unspeakable:
        log.warning("left out characters ChatTTS cannot speak: %s", "".join(sorted(unspeakable)))
    return mapped


def to_accepted(text: str, language: Language, unspeakable: set[str] | None = None) -> str:
    """``text`` (no control tokens) in ChatTTS's accepted characters (see the module doc);
    characters of scripts it cannot speak are added to ``unspeakable``."""
    return _map([(text, False)], language, set() if unspeakable is None else unspeakable)


def _map(pieces: list[tuple[str, bool]], language: Language, unspeakable: set[str]) -> str:
    """The pieces mapped and joined; a control token passes through as a word of its own."""
    out: list[str] = []
    pending = 0  # the strongest mark seen since the last word

    def word(piece: str) -> None:
        nonlocal pending
        if pending:
            if out:  # no mark before the first word
                while out and out[-1] == " ":
                    out.pop()
                out.append(_MARKS[language][pending])
                if language == "en":
                    out.append(" ")
            pending = 0
        out.append(piece)

    for piece, is_token in pieces:
        if is_token:
            word(piece)
            continue
        # A dot inside a word (example.com, v2.1) is read, not a sentence end.
        for ch in _INNER_DOT.sub(" dot " if language == "en" else "点", piece):
            if ch in _SENTENCE_ENDS:
                pending = max(pending, _SENTENCE)
            elif ch == "、" or ch == "﹑":
                if language == "zh" and not pending and out:
                    out.append("、")
                else:
                    pending = max(pending, _CLAUSE)
            elif ch in _CLAUSE_MARKS:
                pending = max(pending, _CLAUSE)
            elif ch in _SILENT:
                continue
            elif ch.isspace():
                if out and out[-1] != " " and not pending:
                    out.append(" ")
            elif ch in _SPELLED or "0" <= ch <= "9":
                spoken = _SPELLED[ch] if ch in _SPELLED else (_ZH_DIGITS[int(ch)], _EN_DIGITS[int(ch)])
                if language == "zh":
                    word(spoken[0])
                elif spoken[1].strip():  # an English word of its own, between spaces
                    if out and out[-1] != " ":
                        out.append(" ")
                    word(spoken[1].strip())
                    out.append(" ")
                elif out and out[-1] != " " and not pending:
                    out.append(" ")
            elif ACCEPTED.fullmatch(ch):
                word(ch)
            else:
                letters = _latin_letters(ch)
                if letters:
                    word(letters)
                elif unicodedata.category(ch).startswith("L"):
                    unspeakable.add(ch)
    if pending and out:
        while out and out[-1] == " ":
            out.pop()
        out.append(_MARKS[language][pending])
    return re.sub(r" {2,}", " ", "".join(out)).strip()


def _latin_letters(ch: str) -> str:
    """An accented or full-width Latin letter as plain ASCII letters (é -> e, Ａ -> A, ß -> ss),
    or "" when it is no Latin letter."""
    folded = unicodedata.normalize("NFKD", ch)
    letters = "".join(c for c in folded if "a" <= c.lower() <= "z")
    if letters:
        return letters
    return {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "œ": "oe",
        "Œ": "OE",
        "ð": "d",
        "þ": "th",
    }.get(ch, "")
