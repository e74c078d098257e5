"""The embedded default engine: eSpeak NG, in-process, real speech with no downloads.

Formant synthesis, robotic but intelligible, in English and Mandarin.  It has no sampling,
so it takes none of ChatTTS's per-request controls (the request parser answers 400 naming
the field); ChatTTS's inline control tokens are read as pauses, or not spoken.  It exists so a
newcomer hears speech with one command and so the whole service, batcher and operator
can be exercised on any CPU; production quality comes from the ChatTTS engine.
eSpeak makes 22 050 Hz audio; it is resampled to the service's 24 kHz with soxr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from ..control_tokens import as_plain_text
from ..errors import UnknownVoice
from ..text_normalization import Language, TextNormalizer, detect_language, split_sentences
from .base import OPENAI_VOICE_NAMES, Engine, ResolvedVoice, SynthesisItem, VoiceInfo
from .espeak_library import DEFAULT_RATE_WPM, EspeakLibrary

# Voice id -> (language for normalization, description).
LANGUAGE_VOICES: dict[str, tuple[Language, str]] = {
    "en-us": ("en", "English (America)"),
    "en-gb": ("en", "English (Great Britain)"),
    "cmn": ("zh", "Chinese (Mandarin)"),
}
# Public voice id -> eSpeak's own voice file name where they differ.
ESPEAK_VOICE_FILES = {"en-gb": "en"}
# The language voice chosen automatically for a text written in each language.
VOICE_FOR_LANGUAGE: dict[Language, str] = {"en": "en-us", "zh": "cmn"}
# eSpeak voice variants ("+m3" = male 3, "+f2" = female 2) offered with any language voice.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# OpenAI voice name -> eSpeak variant; the language still follows the text's script.
OPENAI_ALIASES: dict[str, str] = dict(
    zip(
        OPENAI_VOICE_NAMES,
        ("m1", "m3", "m5", "f2", "m2", "m4", "m6", "f3", "f4", "f5", "m7", "f1", "m4"),
        strict=True,
    )
)


class EspeakEngine(Engine):
    """eSpeak NG 1.52 from the ``espeakng-loader`` wheel, driven through ctypes."""

    name = "espeak"
    # eSpeak synthesizes one text at a time; batches only amortize the hand-off.
    max_batch_size = 64

    def __init__(self, default_voice: str = "") -> None:
        self._library: EspeakLibrary | None = None
        self._normalizer: TextNormalizer | None = None
        self._default_voice = default_voice
        if default_voice:
            try:
                self.resolve_voice(default_voice, "")  # fail at start-up, not per request
            except UnknownVoice as exc:
                raise ValueError(f"TTS_DEFAULT_VOICE: {exc.message}") from None

    def voices(self) -> list[VoiceInfo]:
        listed = [VoiceInfo(v, lang, desc) for v, (lang, desc) in LANGUAGE_VOICES.items()]
        listed += [
            VoiceInfo(f"{v}+{variant}", lang, f"{desc}, variant {variant}")
            for v, (lang, desc) in LANGUAGE_VOICES.items()
            for variant in VARIANTS
        ]
        return listed

    def aliases(self) -> dict[str, str]:
        return {name: f"<language by script>+{variant}" for name, variant in OPENAI_ALIASES.items()}

    def resolve_voice(self, requested: str | None, text: str) -> ResolvedVoice:
        # Names match case-insensitively, but are not trimmed: " alloy" is not a voice.
        name = requested.lower() if requested else self._default_voice.strip().lower()
        if not name:
            language = detect_language(text)
            return ResolvedVoice(VOICE_FOR_LANGUAGE[language], language)
        if name in OPENAI_ALIASES:
            language = detect_language(text)
            return ResolvedVoice(f"{VOICE_FOR_LANGUAGE[language]}+{OPENAI_ALIASES[name]}", language)
        base, _, variant = name.partition("+")
        if base in LANGUAGE_VOICES and (not variant or variant in VARIANTS):
            return ResolvedVoice(name, LANGUAGE_VOICES[base][0])
        raise UnknownVoice(
            f"unknown voice {requested!r}: use one of {', '.join(LANGUAGE_VOICES)} "
            f"(optionally with a variant such as '+f2' or '+m3'), one of the OpenAI names "
            f"{', '.join(OPENAI_ALIASES)}, or leave it out to choose by the text's script "
            f"(GET /v1/voices lists them all)"
        )

    def voice_forms(self) -> list[dict[str, object]]:
        return [
            *super().voice_forms(),
            {
                "form": "variant",
                "pattern": "<voice>+<variant>",
                "description": f"a language voice with an eSpeak variant: {', '.join(VARIANTS)} "
                "(e.g. en-gb+f2)",
            },
        ]

    def load(self) -> None:
        self._library = EspeakLibrary()
        self._normalizer = TextNormalizer()

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        return [self._synthesize_one(item) for item in items]

    def synthesize_stream(
        self,
        items: Sequence[SynthesisItem],
        wanted: Callable[[int], bool] = lambda i: True,
        eager: Callable[[int], bool] = lambda i: True,
    ) -> Iterator[list[np.ndarray]]:
        """Sentence by sentence: step k carries each item's k-th sentence (empty when done,
        and for an item nobody listens to any more: its remaining sentences are skipped).
        ``eager`` makes no difference: a sentence costs the same whenever it is sent."""
        sentences = [split_sentences(item.text) or [item.text] for item in items]
        for step in range(max(len(s) for s in sentences)):
            yield [
                self._synthesize_one(replace(item, text=parts[step]))
                if step < len(parts) and wanted(i)
                else np.zeros(0, dtype=np.float32)
                for i, (item, parts) in enumerate(zip(items, sentences, strict=True))
            ]

    def _synthesize_one(self, item: SynthesisItem) -> np.ndarray:
        import soxr

        if self._library is None or self._normalizer is None:
            raise RuntimeError("the espeak engine is not loaded")
        # ChatTTS's inline control tokens: a break is a pause here, a laugh is not spoken.
        text = self._normalizer.normalize(as_plain_text(item.text), item.voice.language)
        base, plus, variant = item.voice.id.partition("+")
        espeak_voice = ESPEAK_VOICE_FILES.get(base, base) + plus + variant
        pcm = self._library.synthesize(text, espeak_voice, round(DEFAULT_RATE_WPM * item.speed))
        audio = pcm.astype(np.float32) / 32768.0
        if audio.size == 0:
            return audio
        resampled = soxr.resample(audio, self._library.sample_rate, self.sample_rate, quality="HQ")
        return np.clip(resampled, -1.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        if self._library is not None:
            self._library.close()
            self._library = None
