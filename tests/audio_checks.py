"""Helpers that judge synthesized audio: duration, loudness, and speech recognition."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 24_000


def seconds(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    return audio.size / rate


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


class SentenceRecognizer:
    """pocketsphinx's en-US model constrained to a JSGF grammar of the candidate sentences.

    eSpeak emits exact digital zeros between words, which break pocketsphinx's feature
    extraction, so audio is padded with 0.3 s and given light Gaussian dither (σ = 32 LSB)
    before decoding.  The grammar forces one candidate sentence or nothing -- or, with
    ``sequence``, one or more of them in any order (a paragraph).
    """

    def __init__(self, sentences: list[str], tmp_path, sequence: bool = False) -> None:
        from pocketsphinx import Config, Decoder

        alternatives = " | ".join(f"( {s} )" for s in sentences)
        rule = f"( {alternatives} )+" if sequence else alternatives
        grammar = tmp_path / "sentences.jsgf"
        grammar.write_text(f"#JSGF V1.0;\ngrammar sentences;\npublic <s> = {rule};\n")
        config = Config(lm=None, jsgf=str(grammar), loglevel="FATAL")
        self._decoder = Decoder(config)
        self._rng = np.random.default_rng(1234)

    def recognize(self, audio: np.ndarray, rate: int = SAMPLE_RATE) -> str | None:
        import soxr

        pcm = soxr.resample(audio.astype(np.float32), rate, 16_000)
        pad = np.zeros(int(0.3 * 16_000), dtype=np.float32)
        pcm = np.concatenate([pad, pcm, pad]) * 32768.0
        pcm = pcm + self._rng.normal(0.0, 32.0, pcm.size)
        pcm16 = np.clip(pcm, -32768, 32767).astype(np.int16)
        self._decoder.start_utt()
        self._decoder.process_raw(pcm16.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else None
