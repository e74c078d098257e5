"""Encoding float32 mono audio into the response formats the API offers.

``pcm`` is what OpenAI's API returns for that format: raw 16-bit signed little-endian
samples, here at 24 kHz mono.  ``wav`` is the same samples in a RIFF header, ``flac``
is lossless (libsndfile via ``soundfile``), ``mp3`` is LAME via ``lameenc`` (OpenAI's
default format, so the OpenAI SDK's default works).
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable

import numpy as np

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}
FORMATS: tuple[str, ...] = tuple(CONTENT_TYPES)
MP3_BITRATE_KBPS = 64


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16, clipping anything outside."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2")


def encode_pcm(samples: np.ndarray, sample_rate: int) -> bytes:
    return to_int16(samples).tobytes()


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(to_int16(samples).tobytes())
    return buffer.getvalue()


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, to_int16(samples), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def encode_mp3(samples: np.ndarray, sample_rate: int) -> bytes:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_BITRATE_KBPS)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(1)
    encoder.set_quality(5)
    return bytes(encoder.encode(to_int16(samples).tobytes()) + encoder.flush())


_ENCODERS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "mp3": encode_mp3,
    "wav": encode_wav,
    "flac": encode_flac,
    "pcm": encode_pcm,
}


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode ``samples`` as ``fmt`` (one of :data:`FORMATS`)."""
    return _ENCODERS[fmt](samples, sample_rate)
