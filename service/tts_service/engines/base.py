"""The engine interface every synthesis backend implements.

An engine instance is owned by exactly one inference worker thread: ``load``,
``warmup``, ``synthesize`` and ``close`` are only ever called from that thread, one at
a time, so an engine needs no locking of its own.  ``resolve_voice`` and ``batch_key``
are called on the event loop and must therefore be cheap and touch only immutable data.
Engines make audio; where it goes (a response, a stream) is the worker's business.
"""

from __future__ import annotations

import abc
import contextlib
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..text_normalization import Language
from .failures import Failure, classify_failure

SAMPLE_RATE = 24_000

# OpenAI's voice names, so the OpenAI SDK works unchanged; each engine maps them.
OPENAI_VOICE_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


class StartupPhases(dict[str, float]):
    """Seconds each start-up phase took, in the order they ran (``tts_startup_phase_seconds``)."""

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self[phase] = self.get(phase, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class VoiceInfo:
    """A voice a client may ask for by ``id``."""

    id: str
    language: str
    description: str


@dataclass(frozen=True)
class ResolvedVoice:
    """What a requested voice means for this text: the engine's voice id and language.

    ``embedding`` carries a speaker embedding given in the request itself; its ``id`` is
    derived from the embedding's hash, so voices compare (and batch) by the id alone.
    """

    id: str
    language: Language
    embedding: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SynthesisOptions:
    """A request's own sampling controls (ChatTTS); None means the server's setting.

    One engine call shares them, so they are part of the batch key of engines that use them.
    """

    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    refine_prompt: str | None = None  # ChatTTS's refine-text prompt, from OpenAI's instructions


# Request fields only some engines honour (an engine lists its own in RequestRules.fields).
SAMPLING_FIELDS = ("seed", "temperature", "top_p", "top_k")
ENGINE_FIELDS = (*SAMPLING_FIELDS, "speaker_embedding", "instructions")


@dataclass(frozen=True)
class RequestRules:
    """What an engine takes in a request beyond text, voice, format and speed: the request
    parser and the OpenAPI description both follow it, so neither promises more than it does."""

    engine: str
    fields: frozenset[str] = frozenset()  # of ENGINE_FIELDS
    control_tokens: bool = False  # ChatTTS's inline tokens; unknown bracketed tokens are 400s
    instructions: str | None = None  # a regex non-empty instructions must match; None: refused
    instructions_help: str = ""  # what instructions it takes, or why none (for error messages)
    voice_pattern: str | None = None  # a regex of voice names besides the listed ones (seed-N)
    voice_pattern_help: str = ""
    max_embedding_chars: int = 0


@dataclass(frozen=True)
class SynthesisItem:
    """One segment of a request: the text for one row of an engine call."""

    text: str
    voice: ResolvedVoice
    speed: float = 1.0
    options: SynthesisOptions = SynthesisOptions()


@dataclass
class StepOutput:
    """What one step of a :class:`DecodeLoop` made, by row id."""

    chunks: dict[int, np.ndarray] = field(default_factory=dict)  # streamed rows' new audio
    finished: dict[int, np.ndarray] = field(default_factory=dict)  # rows that ended: all their
    # audio, or for a streamed row the rest of it
    failed: dict[int, BaseException] = field(default_factory=dict)  # rows that failed (alone)
    truncated: list[int] = field(default_factory=list)  # ended at their budget while speaking
    tokens: dict[int, object] = field(default_factory=dict)  # each finished row's token ids
    # ([tokens, codebooks]; tests compare them with the engine's own generation)


class DecodeLoop(abc.ABC):
    """An engine's token loop with rows that join and leave between steps (continuous
    batching, ``TTS_SCHEDULER=continuous``).  Worker thread only, like the engine."""

    @property
    @abc.abstractmethod
    def rows(self) -> int:
        """Rows admitted and not finished."""

    @abc.abstractmethod
    def admit(self, row: int, item: SynthesisItem, *, stream: bool, eager: Callable[[], bool]) -> None:
        """Start ``item`` as row ``row`` (its prefill runs now); it is in the next :meth:`step`.
        ``eager()`` says whether a streamed row's reader waits for its audio now."""

    @abc.abstractmethod
    def drop(self, row: int) -> None:
        """``row`` leaves without finishing (its request was cancelled); no-op if unknown."""

    def warmup(self) -> None:
        """Run representative rows through the loop before the first request (default: none)."""

    @abc.abstractmethod
    def step(self) -> StepOutput:
        """One token for every row.  A row that fails is reported in ``failed`` and left;
        raising means the whole loop is broken (every row fails)."""


def _every_row(row: int) -> bool:
    return True


class Engine(abc.ABC):
    """A speech synthesizer producing float32 mono audio at 24 kHz."""

    name: str = "engine"
    sample_rate: int = SAMPLE_RATE
    max_batch_size: int = 8
    has_decode_loop: bool = False  # :meth:`decode_loop` gives one (continuous batching)

    @abc.abstractmethod
    def voices(self) -> list[VoiceInfo]:
        """Voices a client can name directly."""

    @abc.abstractmethod
    def aliases(self) -> dict[str, str]:
        """Other accepted names (OpenAI's voice names) and what each maps to."""

    @abc.abstractmethod
    def resolve_voice(self, requested: str | None, text: str) -> ResolvedVoice:
        """The voice to use for ``text``; raise :class:`~tts_service.errors.UnknownVoice`."""

    def speaker_voice(self, embedding: str, text: str) -> ResolvedVoice:
        """The voice of a speaker embedding given in the request (engines whose
        :meth:`request_rules` list ``speaker_embedding``); raise
        :class:`~tts_service.errors.InvalidSpeakerEmbedding` for one that is not valid."""
        raise NotImplementedError(f"the {self.name} engine takes no speaker embeddings")

    def request_rules(self) -> RequestRules:
        """What requests to this engine may carry (default: nothing engine-specific)."""
        return RequestRules(self.name, instructions_help=f"the {self.name} engine takes no instructions")

    def voice_forms(self) -> list[dict[str, object]]:
        """How a request may name a voice (``GET /v1/voices``)."""
        return [
            {"form": "id", "description": "a voice id from this list (case-insensitive)"},
            {"form": "alias", "description": "an OpenAI voice name from aliases"},
            {"form": "default", "description": "no voice, or an empty one: the default"},
        ]

    def batch_key(self, item: SynthesisItem) -> Hashable:
        """Items with equal keys can share one ``synthesize`` call."""
        return (item.voice, item.speed, item.options)

    def cost(self, item: SynthesisItem) -> float:
        """How long ``item`` holds the engine call it is in, in any unit (the batcher keeps
        much costlier items out of a batch: see :data:`~tts_service.batcher.MAX_STRETCH`).
        Called on the event loop: cheap.  Default: its characters, more for slower speech."""
        return 4 + len(item.text) / min(1.0, item.speed)

    @abc.abstractmethod
    def load(self) -> None:
        """Load models/libraries; called once on the worker thread before anything else."""

    def warmup(self) -> None:
        """Run representative work so the first real request pays no first-call costs."""
        voice = self.resolve_voice(None, "Warm up.")
        self.synthesize([SynthesisItem("Warm up.", voice)] * min(2, self.max_batch_size))

    def startup_phases(self) -> dict[str, float]:
        """Seconds of each phase of :meth:`load` and :meth:`warmup` (default: none recorded)."""
        return {}

    def first_call_counters(self) -> dict[str, int]:
        """One-time costs paid so far, as counts (compilations, lazy imports, device memory
        segments): after a complete warmup a request leaves them all unchanged."""
        return {"modules_imported": len(sys.modules)}

    @abc.abstractmethod
    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        """One float32 mono 24 kHz array per item, in the order given."""

    def synthesize_stream(
        self,
        items: Sequence[SynthesisItem],
        wanted: Callable[[int], bool] = _every_row,
        eager: Callable[[int], bool] = _every_row,
    ) -> Iterator[list[np.ndarray]]:
        """Audio as it is made: each step yields one (possibly empty) chunk per item, in order.

        Concatenating an item's chunks gives its whole audio.  ``wanted(i)`` turns false once
        nobody listens to item ``i`` any more (its client went away): an engine that can
        should stop working on it and yield empty chunks for it.  ``eager(i)`` is false while
        nobody waits for item ``i``'s audio yet (a later segment of a stream): an engine for
        which early chunks cost extra may hold its audio until the end.  The caller closes the
        iterator when no item is wanted.  The default makes it all at once; engines that can
        do better yield earlier.
        """
        yield self.synthesize(items)

    def decode_loop(self) -> DecodeLoop | None:
        """A token loop for continuous batching, once loaded; None for engines without one
        (they are batched per request whatever ``TTS_SCHEDULER`` says)."""
        return None

    def classify_failure(self, error: BaseException) -> Failure:
        """What an exception from ``synthesize`` means for the batch (see :mod:`.failures`)."""
        return classify_failure(error)

    def truncated_rows(self) -> list[int]:
        """Rows (indices) of the last call that ended at their token budget while the model
        was still speaking (``tts_truncated_segments_total``); engines without a budget: none."""
        return []

    def device_memory(self) -> tuple[int, int] | None:
        """(allocated, reserved) bytes on the accelerator after the last call; None on a CPU."""
        return None

    def interrupt(self) -> None:
        """Ask a running ``synthesize`` to stop early (shutdown after the drain timeout).

        The one method called from ANOTHER thread than the worker's: it may only set a flag.
        """

    def close(self) -> None:
        """Release what ``load`` acquired."""
