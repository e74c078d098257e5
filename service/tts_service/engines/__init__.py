"""Synthesis engines, created by name from the service's settings."""

from __future__ import annotations

from ..settings import Settings
from .base import (
    ENGINE_FIELDS,
    SAMPLE_RATE,
    Engine,
    RequestRules,
    ResolvedVoice,
    SynthesisItem,
    SynthesisOptions,
    VoiceInfo,
)

__all__ = [
    "ENGINE_FIELDS",
    "SAMPLE_RATE",
    "Engine",
    "RequestRules",
    "ResolvedVoice",
    "SynthesisItem",
    "SynthesisOptions",
    "VoiceInfo",
    "create_engine",
]


def create_engine(settings: Settings) -> Engine:
    """The engine ``settings.engine`` names, not yet loaded (``load`` runs on the worker)."""
    if settings.engine == "espeak":
        from .espeak import EspeakEngine

        return EspeakEngine(default_voice=settings.default_voice)
    if settings.engine == "chattts":
        try:
            import ChatTTS  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                f"TTS_ENGINE=chattts needs the chattts extra (pip install 'kubetts[chattts]'): {exc}"
            ) from None
        from .chattts import ChatTTSEngine

        return ChatTTSEngine(settings)
    raise ValueError(f"unknown engine {settings.engine!r}")
