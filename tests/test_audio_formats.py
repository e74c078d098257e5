"""opus (Ogg) and aac (ADTS): encoded by PyAV's FFmpeg, decoded back by it, whole and streamed,
directly and through the HTTP API."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from tts_service.audio import CONTENT_TYPES, STREAM_FORMATS, StreamEncoder, encode

RATE = 24_000
SPEECH = "/v1/audio/speech"
# ADTS cannot carry the encoder's priming samples: a decoder plays ~45 ms more at the start.
DURATION_SLACK_S = {"opus": 0.001, "aac": 0.1}
CONTAINERS = {"opus": ("ogg", "opus"), "aac": ("aac", "aac")}


def decode(data: bytes, fmt: str) -> np.ndarray:
    """``data`` decoded by FFmpeg (through PyAV) to float32 mono at 24 kHz; checks the container."""
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == CONTAINERS[fmt][0]
        stream = container.streams.audio[0]
        assert stream.codec_context.name == CONTAINERS[fmt][1] and stream.channels == 1
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [f for frame in container.decode(stream) for f in resampler.resample(frame)]
        frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.float32)


def speechlike(seconds: float) -> np.ndarray:
    """Harmonics with a syllable-rate envelope: a signal codecs tuned for speech treat as speech."""
    t = np.arange(int(RATE * seconds)) / RATE
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    return (0.2 * voice * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("fmt", ["opus", "aac"])
def test_whole_file_decodes_to_the_source_duration_and_level(fmt):
    source = speechlike(2.3)
    decoded = decode(encode(source, RATE, fmt), fmt)
    assert abs(decoded.size - source.size) / RATE <= DURATION_SLACK_S[fmt]
    assert rms(decoded) == pytest.approx(rms(source), rel=0.1)


@pytest.mark.parametrize("fmt", ["opus", "aac"])
def test_streamed_chunks_join_into_one_file_equal_to_the_whole_one(fmt):
    source = speechlike(1.7)
    encoder = StreamEncoder(fmt, RATE)
    sizes = [3000, 1, 7000, 480, 12345]  # chunk sizes that are no codec frame size
    chunks, at = [], 0
    for size in sizes * 4:
        chunks.append(encoder.encode(source[at : at + size]))
        at += size
    chunks.append(encoder.finish())
    streamed = b"".join(chunks)
    assert sum(1 for c in chunks[:-1] if c) >= 5  # bytes go out while the audio is still coming
    # The encoders are deterministic: the same audio either way (Ogg's stream serial is random).
    assert np.array_equal(decode(streamed, fmt), decode(encode(source, RATE, fmt), fmt))
    assert abs(decode(streamed, fmt).size - source.size) / RATE <= DURATION_SLACK_S[fmt]


@pytest.mark.parametrize("fmt", ["opus", "aac"])
def test_silence_and_empty_audio_encode_to_valid_files(fmt):
    assert decode(encode(np.zeros(RATE // 2, np.float32), RATE, fmt), fmt).size >= RATE // 2 - 1
    empty = encode(np.zeros(0, np.float32), RATE, fmt)
    if fmt == "opus":
        # Ogg Opus' two header packets, without audio (FFmpeg will not probe a file with no packet).
        assert empty.startswith(b"OggS") and b"OpusHead" in empty and b"OpusTags" in empty
    else:
        assert empty == b""  # ADTS has no file header: no frames is no bytes


@pytest.mark.parametrize("fmt", ["opus", "aac"])
async def test_http_whole_and_streamed(client, fmt):
    text = "Opus and A A C, whole and streamed. 你好。"
    wav = await client.post(SPEECH, json={"input": text, "response_format": "pcm"})
    reference = np.frombuffer(await wav.read(), "<i2").astype(np.float32) / 32767
    whole = await client.post(SPEECH, json={"input": text, "response_format": fmt})
    assert whole.status == 200 and whole.headers["Content-Type"] == CONTENT_TYPES[fmt]
    decoded = decode(await whole.read(), fmt)
    seconds = float(whole.headers["X-TTS-Audio-Seconds"])
    assert abs(decoded.size / RATE - seconds) <= DURATION_SLACK_S[fmt] + 0.001
    assert rms(decoded) == pytest.approx(rms(reference), rel=0.2)  # espeak is not bit-exact per call
    streamed = await client.post(SPEECH, json={"input": text, "response_format": fmt, "stream": True})
    assert streamed.headers["Transfer-Encoding"] == "chunked"
    from_stream = decode(await streamed.read(), fmt)
    assert from_stream.size / RATE == pytest.approx(seconds, abs=0.1)
    assert rms(from_stream) == pytest.approx(rms(reference), rel=0.2)


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_a_stream_without_any_audio_still_finishes(fmt):
    """A text with nothing to speak streams no chunk at all; finishing must still work (LAME
    refused to flush without an encode call first: found by fuzzing the ChatTTS service)."""
    tail = StreamEncoder(fmt, RATE).finish()
    if fmt == "opus":  # Ogg's stream serial is random: compare what the file holds
        assert tail.startswith(b"OggS") and b"OpusHead" in tail and b"OpusTags" in tail
    elif fmt == "wav":
        assert tail[:4] == b"RIFF"  # the streaming header (sizes "unknown"), no samples
    else:
        assert tail == encode(np.zeros(0, np.float32), RATE, fmt)
