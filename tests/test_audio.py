"""Audio encoders: every format decodes back to the same duration and sample rate."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import soundfile
from tts_service.audio import CONTENT_TYPES, FORMATS, encode, to_int16

RATE = 24_000


def tone(seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_formats_have_content_types():
    assert set(FORMATS) == {"mp3", "wav", "flac", "pcm", "opus", "aac"}
    assert CONTENT_TYPES["mp3"] == "audio/mpeg" and CONTENT_TYPES["wav"] == "audio/wav"


def test_pcm_is_raw_int16_little_endian():
    samples = tone()
    body = encode(samples, RATE, "pcm")
    decoded = np.frombuffer(body, dtype="<i2")
    assert decoded.size == samples.size
    assert np.allclose(decoded / 32767.0, samples, atol=1e-4)


def test_wav_header_and_samples():
    samples = tone()
    with wave.open(io.BytesIO(encode(samples, RATE, "wav"))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        assert wav.getnframes() == samples.size


def test_flac_is_lossless_at_16_bit():
    samples = tone()
    decoded, rate = soundfile.read(io.BytesIO(encode(samples, RATE, "flac")), dtype="int16")
    assert rate == RATE
    assert np.array_equal(decoded, to_int16(samples))


def test_mp3_has_frames_and_plausible_duration():
    body = encode(tone(1.0), RATE, "mp3")
    assert body[:3] == b"ID3" or (body[0] == 0xFF and body[1] & 0xE0 == 0xE0)
    # 64 kbit/s for one second is about 8 kB.
    assert 4_000 < len(body) < 16_000


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_audio_encodes(fmt):
    assert isinstance(encode(np.zeros(0, dtype=np.float32), RATE, fmt), bytes)


def test_out_of_range_samples_are_clipped():
    assert to_int16(np.array([2.0, -2.0, 0.0], dtype=np.float32)).tolist() == [32767, -32767, 0]
