"""Long-form speech through the service: segmented, batched, joined, streamed in order.

The real espeak engine throughout (the ChatTTS engine's long-form path is in
tests/test_chattts_long_form.py); pocketsphinx checks that a paragraph is heard in order.
"""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from audio_checks import SentenceRecognizer
from test_api import metric, scrape
from test_intelligibility import SENTENCES  # the ten sentences pocketsphinx knows
from test_streaming import read_http_chunks
from tts_service.segment_join import FADE_S, PAUSE_S, SegmentJoiner, join_segments
from tts_service.segmentation import Boundary, split_segments

SPEECH = "/v1/audio/speech"
RATE = 24_000
PARAGRAPH = " ".join(s.capitalize() + "." for s in SENTENCES)  # 351 characters


def wav_samples(body: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(body)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


# -- joining -------------------------------------------------------------------------------------


def test_joins_fade_out_and_in_around_a_pause_that_follows_the_cut():
    loud = [np.full(2400, 0.8, np.float32) for _ in range(3)]
    boundaries = [Boundary.SENTENCE, Boundary.WORD, Boundary.END]
    joined = join_segments(loud, boundaries, RATE)
    pauses = round(PAUSE_S[Boundary.SENTENCE] * RATE) + round(PAUSE_S[Boundary.WORD] * RATE)
    assert joined.size == 3 * 2400 + pauses
    # No click: two loud segments meet through a raised-cosine fade, never a jump.
    assert np.abs(np.diff(joined)).max() < 0.8 * np.pi / (2 * FADE_S * RATE) * 1.05
    assert joined[0] == pytest.approx(0.8) and joined[-1] == pytest.approx(0.8)  # the ends are untouched
    gap = joined[2400 : 2400 + round(PAUSE_S[Boundary.SENTENCE] * RATE)]
    assert np.all(gap == 0)


@pytest.mark.parametrize("chunk", [1, 37, 240, 5000])
def test_streamed_chunks_join_to_exactly_the_whole_answer(chunk):
    rng = np.random.default_rng(chunk)
    audios = [rng.uniform(-1, 1, n).astype(np.float32) for n in (3000, 50, 4100)]  # one shorter than a fade
    boundaries = [Boundary.CLAUSE, Boundary.HARD, Boundary.END]
    joiner = SegmentJoiner(boundaries, RATE)
    streamed = []
    for i, audio in enumerate(audios):
        for start in range(0, audio.size, chunk):
            streamed.append(joiner.feed(i, audio[start : start + chunk], last=False))
        streamed.append(joiner.feed(i, np.zeros(0, np.float32), last=True))
    assert np.array_equal(np.concatenate(streamed), join_segments(audios, boundaries, RATE))


def test_segments_must_be_fed_in_order():
    joiner = SegmentJoiner([Boundary.SENTENCE, Boundary.END], RATE)
    with pytest.raises(ValueError, match="segment 1 fed while segment 0"):
        joiner.feed(1, np.zeros(10, np.float32), last=True)


# -- through the service (espeak) ----------------------------------------------------------------


async def test_a_paragraph_is_spoken_whole_in_proportion_to_its_text(make_client):
    client = await make_client(segment_chars=100)
    durations = {}
    for copies in (1, 2, 4):
        response = await client.post(
            SPEECH, json={"input": " ".join([PARAGRAPH] * copies), "response_format": "wav"}
        )
        assert response.status == 200
        durations[copies] = wav_samples(await response.read()).size / RATE
        assert float(response.headers["X-TTS-Audio-Seconds"]) == pytest.approx(durations[copies], abs=1e-3)
    # Nothing is dropped: twice the text, twice the speech (joins included).
    assert durations[2] / durations[1] == pytest.approx(2, rel=0.05)
    assert durations[4] / durations[1] == pytest.approx(4, rel=0.05)
    samples = await scrape(client)
    expected = sum(len(split_segments(" ".join([PARAGRAPH] * c), 100)) for c in (1, 2, 4))
    assert metric(samples, "tts_request_segments_sum") == expected > 3 * 4
    assert metric(samples, "tts_request_segments_count") == 3


async def test_a_paragraph_is_heard_sentence_by_sentence_in_order(make_client, tmp_path):
    client = await make_client(segment_chars=100)
    response = await client.post(
        SPEECH, json={"input": PARAGRAPH, "voice": "alloy", "response_format": "wav"}
    )
    assert response.status == 200
    audio = wav_samples(await response.read())
    recognizer = SentenceRecognizer(SENTENCES, tmp_path, sequence=True)
    assert recognizer.recognize(audio) == " ".join(SENTENCES)
    # Control: the same sentences in another order are not what it says.
    assert recognizer.recognize(audio) != " ".join(reversed(SENTENCES))


async def test_a_long_stream_arrives_in_segment_order_as_long_as_the_whole_answer(make_client, tmp_path):
    client = await make_client(segment_chars=40, max_batch_size=4)  # a dozen segments, several batches
    whole = await client.post(SPEECH, json={"input": PARAGRAPH, "response_format": "pcm"})
    streamed = await client.post(SPEECH, json={"input": PARAGRAPH, "response_format": "pcm", "stream": True})
    assert whole.status == streamed.status == 200
    chunks = await read_http_chunks(streamed)
    assert len([c for c in chunks if c]) >= len(split_segments(PARAGRAPH, 40))  # it arrived piece by piece
    audio = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768.0
    # eSpeak NG is not bit-exact from call to call (a few samples either way), so: as long...
    assert audio.size == pytest.approx(len(await whole.read()) / 2, rel=0.01)
    # ...and heard in order.
    assert SentenceRecognizer(SENTENCES, tmp_path, sequence=True).recognize(audio) == " ".join(SENTENCES)


async def test_input_over_the_limit_names_it(make_client):
    client = await make_client(max_input_chars=4096)
    response = await client.post(SPEECH, json={"input": "x" * 4097})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "input_too_long" and "4096" in error["message"] and error["param"] == "input"
    ok = await client.post(SPEECH, json={"input": ("Hello there. " * 316)[:4096], "response_format": "pcm"})
    assert ok.status == 200
