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


def _mp3_encoder(sample_rate: int):
    """A LAME encoder for mono 16-bit input at ``sample_rate`` (one per response)."""
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_BITRATE_KBPS)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(1)
    encoder.set_quality(5)
    return encoder


def encode_mp3(samples: np.ndarray, sample_rate: int) -> bytes:
    encoder = _mp3_encoder(sample_rate)
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


# -- streaming ---------------------------------------------------------------------------

STREAM_FORMATS: tuple[str, ...] = ("mp3", "wav", "pcm")  # flac needs the whole signal up front
WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # the streaming-WAV convention for "data until the connection ends"


class StreamEncoder:
    """Encodes audio chunk by chunk for a streamed (chunked) HTTP response.

    ``wav`` starts with a RIFF header whose sizes say "unknown" (0xFFFFFFFF), as streaming
    servers (OpenAI's included) do; ``mp3`` keeps one LAME encoder across chunks so the
    frames join seamlessly; ``pcm`` is the raw samples.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        if fmt not in STREAM_FORMATS:
            raise ValueError(f"{fmt} cannot be streamed")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._started = False
        self._mp3 = _mp3_encoder(sample_rate) if fmt == "mp3" else None

    def header(self) -> bytes:
        if self.fmt != "wav":
            return b""
        byte_rate = self.sample_rate * 2
        return (
            b"RIFF" + WAV_UNKNOWN_SIZE.to_bytes(4, "little") + b"WAVE"
            + b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
            + self.sample_rate.to_bytes(4, "little") + byte_rate.to_bytes(4, "little")
            + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
            + b"data" + WAV_UNKNOWN_SIZE.to_bytes(4, "little")
        )  # fmt: skip

    def encode(self, samples: np.ndarray) -> bytes:
        """Bytes for the next chunk (the WAV header is prepended to the first one)."""
        pcm = to_int16(samples).tobytes()
        body = bytes(self._mp3.encode(pcm)) if self._mp3 is not None else pcm
        if not self._started:
            self._started = True
            return self.header() + body
        return body

    def finish(self) -> bytes:
        """What is left to send after the last chunk."""
        tail = self.header() if not self._started else b""
        self._started = True
        if self._mp3 is not None:
            tail += bytes(self._mp3.flush())
        return tail
