"""Encoding float32 mono audio into the response formats the API offers.

``pcm`` is what OpenAI's API returns for that format: raw 16-bit signed little-endian
samples, here at 24 kHz mono.  ``wav`` is the same samples in a RIFF header, ``flac``
is lossless (libsndfile via ``soundfile``), ``mp3`` is LAME via ``lameenc`` (OpenAI's
default format, so the OpenAI SDK's default works).  ``opus`` (Ogg Opus, libopus) and
``aac`` (AAC-LC in ADTS frames, FFmpeg's native encoder) come from PyAV, which bundles
FFmpeg in its wheel: maintained encoders and muxers, no system libraries, and the same
library decodes them back in the tests.  Both are 24 kHz mono at speech bitrates.

AAC in ADTS cannot say how many priming samples the encoder added, so a decoder plays
about 45 ms of extra silence at the start; Ogg Opus records its pre-skip and final length,
so it decodes to exactly the samples sent.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable
from typing import Any

import numpy as np

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
}
FORMATS: tuple[str, ...] = tuple(CONTENT_TYPES)
MP3_BITRATE_KBPS = 64
# PyAV (FFmpeg) formats: container, codec, bitrate.
OPUS_BITRATE_KBPS = 32  # libopus' sweet spot for wideband mono speech
AAC_BITRATE_KBPS = 64
_AV_CODECS: dict[str, tuple[str, str, int]] = {
    "opus": ("ogg", "libopus", OPUS_BITRATE_KBPS),
    "aac": ("adts", "aac", AAC_BITRATE_KBPS),
}
# An Ogg page is written at least every 100 ms of audio, so a stream's bytes go out as they
# are made (FFmpeg's default holds a page for a second).
OGG_PAGE_US = 100_000


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


class _ByteSink(io.RawIOBase):
    """A write-only file for PyAV's muxer; :meth:`take` hands over what was written so far."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class _AvEncoder:
    """One PyAV output container (Ogg Opus or ADTS AAC) fed chunk by chunk.

    PyAV re-frames and converts the samples to what the codec takes (20 ms Opus frames,
    1024-sample AAC frames); :meth:`encode` returns the bytes muxed so far.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        import av

        container, codec, kbps = _AV_CODECS[fmt]
        self._sink = _ByteSink()
        options = {"page_duration": str(OGG_PAGE_US)} if container == "ogg" else {}
        self._container = av.open(self._sink, "w", format=container, options=options)
        self._stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        self._stream.bit_rate = kbps * 1000
        self._rate = sample_rate
        # The header now (Ogg's identification pages), so even a clip without audio is a valid file.
        self._container.start_encoding()

    def encode(self, samples: np.ndarray) -> bytes:
        import av

        pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        if pcm.size:
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self._rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def _encode_av(fmt: str) -> Callable[[np.ndarray, int], bytes]:
    def encode_whole(samples: np.ndarray, sample_rate: int) -> bytes:
        encoder = _AvEncoder(fmt, sample_rate)
        return encoder.encode(samples) + encoder.finish()

    return encode_whole


encode_opus = _encode_av("opus")
encode_aac = _encode_av("aac")

_ENCODERS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "mp3": encode_mp3,
    "wav": encode_wav,
    "flac": encode_flac,
    "pcm": encode_pcm,
    "opus": encode_opus,
    "aac": encode_aac,
}


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode ``samples`` as ``fmt`` (one of :data:`FORMATS`)."""
    return _ENCODERS[fmt](samples, sample_rate)


# -- streaming ---------------------------------------------------------------------------

# flac needs the whole signal up front (its header holds the total length and checksum).
STREAM_FORMATS: tuple[str, ...] = ("mp3", "wav", "pcm", "opus", "aac")
WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # the streaming-WAV convention for "data until the connection ends"


class StreamEncoder:
    """Encodes audio chunk by chunk for a streamed (chunked) HTTP response.

    ``wav`` starts with a RIFF header whose sizes say "unknown" (0xFFFFFFFF), as streaming
    servers (OpenAI's included) do; ``mp3`` keeps one LAME encoder across chunks so the
    frames join seamlessly, ``opus`` and ``aac`` one PyAV container (Ogg pages at least
    every 100 ms; ADTS frames as they are encoded); ``pcm`` is the raw samples.  A chunk
    may come out empty while an encoder fills its next frame.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        if fmt not in STREAM_FORMATS:
            raise ValueError(f"{fmt} cannot be streamed")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._started = False
        self._mp3 = _mp3_encoder(sample_rate) if fmt == "mp3" else None
        self._av = _AvEncoder(fmt, sample_rate) if fmt in _AV_CODECS else None

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
        if self._av is not None:
            self._started = True
            return self._av.encode(samples)
        pcm = to_int16(samples).tobytes()
        body = bytes(self._mp3.encode(pcm)) if self._mp3 is not None else pcm
        if not self._started:
            self._started = True
            return self.header() + body
        return body

    def finish(self) -> bytes:
        """What is left to send after the last chunk."""
        if self._av is not None:
            self._started = True
            return self._av.finish()
        tail = self.header() if not self._started else b""
        if self._mp3 is not None:
            if not self._started:  # LAME flushes only after an encode call, even of nothing
                tail += bytes(self._mp3.encode(b""))
            tail += bytes(self._mp3.flush())
        self._started = True
        return tail
