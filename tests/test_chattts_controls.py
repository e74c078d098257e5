"""Per-request ChatTTS controls on the real engine (random-weights checkpoint, CPU): seed,
temperature/top_p/top_k, inline control tokens, instructions as the refine prompt, punctuation
in ChatTTS's own character set, seed-N voices and speaker embeddings in the request.

Every generation is bounded (``TTS_MAX_NEW_TOKENS``); ``TTS_MIN_NEW_TOKENS`` makes rows run to
that length, so two answers differ only where their sampled tokens differ.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import openai
import pytest
from app_client import service_of
from numeric_edges import cases, raw_body
from test_api import wait_until
from test_chattts_engine import items_for, settings_for
from tts_service.control_tokens import KNOWN_TOKENS, as_plain_text
from tts_service.engines.chattts import ChatTTSEngine
from tts_service.engines.chattts_text import ACCEPTED
from tts_service.engines.chattts_voices import embedding_for_seed
from tts_service.errors import InvalidRequest
from tts_service.speech_request import decode_json_object, parse_openai_speech, parse_tts

SPEECH = "/v1/audio/speech"
ROW_TOKENS = 12

# Everyday punctuation people type, Chinese and English (full- and half-width), as ChatTTS sees it.
PUNCTUATION_CORPUS = [
    "你好吗？我很好！谢谢。",
    "他说：“明天见。”然后走了；我没说话……",
    "请看《红楼梦》（第一回）——很精彩～",
    "【通知】会议改到周三、周四·下午。",
    "Really? Yes! Okay; fine: done.",
    'He said "don\'t go" (twice) - and left...',
    "Wait... what?! No way!!",
    "Prices: 5% off & free shipping + returns = happy customers.",
    "Email me at team@kubetts.io / or call.",
    "Café, naïve façade — déjà vu?",
    "混合文本：Hello, 世界! How are you？",
    "「引号」『书名』〈注〉，还有‘单引号’。",
    "Tabs\tand\nnew lines; also\u3000ideographic spaces.",
    "Is it 3:30? 10:45! 1/2 or 2024-05-01...",
]


class RecordingEngine(ChatTTSEngine):
    """The real engine, recording each call's InferCodeParams (and refine prompt)."""

    def __init__(self, settings, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.calls: list[dict] = []
        self.gate = threading.Event()  # cleared: the next call waits until it is set
        self.gate.set()
        self.entered = threading.Event()

    def _prepare(self, items, max_new_token, texts=None):
        self.entered.set()
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        chat, texts, params, budgets = super()._prepare(items, max_new_token, texts)
        self.calls.append(
            {
                "rows": len(items),
                "texts": texts,
                "temperature": params.temperature,
                "top_P": params.top_P,
                "top_K": params.top_K,
                "spk_emb": params.spk_emb,
            }
        )
        return chat, texts, params, budgets


@pytest.fixture(scope="module")
def engine(checkpoint):
    engine = ChatTTSEngine(
        settings_for(checkpoint, max_new_tokens=ROW_TOKENS, min_new_tokens=ROW_TOKENS),
        sha256_map=checkpoint["sha256"],
    )
    engine.load()
    yield engine
    engine.close()


async def controls_service(checkpoint, make_service_client, scheduler="request", **overrides):
    """A service on the recording engine; request-level unless ``scheduler`` says otherwise
    (the recording engine sees request-level engine calls only)."""
    settings = settings_for(
        checkpoint,
        max_new_tokens=ROW_TOKENS,
        min_new_tokens=ROW_TOKENS,
        warmup=False,
        scheduler=scheduler,
        **overrides,
    )
    engine = RecordingEngine(settings, sha256_map=checkpoint["sha256"])
    fields = {k: getattr(settings, k) for k in settings.__dataclass_fields__ if k != "engine"}
    return engine, await make_service_client(engine, **fields)


async def behind_a_running_call(engine, client, bodies: list[dict]) -> None:
    """Send ``bodies`` together while the engine is busy with another call, so they all wait
    and form their batches together (a free engine would take the first one alone at once)."""
    engine.gate.clear()
    engine.entered.clear()
    blocker = asyncio.ensure_future(pcm(client, temperature=1.5))
    await wait_until(engine.entered.is_set)
    waiting = [asyncio.ensure_future(pcm(client, **b)) for b in bodies]
    await wait_until(lambda: service_of(client).batcher.queued_items == len(bodies))
    engine.calls.clear()
    engine.gate.set()
    await asyncio.gather(blocker, *waiting)
    assert engine.calls[0]["temperature"] == 1.5  # the blocker's call, recorded after the gate
    del engine.calls[0]


async def pcm(client, **body) -> bytes:
    response = await client.post(SPEECH, json={"input": "你好，世界。", "response_format": "pcm", **body})
    assert response.status == 200, await response.text()
    return await response.read()


# -- punctuation and control tokens ------------------------------------------------------------


def invalid_character_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "invalid characters" in r.getMessage()]


def test_chattts_itself_deletes_question_marks(engine, caplog):
    """What the mapping is for: ChatTTS's own normalizer warns and deletes '？' (so the test
    below could fail)."""
    chat = engine._chat
    with caplog.at_level(logging.WARNING, logger="ChatTTS"):
        spoken = chat.normalizer("真的吗？好的。", True, False, "zh")
    assert "？" not in spoken and invalid_character_warnings(caplog)


def test_everyday_punctuation_reaches_chattts_without_invalid_characters(engine, caplog):
    items = items_for(engine, PUNCTUATION_CORPUS)
    with caplog.at_level(logging.INFO):
        texts = engine.prepare_texts(items)
        engine.synthesize(items[:4])  # the real pipeline too (bounded: ROW_TOKENS per row)
    assert invalid_character_warnings(caplog) == []
    assert not [r for r in caplog.records if "cannot speak" in r.getMessage()]
    for text in texts:
        assert all(ACCEPTED.fullmatch(ch) for ch in text), text
    # Sentence ends stay sentence ends: a question keeps its stop, in both languages.
    assert texts[0] == "你好吗。我很好。谢谢。"
    assert texts[4] == "Really. Yes. Okay, fine, done."
    assert texts[6] == "Wait. what. No way."


def test_unspeakable_letters_are_logged_not_dropped_silently(engine, caplog):
    with caplog.at_level(logging.WARNING):
        (text,) = engine.prepare_texts(items_for(engine, ["Привет, hello."]))
    assert text == "hello."
    assert any("cannot speak" in r.getMessage() and "П" in r.getMessage() for r in caplog.records)


def test_control_tokens_reach_the_tokenizer_unchanged(engine):
    text = "你好[uv_break]世界[laugh]，今天[break_3]天气[oral_2]很好[laugh_1]。[lbreak]"
    (prepared,) = engine.prepare_texts(items_for(engine, [text]))
    assert prepared == text
    tokenizer = engine._chat.tokenizer._tokenizer
    ids = tokenizer.encode(prepared, add_special_tokens=False)
    for token in ("[uv_break]", "[laugh]", "[break_3]", "[oral_2]", "[laugh_1]", "[lbreak]"):
        assert tokenizer.convert_tokens_to_ids(token) in ids, token
    # Around tokens, text is still normalized and mapped: digits spoken, '?' kept as a stop.
    (around,) = engine.prepare_texts(items_for(engine, ["第3名？[uv_break]好的"]))
    assert around == "第三名。[uv_break]好的"


def test_espeak_reads_breaks_as_pauses_and_does_not_speak_laughs():
    assert as_plain_text("Hello[uv_break]world[laugh] again[lbreak]") == "Hello, world again, "
    assert all(as_plain_text(token) in ("", ", ") for token in KNOWN_TOKENS)
    assert as_plain_text("keep [note] and [speed_5]") == "keep [note] and [speed_5]"


async def test_unknown_control_tokens_are_a_400_naming_them(checkpoint, make_service_client):
    _, client = await controls_service(checkpoint, make_service_client)
    response = await client.post(SPEECH, json={"input": "你好[speed_9]世界[laughs]"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "input" and error["code"] == "unknown_control_token"
    assert "[laughs], [speed_9]" in error["message"] and "[uv_break]" in error["message"]


# -- seed and sampling -------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["request", "continuous"])
async def test_same_seed_same_audio_and_unseeded_calls_stay_random(
    checkpoint, make_service_client, scheduler
):
    _, client = await controls_service(checkpoint, make_service_client, scheduler)
    first = await pcm(client, seed=1234)
    unseeded_a = await pcm(client)  # right after a seeded call: still random
    again = await pcm(client, seed=1234)
    unseeded_b = await pcm(client)
    other = await pcm(client, seed=1235)
    assert first == again
    assert other != first
    assert unseeded_a != unseeded_b != first
    tts = await client.post("/tts", json={"text": "你好，世界。", "format": "pcm", "seed": 1234})
    assert await tts.read() == first  # /tts takes the same controls


@pytest.mark.parametrize("refine", [False, True])
async def test_a_seeded_request_sounds_the_same_under_both_schedulers(
    checkpoint, make_service_client, refine
):
    """Served alone, the continuous scheduler's own decode loop makes exactly the audio of
    ChatTTS's generate (the request-level path), for every control a request can set -- and
    with text refinement, whose draws come first from the same seeded generator."""
    body = dict(seed=99, temperature=0.5, top_p=0.8, top_k=10, voice="seed-42", speed=1.5)
    if refine:
        body["instructions"] = "[oral_2][laugh_0][break_4]"
    answers = []
    for scheduler in ("request", "continuous"):
        _, client = await controls_service(checkpoint, make_service_client, scheduler, refine_text=refine)
        answers.append(await pcm(client, **body))
    assert len(answers[0]) > 0 and answers[0] == answers[1]


async def test_sampling_controls_reach_the_engine_and_split_batches(checkpoint, make_service_client):
    engine, client = await controls_service(checkpoint, make_service_client, max_wait_ms=500)
    engine.calls.clear()
    await pcm(client)
    assert engine.calls[-1]["temperature"] == 0.3 and engine.calls[-1]["top_K"] == 20  # server defaults
    bodies = [
        {"temperature": 0.9, "top_p": 0.5, "top_k": 7},
        {"temperature": 0.9, "top_p": 0.5, "top_k": 7},
        {"temperature": 0.1},
    ]
    await behind_a_running_call(engine, client, bodies)
    calls = sorted((c["rows"], c["temperature"], c["top_P"], c["top_K"]) for c in engine.calls)
    # One engine call shares its sampling settings: requests that differ never share a batch.
    assert calls == [(1, 0.1, 0.7, 20), (2, 0.9, 0.5, 7)]


def test_sampling_fields_take_the_ranges_of_the_server_settings(engine):
    """Every numeric edge case of every ChatTTS field (tests/numeric_edges.py) through the parser:
    valid ones parse, invalid ones are a 400 naming the field."""
    rules = engine.request_rules()
    checked = set()
    for route, field, edge in cases(rules):
        parse = parse_openai_speech if route == SPEECH else parse_tts
        body = decode_json_object(raw_body(route, field, edge))
        if edge.valid:
            parse(body, engine._settings, rules)
        else:
            with pytest.raises(InvalidRequest) as excinfo:
                parse(body, engine._settings, rules)
            assert excinfo.value.param == field, (field, edge.label)
        checked.add(field)
    assert {"seed", "temperature", "top_p", "top_k", "speed"} <= checked


# -- instructions --------------------------------------------------------------------------------


async def test_instructions_are_the_refine_prompt_when_refinement_is_on(checkpoint, make_service_client):
    engine, client = await controls_service(checkpoint, make_service_client, refine_text=True)
    prompts: list[str] = []
    refine = engine._chat._refine_text

    def recording_refine(text, device, params):
        prompts.append(params.prompt)
        return refine(text, device, params)

    engine._chat._refine_text = recording_refine
    await pcm(client, instructions="[oral_2][laugh_0][break_6]")
    await pcm(client, instructions="")  # empty means none
    assert prompts == ["[oral_2][laugh_0][break_6]", ""]
    response = await client.post(SPEECH, json={"input": "你好", "instructions": "Speak cheerfully."})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "instructions" and "[oral_N][laugh_N][break_N]" in error["message"]


async def test_instructions_without_refinement_are_refused_with_the_reason(checkpoint, make_service_client):
    _, client = await controls_service(checkpoint, make_service_client)
    response = await client.post(SPEECH, json={"input": "你好", "instructions": "[oral_2]"})
    error = (await response.json())["error"]
    assert response.status == 400 and error["param"] == "instructions"
    assert "TTS_REFINE_TEXT" in error["message"]
    tts = await client.post("/tts", json={"text": "你好", "instructions": "[oral_2]"})
    assert tts.status == 400 and (await tts.json())["error"]["param"] == "instructions"


# -- voices at request time ----------------------------------------------------------------------


async def test_any_seed_voice_and_an_embedding_in_the_request(checkpoint, make_service_client):
    engine, client = await controls_service(checkpoint, make_service_client)
    named = await client.post(SPEECH, json={"input": "你好", "voice": "SEED-0042", "response_format": "pcm"})
    assert named.status == 200 and named.headers["X-TTS-Voice"] == "seed-42"
    speaker = engine._chat.speaker
    embedding = embedding_for_seed(42, speaker.std, speaker.mean)
    assert engine.calls[-1]["spk_emb"] == embedding
    # The same speaker given as an embedding string, with a seed: the same audio as by name.
    by_name = await pcm(client, voice="seed-42", seed=9)
    by_embedding = await client.post(
        SPEECH,
        json={"input": "你好，世界。", "response_format": "pcm", "speaker_embedding": embedding, "seed": 9},
    )
    assert by_embedding.status == 200
    assert (
        by_embedding.headers["X-TTS-Voice"].startswith("emb-")
        and len(by_embedding.headers["X-TTS-Voice"]) == 36
    )
    assert await by_embedding.read() == by_name


async def test_requests_with_equal_embeddings_share_a_batch(checkpoint, make_service_client):
    engine, client = await controls_service(checkpoint, make_service_client, max_wait_ms=500)
    speaker = engine._chat.speaker
    one, two = (embedding_for_seed(s, speaker.std, speaker.mean) for s in (1, 2))
    await behind_a_running_call(engine, client, [{"speaker_embedding": e} for e in (one, one, two)])
    assert sorted((c["rows"], c["spk_emb"] == one) for c in engine.calls) == [(1, False), (2, True)]


@pytest.mark.parametrize(
    ("embedding", "contains"),
    [
        ("not base16384 at all", "does not decode"),
        ("x" * 5000, "1 to 4096 characters"),
        ("", "1 to 4096 characters"),
    ],
)
async def test_invalid_embeddings_are_a_400(checkpoint, make_service_client, embedding, contains):
    _, client = await controls_service(checkpoint, make_service_client)
    response = await client.post(SPEECH, json={"input": "你好", "speaker_embedding": embedding})
    error = (await response.json())["error"]
    assert response.status == 400 and error["param"] == "speaker_embedding" and contains in error["message"]


async def test_an_embedding_of_another_size_or_with_a_voice_is_a_400(checkpoint, make_service_client):
    import torch
    from ChatTTS.model import Speaker

    engine, client = await controls_service(checkpoint, make_service_client)
    small = Speaker._encode(torch.ones(8))
    response = await client.post(SPEECH, json={"input": "你好", "speaker_embedding": small})
    assert response.status == 400 and "holds 8 numbers" in (await response.json())["error"]["message"]
    speaker = engine._chat.speaker
    good = embedding_for_seed(1, speaker.std, speaker.mean)
    both = await client.post(SPEECH, json={"input": "你好", "speaker_embedding": good, "voice": "alloy"})
    assert both.status == 400 and (await both.json())["error"]["param"] == "speaker_embedding"


async def test_voices_lists_the_forms_a_request_may_use(checkpoint, make_service_client):
    _, client = await controls_service(checkpoint, make_service_client)
    forms = {f["form"]: f for f in (await (await client.get("/v1/voices")).json())["forms"]}
    assert {"id", "alias", "default", "seed", "speaker_embedding"} <= set(forms)
    assert forms["speaker_embedding"]["max_chars"] == 4096
    unknown = await client.post(SPEECH, json={"input": "你好", "voice": "seed-x"})
    assert "seed-N" in (await unknown.json())["error"]["message"]


async def test_openai_sdk_sends_the_controls(checkpoint, make_service_client):
    _, client = await controls_service(checkpoint, make_service_client)
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    options = dict(model="tts-1", voice="seed-7", input="你好，世界。", response_format="pcm")
    first = await sdk.audio.speech.create(**options, extra_body={"seed": 5, "temperature": 0.5, "top_k": 3})
    second = await sdk.audio.speech.create(**options, extra_body={"seed": 5, "temperature": 0.5, "top_k": 3})
    assert first.content == second.content and len(first.content) > 0
    with pytest.raises(openai.BadRequestError) as excinfo:
        await sdk.audio.speech.create(**options, extra_body={"top_p": 1.5})
    assert "top_p" in str(excinfo.value)


def test_a_text_with_nothing_to_speak_gets_no_audio_and_no_made_up_speech(engine):
    """Only marks or emoji map to an empty text; ChatTTS given an empty text would invent speech."""
    items = items_for(engine, ["？！……", "😀🎉", "你好"])
    audios = engine.synthesize(items)
    assert [a.size for a in audios[:2]] == [0, 0] and audios[2].size > 0
    assert engine.last_batch.size == 1  # only the speakable row was generated
    streamed = [sum(c[i].size for c in engine.synthesize_stream(items)) for i in range(3)]
    assert streamed[:2] == [0, 0] and streamed[2] == audios[2].size
    assert [a.size for a in engine.synthesize(items[:2])] == [0, 0]
    assert engine.truncated_rows() == []


async def test_a_streamed_text_with_nothing_to_speak_is_an_empty_answer(checkpoint, make_service_client):
    _, client = await controls_service(checkpoint, make_service_client)
    for fmt in ("mp3", "opus", "pcm"):
        response = await client.post(SPEECH, json={"input": "？！", "stream": True, "response_format": fmt})
        assert response.status == 200, await response.text()
        await response.read()
    whole = await client.post(SPEECH, json={"input": "😀", "response_format": "wav"})
    assert whole.status == 200 and whole.headers["X-TTS-Audio-Seconds"] == "0.000"
