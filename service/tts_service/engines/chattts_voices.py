"""ChatTTS voices: named speaker embeddings, from a seed or an embedding string.

A ChatTTS voice is a speaker embedding: ``hidden_size`` numbers drawn from a normal
distribution scaled by the checkpoint's speaker statistics, carried around as a
base16384 string (what ``Chat.sample_random_speaker()`` returns).  The official example
makes one by reseeding torch's GLOBAL random generator per request, which races under
concurrency.  Here a seed draws from its own ``torch.Generator`` on the CPU, so the same
seed gives the same voice on every replica and after every restart, without touching
any shared state -- and it equals what the community's "seed N" voices are (global
seed N, then ``sample_random_speaker()``).

Besides the named voices, a request may name any ``seed-N`` (N of up to ten digits) or carry a
speaker embedding string itself; such a voice's id is ``emb-`` and the first 32 hex digits
of the string's sha256, so equal embeddings share a batch and the response header says
which one was used without echoing a kilobyte of it.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
from dataclasses import dataclass

from ..errors import InvalidSpeakerEmbedding, UnknownVoice
from .base import OPENAI_VOICE_NAMES

MAX_EMBEDDING_CHARS = 4096  # a real one is about 1 000 (768 float16s, LZMA, base16384)
# Voices from seeds named in requests: the embeddings of the most recent ones are kept.
SEED_VOICE_CACHE = 256
SEED_VOICE = re.compile(r"seed-([0-9]{1,10})")  # any N of up to ten digits (torch's generator takes 64 bits)
EMBEDDING_PREFIX = "emb-"
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]

# The voices shipped by default: seeds, named by their seed.  (ChatTTS voices have no
# inherent names; these seeds are ones the ChatTTS community passes around.)
DEFAULT_SEEDS = (2222, 1111, 1528, 6653, 7869, 9999)


@dataclass(frozen=True)
class VoiceSpec:
    name: str
    seed: int | None = None
    embedding: str | None = None

    @property
    def description(self) -> str:
        return (
            f"ChatTTS speaker from seed {self.seed}" if self.seed is not None else "ChatTTS speaker embedding"
        )


def voice_specs(voices_json: str) -> dict[str, VoiceSpec]:
    """The shipped voices plus ``TTS_VOICES`` (validated by the settings; same names replace)."""
    specs = {f"seed-{seed}": VoiceSpec(f"seed-{seed}", seed=seed) for seed in DEFAULT_SEEDS}
    for name, spec in (json.loads(voices_json) if voices_json else {}).items():
        specs[name.strip().lower()] = VoiceSpec(name.strip().lower(), spec.get("seed"), spec.get("embedding"))
    return specs


def openai_aliases(names: list[str]) -> dict[str, str]:
    """OpenAI's voice names spread over the voices (the shipped ones first)."""
    return {alias: names[i % len(names)] for i, alias in enumerate(OPENAI_VOICE_NAMES)}


def resolve(requested: str, specs: dict[str, VoiceSpec], aliases: dict[str, str]) -> str:
    """The voice ``requested`` names; case-insensitive, not trimmed (" alloy" is not a voice)."""
    name = requested.lower()
    if name in specs:
        return name
    if name in aliases:
        return aliases[name]
    seed = SEED_VOICE.fullmatch(name)
    if seed:
        return f"seed-{int(seed.group(1))}"  # seed-007 is seed-7
    raise UnknownVoice(
        f"unknown voice {requested!r}: use one of {', '.join(specs)}, any seed-N (N of up to ten digits), "
        f"one of the OpenAI names {', '.join(aliases)}, a speaker_embedding instead of a voice, or "
        "leave it out for the default (TTS_VOICES adds voices; GET /v1/voices lists the forms)"
    )


def seed_of(voice_id: str) -> int | None:
    """The seed of a ``seed-N`` voice id, else None."""
    match = SEED_VOICE.fullmatch(voice_id)
    return int(match.group(1)) if match else None


def embedding_voice_id(embedding: str) -> str:
    return EMBEDDING_PREFIX + hashlib.sha256(embedding.encode("utf-8")).hexdigest()[:32]


def check_embedding(embedding: str, dim: int) -> None:
    """Raise :class:`InvalidSpeakerEmbedding` unless ``embedding`` decodes (base16384, raw LZMA2, as
    ChatTTS encodes it) to exactly ``dim`` finite float16 numbers.  Decompression stops past
    that size, so a small string cannot expand into a large allocation."""
    import numpy as np
    import pybase16384 as b14

    def invalid(why: str) -> InvalidSpeakerEmbedding:
        return InvalidSpeakerEmbedding(
            f"speaker_embedding is not a ChatTTS speaker embedding ({why}); use a string from "
            "ChatTTS's sample_random_speaker() for this model"
        )

    try:
        packed = b14.decode_from_string(embedding)
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        raw = decompressor.decompress(packed, max_length=2 * dim + 1)
    except Exception as exc:  # pybase16384 and lzma raise several types for garbage
        raise invalid(f"it does not decode: {type(exc).__name__}") from None
    if len(raw) != 2 * dim:
        raise invalid(
            f"it holds {len(raw) // 2} numbers{'+' if len(raw) > 2 * dim else ''}, this model's have {dim}"
        )
    if not np.isfinite(np.frombuffer(raw, dtype=np.float16)).all():
        raise invalid("it holds NaN or infinite numbers")


def embedding_for_seed(seed: int, std, mean) -> str:
    """The speaker embedding string for ``seed``, drawn without the global RNG."""
    import torch
    from ChatTTS.model import Speaker

    generator = torch.Generator(device="cpu").manual_seed(seed)
    sample = torch.randn(std.shape[0], generator=generator, dtype=std.dtype, device="cpu")
    return Speaker._encode(sample.to(std.device).mul_(std).add_(mean))


# GET /v1/voices: the forms ChatTTS takes besides the listed names.
REQUEST_VOICE_FORMS: list[dict[str, object]] = [
    {
        "form": "seed",
        "pattern": "seed-N",
        "description": "seed-N for any N of up to ten digits: the speaker ChatTTS draws from that seed "
        "(the community's 'seed N' voices)",
    },
    {
        "form": "speaker_embedding",
        "field": "speaker_embedding",
        "max_chars": MAX_EMBEDDING_CHARS,
        "description": "a speaker embedding string (ChatTTS's sample_random_speaker()) in the request's "
        "speaker_embedding field, instead of voice",
    },
]


class SpeakerEmbeddings:
    """Embedding strings by voice id: the named voices', drawn once at load, and seed-N voices'
    drawn on first use (the most recent :data:`SEED_VOICE_CACHE` kept).  Worker thread only."""

    def __init__(self, specs: dict[str, VoiceSpec], std, mean) -> None:
        self._std, self._mean = std, mean
        self._named = {
            name: spec.embedding if spec.embedding is not None else embedding_for_seed(spec.seed, std, mean)
            for name, spec in specs.items()
        }
        self._seeded: dict[str, str] = {}

    def __getitem__(self, voice_id: str) -> str:
        if voice_id in self._named:
            return self._named[voice_id]
        if voice_id not in self._seeded:
            seed = seed_of(voice_id)
            if seed is None:
                raise KeyError(f"no embedding for voice {voice_id!r}")
            if len(self._seeded) >= SEED_VOICE_CACHE:
                self._seeded.pop(next(iter(self._seeded)))
            self._seeded[voice_id] = embedding_for_seed(seed, self._std, self._mean)
        return self._seeded[voice_id]
