"""Long-form speech on the ChatTTS engine (random-weights checkpoint, CPU): per-row token
budgets, a 1000-character Chinese text spoken whole in segments, one voice throughout.

Random weights rarely stop on their own, so ``TTS_MIN_NEW_TOKENS`` makes rows run to a known
length where a test needs one, and every generation is bounded by ``TTS_MAX_NEW_TOKENS``.
"""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
from test_api import metric, scrape
from test_chattts_engine import items_for, settings_for
from test_streaming import read_http_chunks
from tts_service.engines.chattts import SAMPLES_PER_TOKEN, ChatTTSEngine, token_budget
from tts_service.segment_join import PAUSE_S
from tts_service.segmentation import split_segments

SPEECH = "/v1/audio/speech"
SENTENCES = [
    "今天天气很好，我们一起去公园散步吧。",
    "春天来了，花园里的花都开了，红的、黄的、白的，非常好看。",
    "小明每天早上七点起床，先跑步，再吃早饭，然后去学校上课。",
    "这家餐厅的菜很好吃，价格也不贵，所以每到周末都有很多人。",
    "你知道最近的火车站在哪里吗？",
]
ROW_TOKENS = 16  # TTS_MAX_NEW_TOKENS = TTS_MIN_NEW_TOKENS: every segment's row runs to exactly this


def thousand_characters() -> str:
    text = ""
    while len(text) < 1000:
        text += SENTENCES[len(text) % len(SENTENCES)]
    return text[:1000]


class RecordingEngine(ChatTTSEngine):
    """The real engine, recording each call's texts and the speaker embedding it used."""

    def __init__(self, settings, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.calls: list[tuple[list[str], str]] = []

    def _prepare(self, items, max_new_token, texts=None):
        chat, texts, params, budgets = super()._prepare(items, max_new_token, texts)
        self.calls.append(([item.text for item in items], params.spk_emb))
        return chat, texts, params, budgets


def test_each_row_gets_its_own_budget_and_a_short_row_is_trimmed_to_it(checkpoint):
    engine = ChatTTSEngine(
        settings_for(checkpoint, max_new_tokens=200, min_new_tokens=200), sha256_map=checkpoint["sha256"]
    )
    engine.load()
    try:
        items = items_for(engine, ["短", "一个比较长的句子用来测试"])
        texts = engine.prepare_texts(items)
        audios = engine.synthesize(items)
        stats = engine.last_batch
    finally:
        engine.close()
    assert stats.budgets == [token_budget(t, 1.0, 200) for t in texts] == [60, 192]
    assert stats.max_new_token == 192  # the batch runs to its largest row budget...
    assert stats.tokens == [60, 192]  # ...and the short row is cut at its own
    for audio, n in zip(audios, stats.tokens, strict=True):
        assert audio.size == SAMPLES_PER_TOKEN * n - SAMPLES_PER_TOKEN // 2
    # Both were still "speaking" at their budgets (TTS_MIN_NEW_TOKENS): reported, not hidden.
    assert engine.truncated_rows() == [0, 1]


async def recording_service(checkpoint, make_service_client, scheduler="request", **overrides):
    """The service on a RecordingEngine, every row exactly ROW_TOKENS long, batches of 4
    (request-level unless ``scheduler`` says otherwise: the engine records request-level calls)."""
    settings = settings_for(
        checkpoint,
        max_new_tokens=ROW_TOKENS,
        min_new_tokens=ROW_TOKENS,
        max_batch_size=4,
        warmup=False,
        scheduler=scheduler,
        **overrides,
    )
    engine = RecordingEngine(settings, sha256_map=checkpoint["sha256"])
    # make_service_client takes the settings as keywords; the engine instance is passed apart.
    fields = {k: getattr(settings, k) for k in settings.__dataclass_fields__ if k != "engine"}
    return engine, await make_service_client(engine, **fields)


def whole_length(segments) -> int:
    """Samples of the joined answer: each row's audio plus the pause after each join."""
    row = SAMPLES_PER_TOKEN * ROW_TOKENS - SAMPLES_PER_TOKEN // 2
    pauses = sum(round(PAUSE_S[s.boundary] * 24_000) for s in segments[:-1])
    return len(segments) * row + pauses


async def test_a_thousand_chinese_characters_are_spoken_whole_in_segments(checkpoint, make_service_client):
    engine, client = await recording_service(
        checkpoint, make_service_client, segment_chars=100, max_wait_ms=50
    )
    text = thousand_characters()
    segments = split_segments(text, 100)
    assert len(segments) >= 10 and all(len(s.text) <= 100 for s in segments)

    response = await client.post(SPEECH, json={"input": text, "response_format": "wav", "voice": "alloy"})
    assert response.status == 200, await response.text()
    with wave.open(io.BytesIO(await response.read())) as wav:
        frames = wav.getnframes()
    assert frames == whole_length(segments)  # every segment's audio, in one answer
    samples = await scrape(client)
    assert metric(samples, "tts_request_segments_sum") == len(segments)
    # Every row ran to its budget (random weights do not stop): each counted, none silent.
    assert metric(samples, "tts_truncated_segments_total") == len(segments)
    assert metric(samples, "tts_batch_size_sum") == len(segments)
    assert metric(samples, "tts_batch_size_count") == -(-len(segments) // 4)  # full batches of 4

    # One voice for the whole text: one speaker embedding in every call, the voice's own.
    spoken = [t for texts, _ in engine.calls for t in texts]
    assert spoken == [s.text for s in segments]
    assert {emb for _, emb in engine.calls} == {engine._embeddings[engine.resolve_voice("alloy", text).id]}

    streamed = await client.post(SPEECH, json={"input": text, "response_format": "pcm", "stream": True})
    assert streamed.status == 200
    body = b"".join(await read_http_chunks(streamed))
    assert len(body) // 2 == whole_length(segments)  # streamed: the same length, segment after segment


async def test_continuous_rows_speak_a_long_text_whole_four_at_a_time(checkpoint, make_service_client):
    """The continuous scheduler: every segment a row of its own, at most four active, each
    with exactly its own audio, whole and streamed."""
    _, client = await recording_service(checkpoint, make_service_client, "continuous", segment_chars=100)
    text = thousand_characters()
    segments = split_segments(text, 100)
    response = await client.post(SPEECH, json={"input": text, "response_format": "wav", "voice": "alloy"})
    assert response.status == 200, await response.text()
    with wave.open(io.BytesIO(await response.read())) as wav:
        assert wav.getnframes() == whole_length(segments)
    samples = await scrape(client)
    assert metric(samples, "tts_step_admitted_rows_sum") == len(segments)  # one row per segment
    assert metric(samples, "tts_truncated_segments_total") == len(segments)
    steps = metric(samples, "tts_batch_size_count")
    # Every row needs ROW_TOKENS steps; four at a time, the text takes about a quarter of the
    # steps one row at a time would (bucket <= 4 holds every step: never more than four rows).
    assert steps < len(segments) * ROW_TOKENS / 2
    assert metric(samples, "tts_batch_size_bucket", le="4.0") == steps
    assert metric(samples, "tts_active_rows") <= 4
    streamed = await client.post(SPEECH, json={"input": text, "response_format": "pcm", "stream": True})
    assert streamed.status == 200
    body = b"".join(await read_http_chunks(streamed))
    assert len(body) // 2 == whole_length(segments)


async def test_two_voices_never_share_a_call_and_each_request_keeps_its_own(checkpoint, make_service_client):
    engine, client = await recording_service(
        checkpoint, make_service_client, segment_chars=40, max_wait_ms=200
    )
    texts = {"alloy": "".join(SENTENCES[:2]), "echo": "".join(SENTENCES[2:])}  # no segment in common
    responses = await asyncio.gather(
        *(
            client.post(SPEECH, json={"input": t, "voice": v, "response_format": "pcm"})
            for v, t in texts.items()
        )
    )
    assert [r.status for r in responses] == [200, 200]
    embedding = {v: engine._embeddings[engine.resolve_voice(v, t).id] for v, t in texts.items()}
    assert embedding["alloy"] != embedding["echo"]
    for voice, text in texts.items():
        mine = {s.text for s in split_segments(text, 40)}
        used = {emb for call_texts, emb in engine.calls if mine & set(call_texts)}
        assert used == {embedding[voice]}, voice
    assert sum(len(call_texts) for call_texts, _ in engine.calls) == sum(
        len(split_segments(t, 40)) for t in texts.values()
    )
    for response in responses:
        audio = np.frombuffer(await response.read(), dtype="<i2")
        assert audio.size > 0


def test_a_stream_decodes_rows_nobody_waits_for_only_at_the_end(checkpoint):
    """The segment being read streams every 24 tokens; a later one (not eager) arrives whole at
    the end, with as many samples as if it had streamed."""
    engine = ChatTTSEngine(
        settings_for(checkpoint, max_new_tokens=64, min_new_tokens=64), sha256_map=checkpoint["sha256"]
    )
    engine.load()
    try:
        items = items_for(engine, ["你好", "今天天气很好"])
        steps = list(engine.synthesize_stream(items, eager=lambda i: i == 0))
        tokens = engine.last_batch.tokens
    finally:
        engine.close()
    assert len(steps) >= 3
    assert all(step[1].size == 0 for step in steps[:-1]) and steps[-1][1].size > 0
    assert sum(step[0].size > 0 for step in steps[:-1]) >= 2  # row 0 streamed as it was made
    for i, n in enumerate(tokens):
        assert sum(step[i].size for step in steps) == SAMPLES_PER_TOKEN * n - SAMPLES_PER_TOKEN // 2
