"""The ChatTTS engine on a random-weights checkpoint of the real architecture (CPU, no downloads).

The checkpoint is built by tests/chattts_checkpoint.py and loaded through ChatTTS's real
loader (``Chat._load``), after the engine's sha256 check against the generated files' own
hashes (``Chat.load``'s second check of the same files is skipped).  Random weights stop at random or run to the cap, so every call here is
bounded by ``TTS_MAX_NEW_TOKENS``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tts_service.engines import SynthesisItem
from tts_service.engines.chattts import SAMPLES_PER_TOKEN, ChatTTSEngine, speed_prompt, token_budget
from tts_service.engines.chattts_model import ModelError
from tts_service.engines.chattts_voices import embedding_for_seed
from tts_service.errors import UnknownVoice
from tts_service.settings import Settings


def settings_for(checkpoint, **overrides) -> Settings:
    values = dict(
        engine="chattts",
        model_dir=str(checkpoint["asset"]),
        chattts_config=str(checkpoint["config"]),
        torch_threads=1,
        max_new_tokens=64,
        max_batch_size=4,
    )
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def engine(checkpoint):
    engine = ChatTTSEngine(settings_for(checkpoint), sha256_map=checkpoint["sha256"])
    engine.load()  # the real hash check runs, against the generated files' hashes
    yield engine
    engine.close()


def items_for(engine: ChatTTSEngine, texts, voice=None, speed=1.0) -> list[SynthesisItem]:
    return [SynthesisItem(t, engine.resolve_voice(voice, t), speed) for t in texts]


# -- loading ---------------------------------------------------------------------------------


def test_the_pinned_chattts_has_the_stages_the_engine_drives():
    from importlib.metadata import version

    import ChatTTS

    assert version("chattts") == "0.2.5"
    for stage in ("_refine_text", "_infer_code", "_decode_to_wavs"):
        assert callable(getattr(ChatTTS.Chat, stage)), stage


def test_loading_and_generating_use_nothing_deprecated(checkpoint):
    """ChatTTS 0.2.5 drives transformers' Llama and torch directly. A deprecation warning on the
    way means a later version of a dependency will break the engine (transformers 5.24 deprecates
    the past_key_values argument ChatTTS passes, for removal in 5.40), so it fails here and the
    bump becomes a decision (pyproject.toml's ranges, constraints.txt), not a surprise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = ChatTTSEngine(settings_for(checkpoint, max_new_tokens=30), sha256_map=checkpoint["sha256"])
        engine.load()
        try:
            engine.synthesize(items_for(engine, ["你好", "hello"]))
            for _ in engine.synthesize_stream(items_for(engine, ["今天天气很好"])):
                pass
        finally:
            engine.close()
    deprecated = [
        f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))
    ]
    assert not deprecated, "\n".join(deprecated)


def test_missing_model_dir(checkpoint, tmp_path):
    for model_dir, message in [
        ("", "TTS_MODEL_DIR is not set"),
        (str(tmp_path / "nope"), "no such directory"),
    ]:
        with pytest.raises(ModelError, match=message):
            ChatTTSEngine(settings_for(checkpoint, model_dir=model_dir)).load()


def test_missing_file_is_named(checkpoint, tmp_path):
    asset = tmp_path / "asset"
    shutil.copytree(checkpoint["asset"], asset)
    (asset / "Vocos.safetensors").unlink()
    (asset / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"missing Vocos\.safetensors, tokenizer/tokenizer\.json"):
        ChatTTSEngine(settings_for(checkpoint, model_dir=str(asset)), sha256_map=checkpoint["sha256"]).load()


def test_hash_mismatch_is_named_and_nothing_is_renamed_or_downloaded(checkpoint, tmp_path):
    asset = tmp_path / "asset"
    shutil.copytree(checkpoint["asset"], asset)
    before = sorted(p.relative_to(asset) for p in asset.rglob("*"))
    # Verified against ChatTTS's OFFICIAL map: the random weights do not match it.
    with pytest.raises(ModelError, match=r"Decoder\.safetensors has sha256 .* TTS_MODEL_VERIFY=false"):
        ChatTTSEngine(settings_for(checkpoint, model_dir=str(asset))).load()
    # source="local" would have renamed files to *.bak and tried to download; we never do.
    assert sorted(p.relative_to(asset) for p in asset.rglob("*")) == before


def test_custom_weights_load_with_verification_off_from_a_parent_dir(checkpoint):
    parent = Path(checkpoint["asset"]).parent  # a directory that CONTAINS asset/
    engine = ChatTTSEngine(settings_for(checkpoint, model_dir=str(parent), model_verify=False))
    engine.load()
    assert engine.weight_hashes.hashed == []  # unverified weights are not read twice
    try:
        (audio,) = engine.synthesize(items_for(engine, ["你好"]))
        assert audio.dtype == np.float32 and audio.size > 0
    finally:
        engine.close()


def test_cuda_requested_without_a_gpu_is_a_clear_error(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="TTS_DEVICE=cuda but no CUDA device"):
        ChatTTSEngine(settings_for(checkpoint, device="cuda"), sha256_map=checkpoint["sha256"]).load()


def test_bad_geometry_file(checkpoint, tmp_path):
    bad = tmp_path / "geometry.json"
    bad.write_text('{"decoder": {"no_such_field": 1}}')
    with pytest.raises(ModelError, match=r"unknown field\(s\) no_such_field in Config\.decoder"):
        ChatTTSEngine(
            settings_for(checkpoint, chattts_config=str(bad)), sha256_map=checkpoint["sha256"]
        ).load()


def test_fresh_config_does_not_leak_into_chatttss_shared_defaults(engine):
    from ChatTTS.config import Config

    assert Config().decoder.idim == 384 and Config().gpt.hidden_size == 768  # the official sizes, untouched
    assert engine._chat.config.decoder.idim == 32


# -- synthesis -------------------------------------------------------------------------------


def test_a_batch_of_n_texts_gives_n_arrays_each_trimmed_to_its_own_length(engine):
    texts = ["你好", "今天天气很好", "hello there", "短"]
    audios = engine.synthesize(items_for(engine, texts))
    assert len(audios) == len(texts)
    tokens = engine.last_batch.tokens
    for audio, n in zip(audios, tokens, strict=True):
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
        # Every sample kept (infer() would drop |x| <= 1e-5 ones): exactly the decoder's output
        # for n tokens, 512 per token minus Vocos' half-hop.
        assert audio.size == SAMPLES_PER_TOKEN * n - SAMPLES_PER_TOKEN // 2
    assert engine.sample_rate == 24_000
    stats = engine.last_batch  # what benchmarks read
    assert stats.size == 4 and stats.seconds > 0
    assert stats.audio_seconds == pytest.approx(sum(a.size for a in audios) / 24_000)


def test_a_short_row_batched_with_a_long_one_comes_back_short(engine):
    torch.manual_seed(7)  # this test's own sampling; the engine never seeds the global RNG
    for _ in range(20):  # random weights: find a batch in which one row stopped early
        audios = engine.synthesize(items_for(engine, ["短", "一个比较长的句子用来测试", "好", "hello"]))
        tokens = engine.last_batch.tokens
        if min(tokens) < max(tokens):
            break
    else:
        pytest.fail(f"no row stopped before the cap in 20 batches: {tokens}")
    short, long = tokens.index(min(tokens)), tokens.index(max(tokens))
    assert audios[short].size < audios[long].size
    assert audios[short].size == SAMPLES_PER_TOKEN * tokens[short] - SAMPLES_PER_TOKEN // 2


def test_generation_is_bounded_by_the_input_length():
    assert token_budget("短", 1.0, 2048) == 48 + 12
    assert token_budget("a" * 1000, 1.0, 2048) == 2048  # capped by TTS_MAX_NEW_TOKENS
    assert token_budget("abcd", 0.5, 2048) > token_budget("abcd", 1.0, 2048)  # slower speech, more tokens


def test_every_row_respects_the_bound(engine):
    engine.synthesize(items_for(engine, ["你好", "hello"]))
    assert max(engine.last_batch.tokens) <= engine.last_batch.max_new_token <= 64


def test_min_new_tokens_makes_every_row_run_to_it_capped_at_the_bound(checkpoint):
    """TTS_MIN_NEW_TOKENS (benchmarks: the same work per request): no row ends before it,
    and a minimum above a request's own bound means the bound, not an error."""
    engine = ChatTTSEngine(
        settings_for(checkpoint, max_new_tokens=40, min_new_tokens=30), sha256_map=checkpoint["sha256"]
    )
    engine.load()
    try:
        torch.manual_seed(3)
        for _ in range(3):  # without the minimum, random weights end rows at random lengths
            engine.synthesize(items_for(engine, ["短", "今天天气很好", "hi", "好"]))
            assert all(30 <= n <= 40 for n in engine.last_batch.tokens), engine.last_batch.tokens
        capped = engine._settings.replace(min_new_tokens=4000, max_new_tokens=40)
        engine._settings = capped
        engine.synthesize(items_for(engine, ["短"]))
        assert engine.last_batch.tokens == [40]
    finally:
        engine.close()


def test_normalization_is_registered_so_digits_survive(engine):
    from ChatTTS import Chat

    (text,) = engine.prepare_texts(items_for(engine, ["2024年5月1日"]))
    assert text == "二零二四年五月一日"
    (english,) = engine.prepare_texts(items_for(engine, ["I have 3 cats"]))
    assert "three" in english
    # What ChatTTS does without a registered normalizer: the digits silently vanish.
    assert Chat().normalizer("2024年5月1日", True, True, "zh") == "年月日"


def test_batch_key_separates_voices_and_speeds(engine):
    a, b = items_for(engine, ["你好", "再见"], voice="seed-2222")
    (c,) = items_for(engine, ["你好"], voice="seed-1111")
    (d,) = items_for(engine, ["你好"], voice="seed-2222", speed=2.0)
    assert engine.batch_key(a) == engine.batch_key(b)
    assert len({engine.batch_key(x) for x in (a, c, d)}) == 3
    assert [speed_prompt(s) for s in (0.25, 0.5, 1.0, 2.0, 4.0)] == [
        "[speed_1]",
        "[speed_3]",
        "[speed_5]",
        "[speed_7]",
        "[speed_9]",
    ]


def test_voices_aliases_and_errors(engine):
    names = [v.id for v in engine.voices()]
    assert "seed-2222" in names
    assert engine.resolve_voice("alloy", "hi").id in names  # OpenAI names map onto the set
    assert engine.resolve_voice(None, "你好").language == "zh"
    with pytest.raises(UnknownVoice, match="unknown voice 'nobody'"):
        engine.resolve_voice("nobody", "hi")


def test_configured_voices_from_seed_and_embedding(checkpoint, engine):
    embedding = engine._embeddings["seed-1111"]
    voices = f'{{"narrator": {{"seed": 42}}, "copied": {{"embedding": "{embedding}"}}}}'
    other = ChatTTSEngine(
        settings_for(checkpoint, voices=voices, default_voice="narrator"), sha256_map=checkpoint["sha256"]
    )
    assert other.resolve_voice(None, "hi").id == "narrator"
    other.load()
    try:
        assert other._embeddings["copied"] == embedding
        (audio,) = other.synthesize(items_for(other, ["你好"], voice="copied"))
        assert audio.size > 0
    finally:
        other.close()


def test_a_seed_is_the_same_voice_on_every_load_without_touching_the_global_rng(checkpoint, engine):
    speaker = engine._chat.speaker
    state = torch.random.get_rng_state()
    first = embedding_for_seed(2222, speaker.std, speaker.mean)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    second = ChatTTSEngine(settings_for(checkpoint), sha256_map=checkpoint["sha256"])
    second.load()
    try:
        assert second._embeddings["seed-2222"] == engine._embeddings["seed-2222"] == first
        assert engine._embeddings["seed-2222"] != engine._embeddings["seed-1111"]
    finally:
        second.close()
    # The same voice the community's "seed 2222" means: global seed, then sample_random_speaker().
    torch.manual_seed(2222)
    assert engine._chat.sample_random_speaker() == first


def test_seeds_drawn_concurrently_do_not_race(engine):
    speaker = engine._chat.speaker
    expected = {seed: embedding_for_seed(seed, speaker.std, speaker.mean) for seed in range(8)}
    results: dict[int, list[str]] = {seed: [] for seed in expected}

    def draw(seed: int) -> None:
        for _ in range(20):
            results[seed].append(embedding_for_seed(seed, speaker.std, speaker.mean))

    threads = [threading.Thread(target=draw, args=(seed,)) for seed in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(set(results[seed]) == {expected[seed]} for seed in expected)


def test_refine_text_pass_and_half_precision_run_when_enabled(checkpoint):
    engine = ChatTTSEngine(
        settings_for(checkpoint, refine_text=True, half_precision=True), sha256_map=checkpoint["sha256"]
    )
    engine.load()
    try:
        assert engine._chat.gpt.gpt.dtype == torch.float16
        audios = engine.synthesize(items_for(engine, ["你好", "hello"]))
        assert len(audios) == 2 and all(a.size > 0 and np.isfinite(a).all() for a in audios)
    finally:
        engine.close()


MEMORY_PROBE = """
import json, sys
from tts_service.engines import SynthesisItem
from tts_service.engines.chattts import ChatTTSEngine
from tts_service.settings import Settings

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

settings = Settings(**json.loads(sys.argv[1]))
engine = ChatTTSEngine(settings)
engine.load()
items = [SynthesisItem(t, engine.resolve_voice(None, t)) for t in ["你好", "hello", "短句", "ok"]]
samples = []
for _ in range(int(sys.argv[2])):
    engine.synthesize(items)
    samples.append(rss())
engine.close()
print(json.dumps(samples))
"""


def test_memory_stays_flat_over_hundreds_of_calls(checkpoint):
    """In a process of its own, so nothing else the test session does moves its RSS."""
    import json
    import subprocess
    import sys

    settings = {
        "engine": "chattts", "model_dir": str(checkpoint["asset"]), "chattts_config": str(checkpoint["config"]),
        "model_verify": False, "torch_threads": 1, "max_new_tokens": 16, "max_batch_size": 4,
    }  # fmt: skip
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(settings), "240"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    samples = json.loads(probe.stdout.strip().splitlines()[-1])
    early = float(np.median(samples[40:80]))
    late = float(np.median(samples[-40:]))
    print(f"RSS early {early / 2**20:.1f} MB, late {late / 2**20:.1f} MB")
    # No growth trend after the allocator settled: within 2 % (plus a few pages of noise).
    assert late - early < 0.02 * early + 4 * 1024 * 1024, (early / 2**20, late / 2**20)


def test_streaming_yields_ordered_chunks_that_add_up_to_each_rows_audio(checkpoint, caplog):
    # Even with everything at DEBUG (TTS_LOG_LEVEL=DEBUG): one of ChatTTS's per-token debug
    # messages raises for a streamed batch, so the engine keeps ChatTTS's logger at INFO.
    caplog.set_level(logging.DEBUG)
    engine = ChatTTSEngine(
        # min_new_tokens: every row runs past two stream steps of 24 tokens
        settings_for(checkpoint, max_new_tokens=64, min_new_tokens=60),
        sha256_map=checkpoint["sha256"],
    )
    engine.load()
    try:
        steps = list(engine.synthesize_stream(items_for(engine, ["你好", "今天天气很好", "hello"])))
        tokens = engine.last_batch.tokens
    finally:
        engine.close()
    assert len(steps) >= 3 and all(len(step) == 3 for step in steps)
    for i, n in enumerate(tokens):
        assert 60 <= n <= 64
        chunks = [step[i] for step in steps]
        # The first chunk was made from the first 24 tokens, before the rest existed.
        assert 0 < chunks[0].size <= SAMPLES_PER_TOKEN * 24
        assert sum(c.size for c in chunks) == SAMPLES_PER_TOKEN * n - SAMPLES_PER_TOKEN // 2
        assert all(c.dtype == np.float32 and np.isfinite(c).all() for c in chunks)


def test_no_cuda_memory_is_reported_on_a_cpu(engine):
    assert engine.device.type == "cpu" and engine.device_memory() is None


def test_interrupt_stops_a_running_generation_early(checkpoint):
    """What shutdown does after the drain timeout: a long generation ends at the next token."""
    engine = ChatTTSEngine(
        # min_new_tokens: would run ~2000 tokens uninterrupted
        settings_for(checkpoint, max_new_tokens=2048, min_new_tokens=2000),
        sha256_map=checkpoint["sha256"],
    )
    engine.load()
    try:
        stream = engine.synthesize_stream(items_for(engine, ["一个很长的句子"]))
        next(stream)  # generation is under way (24 tokens in)
        engine.interrupt()  # from "another thread": only sets ChatTTS's flag
        rest = list(stream)
        assert engine.last_batch.tokens[0] < 100 and rest
        # The flag does not leak into the next request.
        engine.synthesize(items_for(engine, ["你好"]))
        assert engine.last_batch.tokens[0] == engine.last_batch.max_new_token  # ran to its bound
    finally:
        engine.close()


def test_chattts_logger_follows_a_quieter_log_level_but_never_goes_below_info(checkpoint):
    # TTS_LOG_LEVEL sets the root logger. At ERROR, ChatTTS's own warnings (one per request
    # that hits the token cap) stay quiet; at DEBUG its logger stops at INFO (see the streaming test).
    chattts_log, root = logging.getLogger("ChatTTS"), logging.getLogger()
    saved = chattts_log.level, root.level
    try:
        for root_level, expected in ((logging.ERROR, logging.ERROR), (logging.DEBUG, logging.INFO)):
            chattts_log.setLevel(logging.NOTSET)
            root.setLevel(root_level)
            engine = ChatTTSEngine(settings_for(checkpoint), sha256_map=checkpoint["sha256"])
            engine.load()
            engine.close()
            assert chattts_log.getEffectiveLevel() == expected, logging.getLevelName(root_level)
    finally:
        chattts_log.setLevel(saved[0])
        root.setLevel(saved[1])


def test_built_without_random_init_every_parameter_is_the_checkpoints(engine, checkpoint):
    # Modules are built with torch.nn.init's fills turned off (chattts_startup.lean_load): every
    # parameter and buffer the files hold must then have been loaded over the unfilled memory.
    from safetensors.torch import load_file

    chat = engine._chat
    asset = Path(checkpoint["asset"])
    modules = {
        "Vocos": chat.vocos,
        "DVAE": chat.dvae,
        "Decoder": chat.decoder,
        "Embed": chat.embed,
    }
    for name, module in modules.items():
        state = module.state_dict()
        for key, saved in load_file(str(asset / f"{name}.safetensors")).items():
            assert torch.equal(state[key].cpu(), saved), f"{name}: {key}"
    llama = chat.gpt.gpt.state_dict()
    gpt_file = load_file(str(asset / "gpt" / "model.safetensors"))
    compared = [key for key in gpt_file if key in llama]  # ChatTTS deletes the Llama's token embeddings
    assert set(gpt_file) - set(compared) <= {"embed_tokens.weight"} and compared
    for key in compared:
        assert torch.equal(llama[key].cpu().to(gpt_file[key].dtype), gpt_file[key]), f"gpt: {key}"
    # ... and the fills are torch's own again afterwards.
    assert torch.nn.init.kaiming_uniform_.__module__ == "torch.nn.init"
    assert torch.nn.init.normal_.__module__ == "torch.nn.init"
