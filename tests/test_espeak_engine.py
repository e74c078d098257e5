"""The real eSpeak NG engine: voices, durations, speed, independence and thread confinement."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from audio_checks import rms, seconds
from tts_service.engines.base import SynthesisItem
from tts_service.engines.espeak import EspeakEngine
from tts_service.engines.espeak_library import EspeakLibrary
from tts_service.errors import UnknownVoice


def synth(engine, text, voice=None, speed=1.0):
    resolved = engine.resolve_voice(voice, text)
    return engine.synthesize([SynthesisItem(text, resolved, speed)])[0]


def test_english_sentence_has_plausible_duration(espeak_engine):
    audio = synth(espeak_engine, "The quick brown fox jumps over the lazy dog.")
    assert audio.dtype == np.float32 and audio.ndim == 1
    # Nine words at ~175 words per minute: about three seconds.
    assert 1.5 < seconds(audio) < 6.0
    assert rms(audio) > 0.02
    assert np.abs(audio).max() <= 1.0


def test_mandarin_sentence_has_plausible_duration(espeak_engine):
    audio = synth(espeak_engine, "今天天气很好，我们去公园散步吧。")
    # Fifteen syllables: a few seconds.
    assert 1.5 < seconds(audio) < 8.0
    assert rms(audio) > 0.02


def test_voice_is_chosen_by_script(espeak_engine):
    assert espeak_engine.resolve_voice(None, "你好").id == "cmn"
    assert espeak_engine.resolve_voice(None, "hello").id == "en-us"
    assert espeak_engine.resolve_voice("alloy", "你好").id.startswith("cmn+")
    assert espeak_engine.resolve_voice("alloy", "hello").id.startswith("en-us+")
    assert espeak_engine.resolve_voice("EN-GB", "你好").language == "en"


def test_digits_are_normalized_before_speaking(espeak_engine):
    # "123" spoken as words is much longer than eSpeak reading nothing.
    with_number = synth(espeak_engine, "一百二十三")
    from_digits = synth(espeak_engine, "123", voice="cmn")
    assert abs(seconds(with_number) - seconds(from_digits)) < 0.35 * seconds(with_number)


def test_every_listed_voice_and_alias_speaks(espeak_engine):
    names = [v.id for v in espeak_engine.voices()] + list(espeak_engine.aliases())
    for name in names:
        audio = synth(espeak_engine, "hello", voice=name)
        assert seconds(audio) > 0.2, name


def test_voices_differ(espeak_engine):
    male = synth(espeak_engine, "hello there", voice="en-us+m1")
    female = synth(espeak_engine, "hello there", voice="en-us+f3")
    n = min(male.size, female.size)
    assert not np.allclose(male[:n], female[:n], atol=1e-3)


def test_unknown_voice_is_a_client_error(espeak_engine):
    with pytest.raises(UnknownVoice) as excinfo:
        espeak_engine.resolve_voice("robot9000", "hi")
    assert excinfo.value.code == "unknown_voice"  # the API answers it 400 with param "voice"
    assert "en-us" in excinfo.value.message and "alloy" in excinfo.value.message


def test_bad_default_voice_fails_at_construction():
    with pytest.raises(ValueError, match="TTS_DEFAULT_VOICE"):
        EspeakEngine(default_voice="robot9000")


def test_speed_changes_duration(espeak_engine):
    text = "This sentence is spoken at different speeds."
    slow = seconds(synth(espeak_engine, text, speed=0.5))
    normal = seconds(synth(espeak_engine, text, speed=1.0))
    fast = seconds(synth(espeak_engine, text, speed=2.0))
    assert slow > normal * 1.3 and fast < normal / 1.3


def test_batch_returns_one_array_per_item_in_order(espeak_engine):
    texts = ["One.", "This one is a much longer sentence than the first.", "Three."]
    items = [SynthesisItem(t, espeak_engine.resolve_voice(None, t)) for t in texts]
    audios = espeak_engine.synthesize(items)
    assert len(audios) == 3
    assert seconds(audios[1]) > 2 * seconds(audios[0])
    assert seconds(audios[1]) > 2 * seconds(audios[2])


def test_private_library_instances_are_independent():
    # Each instance loads its own copy of the .so, so two can run on two threads at once.
    libraries = [EspeakLibrary(), EspeakLibrary()]
    errors: list[BaseException] = []
    lengths: list[list[int]] = [[], []]

    def run(index: int) -> None:
        try:
            for _ in range(20):
                lengths[index].append(libraries[index].synthesize("Parallel speech works.", "en-us").size)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for lib in libraries:
        lib.close()
    assert not errors
    assert all(len(ls) == 20 and min(ls) > 10_000 for ls in lengths)
