"""ChatTTS's inline control tokens: which ones exist, and text taken apart around them.

ChatTTS reads a few bracketed tokens inside the text itself: ``[uv_break]`` (a short
unvoiced pause), ``[lbreak]`` (a long one, end of a passage), ``[laugh]``, and the refine
model's levels ``[break_0-7]``, ``[laugh_0-2]`` and ``[oral_0-9]``.  They are words of its
tokenizer's vocabulary, so they must reach it exactly as written: never normalized,
translated or cut in two.  Text between tokens is ordinary text.

``[speed_N]`` is deliberately not accepted inline: the request's ``speed`` field sets it,
once per request.  Engines without control tokens (espeak) get :func:`as_plain_text`: the
breaks become pauses, the laughs and levels are not spoken.
"""

from __future__ import annotations

import re

# Anything shaped like a control token: a bracketed word, optionally with _suffixes.
TOKEN_LIKE = re.compile(r"\[[A-Za-z]+(?:_[A-Za-z0-9]+)*\]")
PAUSE_TOKENS = ("[uv_break]", "[lbreak]", *(f"[break_{n}]" for n in range(8)))
OTHER_TOKENS = ("[laugh]", *(f"[laugh_{n}]" for n in range(3)), *(f"[oral_{n}]" for n in range(10)))
KNOWN_TOKENS = frozenset(PAUSE_TOKENS + OTHER_TOKENS)
# A bracketed word that is NOT one of them (ECMAScript syntax too: the OpenAPI description uses it).
UNKNOWN_TOKEN_PATTERN = (
    r"\[(?!(?:uv_break|lbreak|laugh|break_[0-7]|laugh_[0-2]|oral_[0-9])\])[A-Za-z]+(?:_[A-Za-z0-9]+)*\]"
)
# How the README and error messages name them.
TOKEN_FORMS = "[uv_break], [lbreak], [laugh], [break_0]-[break_7], [laugh_0]-[laugh_2], [oral_0]-[oral_9]"


def unknown_tokens(text: str) -> list[str]:
    """Bracketed words in ``text`` that look like control tokens but are none ChatTTS knows."""
    return sorted({m.group(0) for m in TOKEN_LIKE.finditer(text) if m.group(0) not in KNOWN_TOKENS})


def split_tokens(text: str) -> list[tuple[str, bool]]:
    """``text`` as (piece, is_token) pairs in order; the pieces joined are ``text``."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in TOKEN_LIKE.finditer(text):
        if match.group(0) not in KNOWN_TOKENS:
            continue
        if match.start() > start:
            pieces.append((text[start : match.start()], False))
        pieces.append((match.group(0), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


def as_plain_text(text: str) -> str:
    """``text`` for an engine without control tokens: a break is a pause (a comma), a laugh
    or a level is not spoken."""
    out = []
    for piece, is_token in split_tokens(text):
        if not is_token:
            out.append(piece)
        elif piece in PAUSE_TOKENS:
            out.append(", ")
    return "".join(out)
