"""ChatTTS's homophone replacement, as one ``str.translate`` instead of numba code.

ChatTTS replaces characters it misreads with homophones it reads well (``res/homophones_map.json``,
16 425 pairs of single BMP characters).  Its ``Normalizer`` does that with a numba function,
which numba compiles on first use: ~1.1 s on a CPU, the largest cost of a start's first
request, and a compilation a cache directory only saves from the second start on.  The map
is character to character, one pass, no chains (a replaced character is not looked up
again), so a translation table does exactly the same -- a test compares the two over every
pair -- without compiling anything.

The engine uses it on text that :mod:`.chattts_text` has already put into ChatTTS's
character set.  Should a text still hold characters ChatTTS rejects, the engine hands it to
ChatTTS's own normalizer instead, which maps and deletes them as it always has.
"""

from __future__ import annotations

from typing import Any


class Homophones:
    """ChatTTS's homophone map as a translation table."""

    def __init__(self, table: Any) -> None:
        """``table``: ChatTTS's ``Normalizer.homophones_map`` (a [2, pairs] array of code points)."""
        self._table = {int(a): int(b) for a, b in zip(table[0], table[1], strict=True)}

    def __len__(self) -> int:
        return len(self._table)

    def replace(self, text: str) -> str:
        return text.translate(self._table)
