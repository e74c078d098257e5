"""Intelligibility: what the service says is recognized as what it was asked to say.

A round trip through pocketsphinx's en-US acoustic model, constrained by a grammar of
the ten sentences: each sentence must decode to itself, and the same audio reversed
(spectrally similar, linguistically meaningless) must not.
"""

from __future__ import annotations

import io
import wave

import numpy as np
from audio_checks import SentenceRecognizer

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call me back tomorrow morning",
    "the weather is nice today",
    "i would like a cup of coffee",
    "where is the nearest train station",
    "turn left at the next corner",
    "my favorite color is blue",
    "we need more time to finish the project",
    "open the window please",
    "the meeting starts at ten",
]


def decode_wav(body: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(body)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return samples.astype(np.float32) / 32768.0, rate


async def test_spoken_sentences_are_recognized_through_the_http_api(client, tmp_path):
    recognizer = SentenceRecognizer(SENTENCES, tmp_path)
    heard: dict[str, str | None] = {}
    reversed_heard: dict[str, str | None] = {}
    for sentence in SENTENCES:
        response = await client.post(
            "/v1/audio/speech",
            json={
                "model": "tts-1",
                "input": sentence.capitalize() + ".",
                "voice": "alloy",
                "response_format": "wav",
            },
        )
        assert response.status == 200
        audio, rate = decode_wav(await response.read())
        heard[sentence] = recognizer.recognize(audio, rate)
        reversed_heard[sentence] = recognizer.recognize(audio[::-1].copy(), rate)
    assert heard == {s: s for s in SENTENCES}
    # Control: reversed speech must not be recognized as the sentence it came from.
    assert all(reversed_heard[s] != s for s in SENTENCES), reversed_heard


def test_noise_is_not_recognized(tmp_path):
    recognizer = SentenceRecognizer(SENTENCES, tmp_path)
    noise = np.random.default_rng(7).normal(0, 0.1, 48_000).astype(np.float32)
    assert recognizer.recognize(noise) is None
