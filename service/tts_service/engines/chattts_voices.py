"""ChatTTS voices: named speaker embeddings, from a seed or an embedding string.

A ChatTTS voice is a speaker embedding: ``hidden_size`` numbers drawn from a normal
distribution scaled by the checkpoint's speaker statistics, carried around as a
base16384 string (what ``Chat.sample_random_speaker()`` returns).  The official example
makes one by reseeding torch's GLOBAL random generator per request, which races under
concurrency.  Here a seed draws from its own ``torch.Generator`` on the CPU, so the same
seed gives the same voice on every replica and after every restart, without touching
any shared state -- and it equals what the community's "seed N" voices are (global
seed N, then ``sample_random_speaker()``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import UnknownVoice
from .base import OPENAI_VOICE_NAMES

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
    raise UnknownVoice(
        f"unknown voice {requested!r}: use one of {', '.join(specs)}, one of the OpenAI names "
        f"{', '.join(aliases)}, or leave it out for the default (TTS_VOICES adds voices)"
    )


def embedding_for_seed(seed: int, std, mean) -> str:
    """The speaker embedding string for ``seed``, drawn without the global RNG."""
    import torch
    from ChatTTS.model import Speaker

    generator = torch.Generator(device="cpu").manual_seed(seed)
    sample = torch.randn(std.shape[0], generator=generator, dtype=std.dtype, device="cpu")
    return Speaker._encode(sample.to(std.device).mul_(std).add_(mean))
