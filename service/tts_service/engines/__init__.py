"""Synthesis engines, created by name from the service's settings."""

from __future__ import annotations

import importlib.util

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
        # Found, not imported: torch, transformers and ChatTTS take seconds to import, and the
        # worker thread imports them while the HTTP server already answers /healthz.
        missing = [name for name in ("torch", "ChatTTS") if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(
                "TTS_ENGINE=chattts needs the chattts extra (pip install 'kubetts[chattts]'): "
                f"no module named {', '.join(missing)}"
            )
        from .chattts import ChatTTSEngine

        return ChatTTSEngine(settings)
    raise ValueError(f"unknown engine {settings.engine!r}")
