"""The continuous-batching decode loop on the random-weights ChatTTS checkpoint (CPU).

Its promise: a row served alone gets exactly the tokens of ChatTTS's own ``generate`` for
the same seed; with greedy sampling a row's tokens do not depend on when it joined or who
its batch-mates were; rows of different voices and settings share steps; a failing row
leaves alone; the KV cache stays as long as the longest active row.  Budgets bound every
generation (random weights rarely stop).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_chattts_engine import settings_for
from tts_service.engines import SynthesisItem, SynthesisOptions
from tts_service.engines.chattts import ChatTTSEngine

TEXTS = ["你好，世界。", "今天天气很好，我们去公园吧。", "一二三。", "hello there, how are you today?"]


@pytest.fixture(scope="module")
def engine(checkpoint):
    # Budgets differ by text (48 + 12 per character, capped at 120), so rows end at different steps.
    engine = ChatTTSEngine(settings_for(checkpoint, max_new_tokens=120), sha256_map=checkpoint["sha256"])
    engine.load()
    yield engine
    engine.close()


def item(engine, text: str, **options) -> SynthesisItem:
    voice = options.pop("voice", None)
    speed = options.pop("speed", 1.0)
    return SynthesisItem(text, engine.resolve_voice(voice, text), speed, SynthesisOptions(**options))


def run(loop, schedule: dict[int, list[tuple[int, SynthesisItem]]], stream: bool = False):
    """Admit rows at the steps ``schedule`` names; step until every row ended.  Returns each
    row's tokens, audio (whole, or its chunks joined) and chunk count."""
    tokens, audio, chunks = {}, {}, {}
    step = 0
    while step in schedule or loop.rows or any(s > step for s in schedule):
        for row, it in schedule.get(step, []):
            loop.admit(row, it, stream=stream, eager=lambda: True)
        out = loop.step()
        assert not out.failed, out.failed
        for row, chunk in out.chunks.items():
            audio.setdefault(row, []).append(chunk)
            chunks[row] = chunks.get(row, 0) + 1
        for row, rest in out.finished.items():
            audio[row] = np.concatenate([*audio.get(row, []), rest]) if stream else rest
            tokens[row] = out.tokens[row].clone()
        step += 1
    return tokens, audio, chunks


def greedy_loop(engine):
    loop = engine.decode_loop()
    loop.greedy = True
    return loop


def greedy_alone(engine, items: list[SynthesisItem]) -> list[torch.Tensor]:
    """Each item's tokens as a row generated alone, greedily."""
    return [run(greedy_loop(engine), {0: [(0, it)]})[0][0] for it in items]


def chattts_generate(engine, it: SynthesisItem) -> torch.Tensor:
    """ChatTTS's own generation for one row (what the request-level path runs)."""
    chat = engine._loaded()
    with engine.seeded(it.options.seed):
        _, texts, params, budgets = engine._prepare([it], None)
        with torch.inference_mode():
            result = next(chat._infer_code(texts, False, chat.device, True, params))
    return result.ids[0][: budgets[0]]


@pytest.mark.parametrize(
    "options",
    [dict(seed=7), dict(seed=2024, temperature=0.6, top_p=0.9, top_k=5, voice="seed-3", speed=2.0)],
)
def test_a_row_alone_gets_exactly_chatttss_tokens_for_the_same_seed(engine, options):
    it = item(engine, TEXTS[1], **options)
    expected = chattts_generate(engine, it)
    tokens, audio, _ = run(engine.decode_loop(), {0: [(1, it)]})
    assert torch.equal(tokens[1], expected)
    (request_level,) = engine.synthesize([it])  # ChatTTS's generate, decoded by the engine
    np.testing.assert_array_equal(audio[1], request_level)


def test_min_new_tokens_holds_back_eos_per_row(engine, checkpoint):
    strict = ChatTTSEngine(
        settings_for(checkpoint, max_new_tokens=60, min_new_tokens=60), sha256_map=checkpoint["sha256"]
    )
    strict.load()
    try:
        tokens, _, _ = run(strict.decode_loop(), {0: [(0, item(strict, "好"))]})
        assert tokens[0].size(0) == 60  # the minimum (capped at its budget) is reached
    finally:
        strict.close()


def test_greedy_tokens_do_not_depend_on_when_a_row_joined(engine):
    items = [item(engine, t) for t in TEXTS]
    alone = greedy_alone(engine, items)
    together, _, _ = run(
        greedy_loop(engine), {0: [(0, items[0])], 3: [(1, items[1])], 11: [(2, items[2]), (3, items[3])]}
    )
    for row, expected in enumerate(alone):
        assert torch.equal(together[row], expected), row
    assert len({t.size(0) for t in alone}) > 1  # the rows really had different lengths


def test_rows_beyond_max_batch_size_get_slots_of_their_own_and_keep_their_tokens(engine):
    # The batcher never admits more than TTS_MAX_BATCH_SIZE (4 here) rows; a direct caller may:
    # the slot buffers grow, and a slot given back is reused without its old tokens leaking.
    items = [item(engine, t) for t in [*TEXTS, "你好。", "再见，朋友们。"]]
    alone = greedy_alone(engine, items)
    loop = greedy_loop(engine)
    later = min(t.size(0) for t in alone) + 1  # the shortest row has left: its slot is free
    assert later <= max(t.size(0) for t in alone)  # while others still run
    together, _, _ = run(loop, {0: [(row, it) for row, it in enumerate(items)], later: [(6, items[2])]})
    for row, expected in enumerate(alone):
        assert torch.equal(together[row], expected), row
    assert torch.equal(together[6], alone[2])  # in a slot another row had filled with its tokens
    assert loop._slots.tokens.size(0) > engine.settings.max_batch_size


def test_rows_with_different_voices_and_settings_share_steps(engine):
    seeded = [
        item(engine, TEXTS[0], seed=5, voice="seed-1"),
        item(engine, TEXTS[2], seed=6, top_k=3, speed=0.5),
    ]
    alone = [run(engine.decode_loop(), {0: [(0, it)]})[0][0] for it in seeded]
    # A seeded row draws from its own generator: its batch-mates' draws do not change it.
    together, _, _ = run(engine.decode_loop(), {0: [(0, seeded[0])], 2: [(1, seeded[1])]})
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])


def test_the_cache_is_compacted_to_the_longest_active_row(engine):
    loop = greedy_loop(engine)
    loop.admit(0, item(engine, TEXTS[3]), stream=False, eager=lambda: True)  # the longest prompt
    loop.step()
    loop.admit(1, item(engine, TEXTS[2]), stream=False, eager=lambda: True)
    loop.step()
    assert loop._kv.rows == 2
    long_row, short_row = loop._rows
    assert loop._kv.length == max(long_row.length, short_row.length) > short_row.length
    loop.drop(0)
    loop.step()
    assert loop._kv.rows == 1 and loop._kv.length == loop._rows[0].length  # no padding left
    loop.drop(1)
    assert loop.rows == 0 and loop._kv.rows == 0


def test_a_failing_row_leaves_alone_and_the_others_keep_their_tokens(engine, monkeypatch):
    items = [item(engine, t) for t in TEXTS[:3]]
    alone = greedy_alone(engine, items)
    loop = greedy_loop(engine)
    draw = loop._draw

    def poisoned(rows, logits):
        if any(r.item.text == TEXTS[1] for r in rows) and any(r.n == 5 for r in rows):
            raise RuntimeError("poisoned row")
        return draw(rows, logits)

    monkeypatch.setattr(loop, "_draw", poisoned)
    for row, it in enumerate(items):
        loop.admit(row, it, stream=False, eager=lambda: True)
    tokens, failed = {}, {}
    while loop.rows:
        out = loop.step()
        failed.update(out.failed)
        tokens.update({row: t.clone() for row, t in out.tokens.items()})
    assert set(failed) == {1} and "poisoned row" in str(failed[1])
    assert torch.equal(tokens[0], alone[0]) and torch.equal(tokens[2], alone[2])


def test_streamed_rows_send_chunks_that_add_up_to_their_whole_audio(engine):
    it = item(engine, TEXTS[1], seed=11)
    whole_tokens, whole, _ = run(engine.decode_loop(), {0: [(0, it)]})
    streamed_tokens, streamed, chunks = run(engine.decode_loop(), {0: [(0, it)]}, stream=True)
    assert torch.equal(streamed_tokens[0], whole_tokens[0])
    assert chunks[0] >= 2  # audio went out before the row ended
    assert streamed[0].size == whole[0].size
    # Chunks are decoded from the tokens so far (the last ones held back), so samples near a
    # chunk's end differ slightly from the whole decode: same length, same signal.
    assert np.corrcoef(streamed[0], whole[0])[0, 1] > 0.9


def test_a_text_with_nothing_to_speak_ends_at_once_with_no_audio(engine):
    loop = engine.decode_loop()
    loop.admit(0, item(engine, "……"), stream=False, eager=lambda: True)
    out = loop.step()
    assert out.finished[0].size == 0 and loop.rows == 0


def test_interrupt_ends_every_row_where_it_is(engine):
    loop = engine.decode_loop()
    loop.admit(0, item(engine, TEXTS[0]), stream=False, eager=lambda: True)
    loop.step()
    engine.interrupt()
    try:
        out = loop.step()
    finally:
        engine._loaded().context.set(False)
    assert set(out.finished) == {0} and loop.rows == 0
