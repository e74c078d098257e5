"""A request's segments' audio joined into one signal, the same way whole or streamed.

Two generations put end to end do not meet at zero: the last sample of one and the first
of the next can differ by a lot, which is heard as a click.  So every join gets a short
raised-cosine fade-out (end of the segment before) and fade-in (start of the one after),
:data:`FADE_S` each, with a pause of silence between them as long as the place it was cut
at deserves (:data:`PAUSE_S`: a sentence end pauses longest, a cut inside a word not at
all).  A pause rather than a crossfade, because the engines end a segment at the end of
its speech, not mid-sound, and a crossfade would overlap two voices' syllables.

:class:`SegmentJoiner` works chunk by chunk, so a stream and a whole-file answer get the
same samples: it holds back the last :data:`FADE_S` of a segment until the segment ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .segmentation import Boundary

FADE_S = 0.005
PAUSE_S = {
    Boundary.SENTENCE: 0.15,
    Boundary.CLAUSE: 0.08,
    Boundary.WORD: 0.03,
    Boundary.HARD: 0.0,
    Boundary.END: 0.0,
}


class SegmentJoiner:
    """Turns each segment's chunks, fed in segment order, into the request's signal."""

    def __init__(self, boundaries: Sequence[Boundary], sample_rate: int) -> None:
        self._boundaries = list(boundaries)
        self._rate = sample_rate
        self._fade = max(1, round(FADE_S * sample_rate))
        ramp = np.arange(self._fade, dtype=np.float32) + 0.5
        self._fade_in = (0.5 - 0.5 * np.cos(np.pi * ramp / self._fade)).astype(np.float32)
        self._segment = 0
        self._position = 0  # samples of the current segment taken so far
        self._tail = np.zeros(0, dtype=np.float32)  # held back until the segment ends

    @property
    def segments(self) -> int:
        return len(self._boundaries)

    def feed(self, segment: int, audio: np.ndarray, last: bool) -> np.ndarray:
        """The joined samples ready after ``audio`` of ``segment``; ``last`` ends the segment."""
        if segment != self._segment:
            raise ValueError(f"segment {segment} fed while segment {self._segment} is not finished")
        audio = np.asarray(audio, dtype=np.float32)
        if segment > 0 and self._position < self._fade and audio.size:
            audio = audio.copy()
            head = min(audio.size, self._fade - self._position)
            audio[:head] *= self._fade_in[self._position : self._position + head]
        self._position += audio.size
        joins_next = segment < len(self._boundaries) - 1
        if not joins_next:
            out = np.concatenate([self._tail, audio]) if self._tail.size else audio
            self._tail = np.zeros(0, dtype=np.float32)
            return out
        pending = np.concatenate([self._tail, audio]) if self._tail.size else audio
        if not last:
            keep = min(pending.size, self._fade)
            self._tail = pending[pending.size - keep :].copy()
            return pending[: pending.size - keep]
        ended = pending.copy()
        n = min(ended.size, self._fade)
        if n:
            ended[ended.size - n :] *= self._fade_in[::-1][self._fade - n :]
        pause = np.zeros(round(PAUSE_S[self._boundaries[segment]] * self._rate), dtype=np.float32)
        self._segment += 1
        self._position = 0
        self._tail = np.zeros(0, dtype=np.float32)
        return np.concatenate([ended, pause])


def join_segments(
    audios: Sequence[np.ndarray], boundaries: Sequence[Boundary], sample_rate: int
) -> np.ndarray:
    """Whole segments' audio joined: what the same segments streamed add up to."""
    if len(audios) != len(boundaries):
        raise ValueError(f"{len(audios)} segments' audio for {len(boundaries)} segments")
    if len(audios) == 1:
        return np.asarray(audios[0], dtype=np.float32)
    joiner = SegmentJoiner(boundaries, sample_rate)
    return np.concatenate([joiner.feed(i, audio, last=True) for i, audio in enumerate(audios)])
