"""Long input split into segments an engine can speak in one comfortable generation.

A TTS model speaks a long text badly or not at all in one generation: ChatTTS's GPT has
4096 positions for text and audio together, its maintainers advise 15-30 s of speech per
generation, and anything past the token budget is simply never spoken.  So the service
splits every request's text (after :func:`~tts_service.text_normalization.clean_text`,
before the engine's own normalization) into segments of at most ``max_chars`` characters
and batches the segments, not the requests.

Where a segment ends, best first: after a sentence end (``。！？；!?;…``, ``.`` before a
space, a line break), after a clause mark (``，、,：:``), before a word (after a space), and
only when a single word is longer than the maximum, anywhere.  Segments are packed
greedily: as many whole sentences as fit.  Closing quotes and brackets stay with the
sentence they close, white space after a break stays with the segment before it, and
ChatTTS's inline control tokens (``[uv_break]``, ``[laugh_2]``, ``[speed_5]``...) are never
cut.

What holds for every input (property-tested): the segments joined are exactly the text;
no segment is empty; none is longer than ``max_chars``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .control_tokens import TOKEN_LIKE as CONTROL_TOKEN

# No segment maximum may be shorter than the longest control token it must keep whole.
MAX_CONTROL_TOKEN_CHARS = 16
MIN_SEGMENT_CHARS = MAX_CONTROL_TOKEN_CHARS

_SENTENCE_END = set("。！？；!?;…\n")
_CLAUSE_END = set("，、,：:")
_CLOSERS = set("\"'”’）)】」』》]")


class Boundary(enum.IntEnum):
    """How a segment ends (how good a place to cut it was); higher is better."""

    HARD = 0  # inside a word longer than the maximum
    WORD = 1  # between words
    CLAUSE = 2  # after a clause mark
    SENTENCE = 3  # after a sentence end
    END = 4  # the end of the text


@dataclass(frozen=True)
class Segment:
    """One piece of a request's text and how it ends."""

    text: str
    boundary: Boundary


def split_segments(text: str, max_chars: int) -> list[Segment]:
    """Split ``text`` into segments of at most ``max_chars`` characters (see the module doc)."""
    if max_chars < MIN_SEGMENT_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_SEGMENT_CHARS}, got {max_chars}")
    if not text:
        return []
    kinds = _cut_kinds(text)
    segments: list[Segment] = []
    start = 0
    while len(text) - start > max_chars:
        end, boundary = _best_cut(kinds, start, start + max_chars)
        segments.append(Segment(text[start:end], boundary))
        start = end
    segments.append(Segment(text[start:], Boundary.END))
    return segments


def _best_cut(kinds: list[Boundary | None], start: int, limit: int) -> tuple[int, Boundary]:
    """The furthest cut in ``(start, limit]`` of the best kind available there."""
    best: tuple[int, Boundary] | None = None
    for position in range(limit, start, -1):
        kind = kinds[position]
        if kind is not None and (best is None or kind > best[1]):
            best = (position, kind)
            if kind is Boundary.SENTENCE:
                break
    if best is None:  # cannot happen while max_chars >= the longest control token
        raise AssertionError("no place to cut a segment")
    return best


def _cut_kinds(text: str) -> list[Boundary | None]:
    """``kinds[p]``: how good a cut before ``text[p]`` is; None where a cut is not allowed."""
    n = len(text)
    kinds: list[Boundary | None] = [Boundary.HARD] * (n + 1)
    kinds[0] = None
    for token in CONTROL_TOKEN.finditer(text):
        if token.end() - token.start() <= MAX_CONTROL_TOKEN_CHARS:
            for inside in range(token.start() + 1, token.end()):
                kinds[inside] = None
    for p in range(1, n):
        if kinds[p] is None:
            continue
        current = text[p]
        if current.isspace() or current in _CLOSERS or current in _SENTENCE_END or current in _CLAUSE_END:
            continue  # white space, closers and runs of punctuation stay with what they follow
        before = p - 1
        while before >= 0 and text[before].isspace() and text[before] != "\n":
            before -= 1
        spaced = before < p - 1
        while before >= 0 and text[before] in _CLOSERS:
            before -= 1
        mark = text[before] if before >= 0 else ""
        if mark in _SENTENCE_END or (mark == "." and spaced):
            kinds[p] = Boundary.SENTENCE
        elif mark in _CLAUSE_END:
            kinds[p] = Boundary.CLAUSE
        elif spaced:
            kinds[p] = Boundary.WORD
    return kinds
